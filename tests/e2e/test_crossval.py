"""Cross-validation end to end on 2 folds of 12 sample images: generate_tfrecords --folds, then
scripts/crossval.sh's command (train with val evaluation, export the best checkpoint, detect on the
test fold, for each fold), a re-run that skips the finished folds, and evaluate.py --cv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from chestdet.commands import crossval, evaluate, generate_tfrecords
from chestdet.commands.cli import ExitStatus, run_main
from tests.conftest import SAMPLE_CSV, SAMPLE_IMAGES
from tests.support import training_data

pytestmark = pytest.mark.slow

IMAGES = 12


def test_two_folds_train_export_detect_resume_and_evaluate(tmp_path: Path, caplog):
    from chestdet.training import pipeline_config
    from chestdet.training import train as training

    images = sorted({box.image for box in training_data.sample_boxes()})[:IMAGES]
    lines = SAMPLE_CSV.read_text(encoding="utf-8").splitlines(keepends=True)
    subset = tmp_path / "boxes.csv"
    subset.write_text(lines[0] + "".join(line for line in lines[1:] if line.split(",", 1)[0] in images))
    folds = tmp_path / "fold records"
    assert generate_tfrecords.main(["--nih-csv", str(subset), "--image-dir", str(SAMPLE_IMAGES), "--output-dir",
                                    str(folds), "--folds", "2", "--split", "0.7,0.3,0", "--max-size", "256"]) == 0

    configs = pipeline_config.apply_overrides(pipeline_config.load_configs(training.DEFAULT_CONFIG), image_size=128)
    pipeline_config.save_config(configs, tmp_path / "start")
    start = training_data.make_start_checkpoint(tmp_path / "start" / "pipeline.config", tmp_path / "start")

    runs = tmp_path / "cv runs"
    argv = ["--folds", str(folds), "--runs-dir", str(runs), "--fine-tune-checkpoint", str(start), "--steps", "10",
            "--checkpoint-every", "10", "--batch-size", "2", "--set", "image_size=128", "--eval-interval", "1",
            "--allow-unverified",
            "--detect-option=--no-progress"]
    caplog.set_level("INFO", logger="chestdet")
    assert run_main(crossval.main, argv) == ExitStatus.SUCCESS
    for fold in (1, 2):
        folder = runs / f"fold-{fold}"
        assert json.loads((folder / "run" / "best.json").read_text())["step"] in (0, 10)
        assert (folder / "export" / "saved_model" / "saved_model.pb").is_file()
        with (folds / f"fold-{fold}" / "split.csv").open(newline="") as handle:
            tests = {row["image"] for row in csv.DictReader(handle) if row["split"] == "test"}
        with (folder / "detections" / "images.csv").open(newline="") as handle:
            assert {Path(row["image"]).name for row in csv.DictReader(handle)} == tests
    assert "fold 2/2: training in" in caplog.text

    caplog.clear()
    assert run_main(crossval.main, argv) == ExitStatus.SUCCESS
    assert "fold 1/2: finished earlier, skipped" in caplog.text and "fold 2/2: finished earlier, skipped" in caplog.text

    out = tmp_path / "cv eval"
    assert run_main(evaluate.main, ["--cv", str(runs), "--output-dir", str(out), "--no-plots"]) == ExitStatus.SUCCESS
    block = json.loads((out / "metrics.json").read_text())["cross_validation"]
    assert block["folds"] == [1, 2]
    assert sum(fold["images"] for fold in block["per_fold"]) == block["pooled"]["images"] == IMAGES
    assert "mean ± sd" in (out / "report.md").read_text()
