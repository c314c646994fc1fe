"""Your own classes, end to end: a label map of the NIH eight plus Fibrosis (id 9) goes through records, a
tiny model trained from scratch, its export, detect and evaluate, and the ninth class shows up in each.

The model is not meant to be good (30 steps at 128x128): an untrained model scores every class about
0.01, so detect keeps every box (--keep-score 0, the SavedModel backend) and Fibrosis appears among them.
Takes about two minutes on a 2-core CPU.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from chestdet.commands import detect, evaluate, generate_tfrecords
from chestdet.commands.cli import ExitStatus, run_main
from chestdet.core.labels import CLASS_NAMES, LabelMap
from chestdet.export.options import ExportOptions, export
from chestdet.training import pipeline_config
from chestdet.training.train import TrainOptions, train
from tests.conftest import LABEL_MAP, SAMPLE_CSV, SAMPLE_IMAGES
from tests.support.records import decode_records

pytestmark = pytest.mark.slow

IMAGES = 8
STEPS = 30
FIBROSIS = "Fibrosis"


def nine_class_map(path: Path) -> Path:
    path.write_text(LABEL_MAP.read_text(encoding="utf-8") + "item {\n  id: 9\n  name: 'Fibrosis'\n}\n",
                    encoding="utf-8")
    return path


def csv_with_fibrosis(path: Path, images: list[str]) -> Path:
    """The sample's NIH rows of `images`, and a Fibrosis box (both lower lungs) on six of them."""
    lines = SAMPLE_CSV.read_text(encoding="utf-8").splitlines()
    rows = [line for line in lines[1:] if line.split(",", 1)[0] in images]
    rows += [f"{image},{FIBROSIS},{180 + 10 * k},{520 + 5 * k},{640 - 8 * k},{300}" for k, image in
             enumerate(images[:6])]
    path.write_text("\n".join([lines[0], *rows]) + "\n", encoding="utf-8")
    return path


def test_a_nine_class_map_from_records_to_metrics(tmp_path: Path):
    images = sorted(path.name for path in SAMPLE_IMAGES.glob("*.png"))[:IMAGES]
    nine = nine_class_map(tmp_path / "nine classes.pbtxt")
    records = tmp_path / "records"
    assert run_main(generate_tfrecords.main, [
        "--nih-csv", str(csv_with_fibrosis(tmp_path / "boxes.csv", images)), "--image-dir", str(SAMPLE_IMAGES),
        "--label-map", str(nine), "--output-dir", str(records), "--split", "1,0,0", "--shards", "1",
        "--max-size", "256", "--workers", "1"]) == ExitStatus.SUCCESS
    decoded = decode_records(sorted(records.glob("train-*")))
    assert sorted(decoded) == images
    assert sum(example["classes"].count(9) for example in decoded.values()) == 6

    # No --label-map: training takes the records folder's own map, so the model predicts 9 classes.
    run = train(TrainOptions(records=records, model_dir=tmp_path / "run", from_scratch=True, steps=STEPS,
                             checkpoint_every=STEPS, batch_size=2, overrides={"image_size": 128, "augment": False},
                             progress=False)).model_dir
    assert pipeline_config.load_configs(run / "pipeline.config")["model"].ssd.num_classes == 9

    model = export(ExportOptions(checkpoint=run, output_dir=tmp_path / "export", tflite=False))
    assert LabelMap.load(model / "label_map.pbtxt").names == (*CLASS_NAMES, FIBROSIS)

    inputs = tmp_path / "input"
    inputs.mkdir()
    for name in images:
        shutil.copyfile(SAMPLE_IMAGES / name, inputs / name)
    found = tmp_path / "detections"
    assert run_main(detect.main, ["--model", str(model), "--input", str(inputs), "--output-dir", str(found),
                                  "--backend", "savedmodel", "--keep-score", "0", "--min-score", "0",
                                  "--no-progress"]) == ExitStatus.SUCCESS
    table = pd.read_csv(found / "detections.csv")
    fibrosis = table[table["class_name"] == FIBROSIS]
    assert len(fibrosis) and set(fibrosis["class_id"]) == {9}

    report = tmp_path / "eval"
    assert run_main(evaluate.main, ["--detections", str(found), "--ground-truth", str(records), "--split", "train",
                                    "--output-dir", str(report), "--gallery", "0"]) == ExitStatus.SUCCESS
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["images"] == IMAGES and metrics["rejects"] == 0
    assert list(metrics["coco"]["per_class"]) == [*CLASS_NAMES, FIBROSIS]
    assert metrics["boxes"][FIBROSIS] == 6 and metrics["coco"]["per_class"][FIBROSIS]["ap50"] is not None
    assert metrics["froc"]["per_class"][FIBROSIS]["boxes"] == 6
    text = (report / "report.md").read_text()
    paper_header = next(line for line in text.splitlines() if line.startswith("| T(IoBB) |"))
    assert paper_header == "| T(IoBB) |  | " + " | ".join(CLASS_NAMES) + " |"
    assert f"| {FIBROSIS} | 6 |" in text
