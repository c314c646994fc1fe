"""What an export is, as every stage that receives a model reads it: its label map (the classes its ids
name) and its version (the export's name and checkpoint step)."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from chestdet.core.contracts import EXPORT_RECORD, LABEL_MAP_FILE
from chestdet.core.labels import LabelMap, LabelMapError


def model_labels(export_dir: str | Path, given: str | Path | None = None) -> LabelMap:
    """The export's own label map; a `given` map must be the same (ids and names), or it is refused with
    one line naming both: a reordered map would put the wrong name on every box."""
    own_path = Path(export_dir) / LABEL_MAP_FILE
    if not own_path.is_file():
        if given is None:
            raise LabelMapError(f"{own_path}: the export has no label map (pass --label-map)")
        return LabelMap.load(given)
    own = LabelMap.load(own_path)
    if given is not None:
        LabelMap.load(given).check_same_as(own)
    return own


def model_version(export_dir: Path) -> str:
    """The export folder's name and its checkpoint's training step, from export.json: 'nih step 12000'.

    A checkpoint saved outside training has no step: then its name ('nih ckpt-1'); without
    export.json, the folder's name alone.
    """
    name = export_dir.resolve().name
    record = read_export_record(export_dir)
    if record.get("step") is not None:
        return f"{name} step {record['step']}"
    return f"{name} {PurePosixPath(str(record['checkpoint'])).name}" if record.get("checkpoint") else name


def read_export_record(export_dir: str | Path) -> dict:
    """The export's export.json; {} when it has none or it is unreadable."""
    try:
        record = json.loads((Path(export_dir) / EXPORT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
