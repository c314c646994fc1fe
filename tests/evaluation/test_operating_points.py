"""Operating points: per class, the thresholds at 0.25, 0.5, 1 and 2 false positives per image and at the
best F1, on a case small enough to check by hand, and operating_points.json as evaluate writes it."""

from __future__ import annotations

import json

import pytest

from chestdet.core.labels import CLASS_NAMES, class_id
from chestdet.data.split import SplitRow, write_split
from chestdet.detection.thresholds import POINT_NAMES, read_operating_points
from chestdet.evaluation import operating_points
from chestdet.evaluation.evaluate import ReportOptions, run_evaluation
from chestdet.evaluation.metrics import compute_metrics
from tests.conftest import SAMPLE_CSV
from tests.support.evaluation_inputs import (
    BOXED,
    fake_detections,
    sample_boxes,
    unlabeled_images,
    write_detections_folder,
)
from tests.support.metric_tables import det, gt

IMAGES = ["A", "B", "C", "D"]
TRUTH = gt(("A", "Mass", 0, 0, 100, 100), ("B", "Mass", 0, 0, 100, 100), ("A", "Effusion", 200, 200, 300, 300))
# Mass, highest score first: hit on A, false positives on C and D, hit on B, false positive on C.
# After each: hits 1 1 1 2 2 of 2 boxes, false positives 0 1 2 2 3 over 4 images.
MASS = [("A", "Mass", 0.9, 0, 0, 100, 100), ("C", "Mass", 0.8, 0, 0, 50, 50), ("D", "Mass", 0.7, 0, 0, 50, 50),
        ("B", "Mass", 0.6, 0, 0, 100, 100), ("C", "Mass", 0.5, 60, 60, 90, 90)]
# Effusion: only a false positive, on B.
EFFUSION = [("B", "Effusion", 0.9, 200, 200, 300, 300)]


def points() -> dict:
    return operating_points.operating_points(compute_metrics(TRUTH, det(*MASS, *EFFUSION), IMAGES), "val").classes


def test_points_at_false_positive_rates_by_hand():
    mass = points()["Mass"]
    # within 0.25 FP/image (1 false positive): sensitivity 1/2 is the most, first reached at 0.9 with none
    assert mass["0.25fp"] == operating_points.OperatingPoint(0.9, 0.5, 0.0, 1.0)
    # within 0.5 (2): both boxes once the 0.6 detection is kept, with 2 false positives
    assert mass["0.5fp"] == operating_points.OperatingPoint(0.6, 1.0, 0.5, 0.5)
    # 1 and 2 FP/image allow more, but nothing is found below 0.6: the same threshold
    assert mass["1fp"] == mass["2fp"] == mass["0.5fp"]


def test_best_f1_by_hand_takes_the_higher_threshold_of_a_tie():
    # F1 = 2TP / (2TP + FP + FN): 0.9 -> 2/3, 0.8 -> 1/2, 0.7 -> 2/5, 0.6 -> 4/6, 0.5 -> 4/7
    assert points()["Mass"]["best_f1"] == operating_points.OperatingPoint(0.9, 0.5, 0.0, 1.0)


def test_unreachable_points_and_classes_without_boxes_have_no_threshold():
    found = points()
    assert all(point.threshold is None for point in found["Effusion"].values())  # nothing found, only a FP
    assert all(point.threshold is None for point in found["Nodule"].values())  # no box
    assert list(found["Mass"]) == list(POINT_NAMES) and list(found) == list(CLASS_NAMES)


def test_intervals_when_every_replicate_draws_the_same_patient():
    metrics = compute_metrics(TRUTH, det(*MASS, *EFFUSION), IMAGES)
    named = operating_points.operating_points(metrics, "val")
    # one patient for the four images: each replicate draws it once, so each weighting is the original
    found = operating_points.with_intervals(named, TRUTH, det(*MASS, *EFFUSION), IMAGES, ["p"] * 4, 50, 0, 0.5)
    assert found.classes["Mass"]["0.5fp"].interval == {"sensitivity": [1.0, 1.0], "fp_per_image": [0.5, 0.5]}
    assert found.classes["Mass"]["0.25fp"].interval == {"sensitivity": [0.5, 0.5], "fp_per_image": [0.0, 0.0]}
    assert found.classes["Effusion"]["1fp"].interval is None


def test_evaluate_writes_operating_points_that_detect_can_read(tmp_path):
    negatives = unlabeled_images()
    images = [*BOXED, *negatives]
    found = write_detections_folder(tmp_path / "detections", fake_detections(sample_boxes(), negatives), images)
    split = write_split(tmp_path / "split.csv", [SplitRow(name, name[:8], "val") for name in images])
    run = run_evaluation(found, SAMPLE_CSV, tmp_path / "eval", split, "val",
                         options=ReportOptions(plots=False, gallery=0, bootstrap=20))
    document = json.loads((tmp_path / "eval" / "operating_points.json").read_text())
    assert document["split"] == "val" and document["points"] == list(POINT_NAMES)
    assert document["source"] == run.inputs.sources
    read = read_operating_points(tmp_path / "eval" / "operating_points.json")
    assert read == run.operating_points
    cardiomegaly = read.classes["Cardiomegaly"]["1fp"]
    assert cardiomegaly.sensitivity == pytest.approx(run.metrics.froc.per_class["Cardiomegaly"].at_rates[
        list(run.metrics.froc.fp_rates).index(1.0)])
    assert set(cardiomegaly.interval) == {"sensitivity", "fp_per_image"}
    thresholds = read.thresholds("1fp", {class_id(name): name for name in CLASS_NAMES}, default=0.3)
    assert thresholds.for_class(class_id("Cardiomegaly")) == cardiomegaly.threshold
    absent = [name for name in CLASS_NAMES if run.metrics.boxes[name] == 0]
    assert absent and all(thresholds.for_class(class_id(name)) == 0.3 for name in absent)  # no box: the default
