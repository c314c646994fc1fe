"""The images a detection run reads: a folder, one image, a text file of paths, or a glob, named and numbered."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from chestdet.errors import DetectError
from chestdet.imaging import IMAGE_SUFFIXES

log = logging.getLogger("chestdet.detect")


@dataclass(frozen=True)
class InputImage:
    name: str  # posix path relative to the input folder (absolute only for images on different drives)
    path: Path
    image_id: int  # 1-based position in the listing; the COCO image id


def list_inputs(spec: str | Path, exclude: Path | None = None) -> list[InputImage]:
    """A folder (recursive, image suffixes only), one image, a text file of paths, or a glob.

    Text lists take one path per line (relative to the list's folder; blank lines and `#` comments
    skipped). Images are named by their path relative to the list's folder, or, when some lie
    outside it, to the deepest folder holding them all. A path listed twice is processed once.
    """
    spec_path = Path(spec)
    if spec_path.is_dir():
        root = spec_path
        paths = sorted(
            (p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=lambda p: p.relative_to(root).as_posix(),
        )
    elif spec_path.is_file() and spec_path.suffix.lower() in IMAGE_SUFFIXES:
        root, paths = spec_path.parent, [spec_path]
    elif spec_path.is_file():
        paths = _read_list(spec_path)
        root = _common_root(spec_path.parent, paths)
    elif glob.has_magic(str(spec)):
        root = _glob_root(str(spec))
        paths = sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file())
    else:
        raise DetectError(f"--input {spec}: no such folder, file or matching glob")
    if exclude is not None:
        excluded = Path(os.path.abspath(exclude))
        paths = [p for p in paths if excluded not in Path(os.path.abspath(p)).parents]
    return _number(root, paths)


def _read_list(list_path: Path) -> list[Path]:
    lines = list_path.read_text(encoding="utf-8-sig").splitlines()
    entries = (line.strip() for line in lines)
    return [
        p if p.is_absolute() else list_path.parent / p
        for p in (Path(e) for e in entries if e and not e.startswith("#"))
    ]


def _common_root(list_folder: Path, paths: Sequence[Path]) -> Path:
    """The list's folder when every image lies under it, else the deepest folder holding them all."""
    folder = os.path.abspath(list_folder)
    parents = {os.path.dirname(os.path.abspath(p)) for p in paths}
    if not parents or all(os.path.commonpath([folder, parent]) == folder for parent in parents):
        return list_folder
    return Path(os.path.commonpath(parents))


def _glob_root(pattern: str) -> Path:
    parts = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _number(root: Path, paths: Iterable[Path]) -> list[InputImage]:
    """Name and number the images; symlinks keep their own names (two links are two images)."""
    root = Path(os.path.abspath(root))
    seen: set[Path] = set()
    images: list[InputImage] = []
    duplicates = 0
    for path in paths:
        absolute = Path(os.path.abspath(path))
        if absolute in seen:
            duplicates += 1
            continue
        seen.add(absolute)
        try:
            name = absolute.relative_to(root).as_posix()
        except ValueError:
            name = absolute.as_posix()
        images.append(InputImage(name, path, len(images) + 1))
    if duplicates:
        log.warning("skipped %d paths listed more than once", duplicates)
    return images
