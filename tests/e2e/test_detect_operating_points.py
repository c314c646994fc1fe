"""detect.py with an operating point: each class drawn from its own threshold, as the file gives it."""

from __future__ import annotations

import json
import shutil

import pytest

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.detect import main as detect
from chestdet.core.contracts import LABEL_STUDIO_TASKS_JSON, RUN_JSON
from chestdet.detection.thresholds import OperatingPoint, OperatingPoints, write_operating_points
from tests.conftest import SAMPLE_IMAGES

pytestmark = pytest.mark.slow


def test_the_operating_point_sets_each_classes_threshold(tiny_export, random_class, tmp_path):
    """The random model's boxes are all of one class at 0.00995: 1fp (0.5) hides them, 2fp (0.005) shows them."""
    class_id, class_name = random_class
    images = tmp_path / "films"
    images.mkdir()
    for path in sorted(SAMPLE_IMAGES.glob("*.png"))[:2]:
        shutil.copy(path, images / path.name)
    points = write_operating_points(tmp_path / "operating_points.json", OperatingPoints(
        {class_name: {"1fp": OperatingPoint(0.5), "2fp": OperatingPoint(0.005)}}, split="val"))
    shown = {}
    for point in ("1fp", "2fp"):
        out = tmp_path / point
        argv = ["--model", str(tiny_export), "--input", str(images), "--output-dir", str(out), "--label-studio",
                "--min-score", "0.9", "--keep-score", "0", "--max-boxes", "4", "--operating-points", str(points),
                "--operating-point", point, "--no-progress"]
        assert run_main(detect, argv) == ExitStatus.SUCCESS
        tasks = json.loads((out / LABEL_STUDIO_TASKS_JSON).read_text())
        shown[point] = [len(task["predictions"][0]["result"]) for task in tasks]
        assert json.loads((out / RUN_JSON).read_text())["min_score"] == {
            "default": 0.9, "per_class": {str(class_id): 0.5 if point == "1fp" else 0.005}}
    assert shown == {"1fp": [0, 0], "2fp": [4, 4]}
