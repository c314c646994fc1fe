"""A skipped Label Studio task is counted once in the summary: as cancelled when its annotation was
cancelled (Label Studio's Skip), as unannotated only when it has no annotation at all."""

from __future__ import annotations

import json
from pathlib import Path

from chestdet.data import labelstudio
from chestdet.data.image_index import ImageIndex
from tests.conftest import SAMPLE_IMAGES

IMAGE = "/data/local-files/?d=nih/images/00000032_037.png"


def read(tmp_path: Path, annotations: list[dict]) -> dict:
    export = tmp_path / "export.json"
    export.write_text(json.dumps([{"id": 1, "data": {"image": IMAGE}, "annotations": annotations}]))
    return dict(labelstudio.read_export(export, ImageIndex([SAMPLE_IMAGES])).notes)


def test_a_skipped_task_is_counted_once(tmp_path: Path):
    assert read(tmp_path, [{"id": 7, "was_cancelled": True, "result": []}]) == {labelstudio.NOTE_CANCELLED: 1}
    assert read(tmp_path, []) == {labelstudio.NOTE_UNANNOTATED: 1}
