"""export.sh --int8 --no-saved-model from the trained session model, then detect.py with it.

Reuses the session's `overfit_run` (its pipeline.config names the training records to calibrate on) and its
float export, `trained_export`; the INT8 export itself takes about half a minute.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.detect import main as detect_main
from chestdet.commands.export import main as export_main
from chestdet.core.detections import Detection
from chestdet.export.agreement import backend_agreement
from tests.conftest import SAMPLE_IMAGES
from tests.support.model_fixtures import overfit_images

pytestmark = pytest.mark.slow


def detections(folder: Path) -> dict[str, list[Detection]]:
    grouped: dict[str, list[Detection]] = {}
    with open(folder / "detections.csv", newline="", encoding="utf-8") as handle:
        for r in csv.DictReader(handle):
            grouped.setdefault(r["image"], []).append(Detection(
                int(r["class_id"]), float(r["score"]), *(float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax"))))
    return grouped


def test_int8_export_detects_like_the_float_model(overfit_run: Path, trained_export: Path, tmp_path: Path):
    int8 = tmp_path / "int8 export"
    assert run_main(export_main, ["--checkpoint", str(overfit_run), "--output-dir", str(int8), "--int8",
                                  "--no-saved-model", "--calibration-images", "16"]) == ExitStatus.SUCCESS

    record = json.loads((int8 / "export.json").read_text())
    assert record["exported"] == ["model.tflite"] and "saved_model" not in record
    assert not (int8 / "saved_model").exists() and (int8 / "checkpoint" / "ckpt-0.index").is_file()
    assert record["tflite"]["input"]["dtype"] == "uint8"
    assert record["tflite"]["quantization"]["kind"] == "int8" and record["tflite"]["quantization"]["input_scale"] > 0
    assert record["tflite"]["quantization"]["calibration"]["images"] == 16  # the overfit run's records hold 16
    assert all(Path(f).is_file() for f in record["tflite"]["quantization"]["calibration"]["records"])
    assert set(record["seconds"]) == {"restore", "tflite"}
    assert (int8 / "model.tflite").stat().st_size < (trained_export / "model.tflite").stat().st_size / 2

    listing = tmp_path / "films.txt"  # the model's training images: it is confident on them
    listing.write_text("\n".join(str(SAMPLE_IMAGES / name) for name in sorted(overfit_images())) + "\n")
    outputs = {}
    for name, export in (("float", trained_export), ("int8", int8)):
        outputs[name] = tmp_path / f"detections {name}"
        assert run_main(detect_main, ["--model", str(export), "--input", str(listing), "--output-dir",
                                      str(outputs[name]), "--backend", "auto", "--no-progress"]) == ExitStatus.SUCCESS
    assert json.loads((outputs["int8"] / "run.json").read_text())["backend"] == "tflite"
    assert len(list((outputs["int8"] / "drawn").glob("*.jpg"))) == len(overfit_images())
    reference, candidate = detections(outputs["float"]), detections(outputs["int8"])
    names = sorted(reference)
    kept = backend_agreement([reference[n] for n in names], [candidate.get(n, []) for n in names], min_score=0.3,
                             min_iou=0.5, max_score_difference=0.15)
    assert kept.reference_boxes >= 10, "the trained model should be confident on its own training images"
    assert kept.share >= 0.8, kept
