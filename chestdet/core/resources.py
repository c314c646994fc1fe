"""Files the package ships (the label map, the files derived from it, the pipeline configs) and the
default workspace folder, found the same way from a checkout and from an installed wheel."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

WORKSPACE_ENV = "CHESTDET_WORKSPACE"


def resource(*parts: str) -> Path:
    """A shipped file: chestdet/resources/<parts> (the package is installed as files, never zipped)."""
    return Path(str(resources.files("chestdet").joinpath("resources", *parts)))


DEFAULT_LABEL_MAP = resource("label_map.pbtxt")
PIPELINES_DIR = resource("pipelines")
DEFAULT_PIPELINE = PIPELINES_DIR / "ssd_mobilenet_v2_fpnlite_320x320.config"


def workspace() -> Path:
    """Where runs, exports and downloads go by default: ./workspace, or $CHESTDET_WORKSPACE."""
    return Path(os.path.abspath(os.environ.get(WORKSPACE_ENV) or "workspace"))


def shipped_or_relative(value: str | Path, base: Path | None = None) -> Path:
    """A path a config names: absolute as it is; otherwise relative to the working directory (or `base`),
    and a bare name such as label_map.pbtxt that is found in neither is the shipped file of that name."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    candidates = [Path.cwd() / path] + ([base / path] if base is not None else []) + [resource(*path.parts)]
    return next((candidate for candidate in candidates if candidate.exists()), Path.cwd() / path)
