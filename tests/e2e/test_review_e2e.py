"""The review loop on a real (tiny, randomly initialised) export: detect.py --label-studio, an export
that accepts every pre-annotation, generate_tfrecords --label-studio: the records hold the drawn boxes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from chestdet.commands.cli import ExitStatus
from chestdet.commands.detect import main as detect
from chestdet.commands.generate_tfrecords import main as generate_tfrecords
from chestdet.core.contracts import DETECTIONS_COCO_JSON, DETECTIONS_CSV, EXPORT_RECORD, LABEL_STUDIO_TASKS_JSON
from tests.conftest import SAMPLE_IMAGES
from tests.data.test_labelstudio import assert_same_boxes, corners, exported_task, read_rows, record_boxes

pytestmark = pytest.mark.slow


def test_detect_to_label_studio_to_records_on_a_real_export(tiny_export: Path, tmp_path: Path):
    from pycocotools.coco import COCO

    inputs = tmp_path / "to review"
    inputs.mkdir()
    for source in sorted(SAMPLE_IMAGES.glob("*.png"))[:2]:
        shutil.copy(source, inputs / source.name)
    out = tmp_path / "detections"
    assert detect(["--model", str(tiny_export), "--input", str(inputs), "--output-dir", str(out), "--backend",
                   "tflite", "--min-score", "0", "--keep-score", "0", "--max-boxes", "3", "--label-studio",
                   "--no-progress"]) == ExitStatus.SUCCESS

    tasks = json.loads((out / LABEL_STUDIO_TASKS_JSON).read_text())
    record = json.loads((tiny_export / EXPORT_RECORD).read_text())
    checkpoint = f"step {record['step']}" if record["step"] is not None else Path(record["checkpoint"]).name
    assert [t["predictions"][0]["model_version"] for t in tasks] == [f"{tiny_export.name} {checkpoint}"] * 2
    assert [len(t["predictions"][0]["result"]) for t in tasks] == [3, 3]
    assert len(COCO(str(out / DETECTIONS_COCO_JSON)).getAnnIds()) == 6

    accepted = [exported_task(n, t["data"], [{k: v for k, v in r.items() if k != "score"}
                                             for r in t["predictions"][0]["result"]])
                for n, t in enumerate(tasks, start=1)]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(accepted))
    records = tmp_path / "records"
    assert generate_tfrecords(["--label-studio", str(export), "--image-dir", str(inputs), "--output-dir",
                               str(records), "--split", "1,0,0"]) == ExitStatus.SUCCESS
    rows = read_rows(out / DETECTIONS_CSV)
    decoded = record_boxes(records)
    assert sorted(decoded) == sorted(r["image"] for r in read_rows(out / "images.csv"))
    for image, boxes in decoded.items():
        drawn = [(row["class_name"], corners(row)) for row in rows if row["image"] == image][:3]  # score order
        assert_same_boxes(boxes, sorted(drawn))
