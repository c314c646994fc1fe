"""`make demo` end to end on the bundled sample (fewer training steps than the real demo)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import REPO, SAMPLE_CSV

pytestmark = pytest.mark.slow


def test_demo_runs_every_stage_on_the_bundled_sample(tmp_path):
    out = tmp_path / "demo out"
    result = subprocess.run(
        [sys.executable, "-m", "chestdet.commands.demo", "--output-dir", str(out), "--steps", "100"],
        cwd=REPO, capture_output=True, text=True, timeout=1500,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr
    for stage in ("[1/5] records done", "[2/5] training done", "[3/5] export done",
                  "[4/5] detection done", "[5/5] evaluation done"):
        assert log.count(stage) == 1, stage
    assert f"drawn images: {out / 'detections' / 'drawn'}" in log
    assert f"report:       {out / 'evaluation' / 'report.md'}" in log

    split = pd.read_csv(out / "records" / "split.csv", dtype=str)
    test_images = set(split.loc[split["split"] == "test", "image"])
    assert test_images, "the sample's split has a test part"
    drawn = {path.stem for path in (out / "detections" / "drawn").rglob("*.jpg")}
    assert drawn == {name.rsplit(".", 1)[0] for name in test_images}
    processed = pd.read_csv(out / "detections" / "images.csv", dtype=str)
    assert set(processed["image"].map(lambda name: name.rsplit("/", 1)[-1])) == test_images

    assert (out / "export" / "saved_model" / "saved_model.pb").is_file()
    assert (out / "export" / "model.tflite").is_file()
    # The evaluation covers the test split's images and every NIH box on them.
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert metrics["images"] == len(test_images)
    truth = pd.read_csv(SAMPLE_CSV, dtype=str)
    assert sum(metrics["boxes"].values()) == truth.iloc[:, 0].isin(test_images).sum() > 0
    assert 0.0 <= metrics["coco"]["overall"]["ap50"] <= 1.0
    report = (out / "evaluation" / "report.md").read_text()
    assert report.startswith("# Detection evaluation")
    # The trivial baseline of the split's train rows stands beside the model, in the file and the report.
    train_images = set(split.loc[split["split"] == "train", "image"])
    assert metrics["baseline"]["training_images"] == len(train_images) > 0
    assert "## The trivial baseline" in report and "| AP@0.5 baseline |" in report
