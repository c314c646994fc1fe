"""The trivial baseline: median training boxes scored by class frequency, beside the model in
metrics.json and the report, with the classes that do not beat it flagged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from chestdet.data.annotations import Box, read_nih_csv
from chestdet.data.split import SplitRow, write_split
from chestdet.evaluation import baseline, report
from chestdet.evaluation.evaluate import ReportOptions, run_evaluation
from chestdet.evaluation.ground_truth import GroundTruth
from chestdet.evaluation.metrics import compute_metrics
from tests.conftest import SAMPLE_CSV, SAMPLE_IMAGES, SAMPLE_UNLABELED
from tests.support.evaluation_inputs import fake_detections, write_detections_folder
from tests.support.metric_tables import det, gt

# Training films of 1000x1000: three Cardiomegaly boxes, one Effusion box, one film without a finding.
TRAIN_BOXES = [
    Box("t1.png", "Cardiomegaly", 100, 200, 500, 600), Box("t2.png", "Cardiomegaly", 120, 220, 520, 640),
    Box("t3.png", "Cardiomegaly", 300, 400, 700, 800), Box("t4.png", "Effusion", 50, 600, 250, 900),
]
TRAIN_IMAGES = ["t1.png", "t2.png", "t3.png", "t4.png", "t5.png"]
SOURCE = GroundTruth(TRAIN_BOXES, [], None, "hand-made", {name: (1000, 1000) for name in TRAIN_IMAGES})
# Evaluated films of 500x500, where the median boxes are (60, 110, 260, 320) and (25, 300, 125, 450):
# e1 has the median Cardiomegaly box, e2 one at IoU 0.826 with it, e3 one that does not overlap it;
# e4 has the median Effusion box.
EVALUATED = ["e1.png", "e2.png", "e3.png", "e4.png"]
TRUTH = gt(("e1.png", "Cardiomegaly", 60, 110, 260, 320), ("e2.png", "Cardiomegaly", 70, 120, 270, 330),
           ("e3.png", "Cardiomegaly", 300, 300, 450, 450), ("e4.png", "Effusion", 25, 300, 125, 450))
SIZES = dict.fromkeys(EVALUATED, (500, 500))


def hand_case() -> baseline.Baseline:
    found = baseline.build_baseline(TRUTH, EVALUATED, SIZES, SOURCE, TRAIN_IMAGES)
    assert found is not None
    return found


def test_median_boxes_and_frequencies_by_hand():
    priors = hand_case().priors
    assert priors["Cardiomegaly"] == baseline.ClassPrior((0.12, 0.22, 0.52, 0.64), 3 / 5, 3)
    assert priors["Effusion"] == baseline.ClassPrior((0.05, 0.6, 0.25, 0.9), 1 / 5, 1)
    assert priors["Mass"] == baseline.ClassPrior(None, 0.0, 0)


def test_baseline_ap_by_hand():
    scored = hand_case().metrics
    # Cardiomegaly: four tied detections, in image order hit, hit, miss, miss; precision 1 up to recall
    # 2/3, so 67 of COCO's 101 recall points (0.00..0.66) have precision 1.
    assert scored.coco.per_class["Cardiomegaly"].ap50 == pytest.approx(67 / 101)
    assert scored.coco.per_class["Cardiomegaly"].ap25 == pytest.approx(67 / 101)
    # Effusion: the one hit comes fourth of four tied detections: precision 1/4 at every recall point.
    assert scored.coco.per_class["Effusion"].ap50 == pytest.approx(0.25)
    assert scored.coco.overall.ap50 == pytest.approx((67 / 101 + 0.25) / 2)
    assert scored.coco.per_class["Mass"].ap50 is None
    assert scored.detections == 8  # two classes with a training box, on each of the four images


def test_a_class_worse_than_the_baseline_is_flagged_plainly():
    prior = hand_case()
    # Cardiomegaly only where it is not; Effusion found exactly
    model = compute_metrics(TRUTH, det(("e3.png", "Cardiomegaly", 0.9, 20, 20, 80, 80),
                                       ("e4.png", "Effusion", 0.9, 25, 300, 125, 450)), EVALUATED)
    assert prior.beaten(model) == {"Atelectasis": None, "Cardiomegaly": False, "Effusion": True, "Infiltrate": None,
                                   "Mass": None, "Nodule": None, "Pneumonia": None, "Pneumothorax": None,
                                   "all": True}
    text = report.render_markdown(model, {}, plots=False, baseline=prior)
    rows = {}  # each class's first row: the per-class table's
    for line in text.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0][2:], line)
    # AP@[.5:.95], AP@0.5, then the baseline's AP@0.5 (67/101), ..., image sensitivity 1/3 (e3), and the flag
    assert rows["Cardiomegaly"] == ("| Cardiomegaly | 3 | 0.000 | 0.000 | 0.663 | 0.000 | 0.000 | 0.000 | 0.333 "
                                    "| 1.000 | **NO** |")
    assert rows["Effusion"].endswith("| yes |")
    assert "**Not better than the trivial baseline on AP@0.5: Cardiomegaly.**" in text
    assert "Not better than the trivial baseline on AP@0.5: Cardiomegaly." in report.summary_text(model, prior)
    block = prior.to_dict(model)
    assert block["beaten"]["Cardiomegaly"] is False and block["priors"]["Cardiomegaly"]["score"] == 0.6
    assert block["coco"]["per_class"]["Effusion"]["ap50"] == pytest.approx(0.25)


def test_a_model_that_beats_every_class_is_told_so():
    prior = hand_case()
    model = compute_metrics(TRUTH, det(*((image, label, 0.9, *box) for image, label, *box in
                                         TRUTH.itertuples(index=False))), EVALUATED)
    assert "Every class with boxes here beats the trivial baseline on AP@0.5." in report.render_markdown(
        model, {}, plots=False, baseline=prior)


def test_evaluated_images_never_train_the_baseline():
    found = baseline.build_baseline(TRUTH, EVALUATED, SIZES, SOURCE, [*TRAIN_IMAGES, "e1.png"])
    assert found.images == 5 and found.notes == [
        "baseline: 1 of its training images are evaluated images and are left out"]


# ---------------------------------------------------------------------------------------------
# On the bundled sample, through run_evaluation


@pytest.fixture
def sample_split(tmp_path) -> tuple[Path, Path, list[str], list[str]]:
    """Detections on 10 sample films (2 without findings); a split with 20 others as train rows."""
    boxes, _ = read_nih_csv(SAMPLE_CSV)
    boxed = sorted(path.name for path in SAMPLE_IMAGES.glob("*.png"))
    test, train = boxed[:8] + sorted(p.name for p in SAMPLE_UNLABELED.glob("*.png"))[:2], boxed[8:28]
    found = write_detections_folder(tmp_path / "detections", fake_detections(
        [box for box in boxes if box.image in test], test[8:]), test)
    split = write_split(tmp_path / "split.csv", [SplitRow(name, name[:8], "test") for name in test]
                        + [SplitRow(name, name[:8], "train") for name in train])
    return found, split, test, train


def test_metrics_json_and_report_carry_the_baseline_of_the_splits_train_rows(tmp_path, sample_split):
    found, split, test, train = sample_split
    run = run_evaluation(found, SAMPLE_CSV, tmp_path / "eval", split)
    document = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    block = document["baseline"]
    assert block["training_images"] == len(train) and block["unit"] == "fraction"
    cardio = [box for box in read_nih_csv(SAMPLE_CSV)[0] if box.image in train and box.label == "Cardiomegaly"]
    expected = np.median([[b.xmin, b.ymin, b.xmax, b.ymax] for b in cardio], axis=0) / 1024
    assert block["priors"]["Cardiomegaly"]["box"] == pytest.approx(list(expected))
    assert block["priors"]["Cardiomegaly"]["score"] == pytest.approx(len({b.image for b in cardio}) / len(train))
    assert block["coco"]["per_class"]["Cardiomegaly"]["ap50"] == run.baseline.metrics.coco.per_class[
        "Cardiomegaly"].ap50
    text = (tmp_path / "eval" / "report.md").read_text()
    assert "| class | boxes | AP@[.5:.95] | AP@0.5 | AP@0.5 baseline |" in text and "## The trivial baseline" in text
    assert "baseline" not in json.loads(json.dumps(run.metrics.to_dict()))  # the model's own figures stay apart


def test_no_baseline_without_train_rows_and_the_note_says_why(tmp_path, sample_split):
    found, _, test, _ = sample_split
    only_test = write_split(tmp_path / "test only.csv", [SplitRow(name, name[:8], "test") for name in test])
    run = run_evaluation(found, SAMPLE_CSV, tmp_path / "eval", only_test)
    assert run.baseline is None and "baseline" not in json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "no baseline: the split has no train rows (pass --baseline-from)" in run.metrics.notes
    assert run_evaluation(found, SAMPLE_CSV, tmp_path / "none").baseline is None  # no split: nothing to train on


def test_baseline_from_another_source_leaves_the_evaluated_images_out(tmp_path, sample_split):
    found, _, test, _ = sample_split
    run = run_evaluation(found, SAMPLE_CSV, tmp_path / "eval",
                         options=ReportOptions(plots=False, gallery=0, baseline_from=SAMPLE_CSV))
    every = {box.image for box in read_nih_csv(SAMPLE_CSV)[0]}
    left_out = len(every & set(test))
    assert run.baseline.images == len(every) - left_out
    assert f"baseline: {left_out} of its training images are evaluated images and are left out" in run.metrics.notes
    off = run_evaluation(found, SAMPLE_CSV, tmp_path / "off", options=ReportOptions(
        plots=False, gallery=0, baseline=False, baseline_from=SAMPLE_CSV))
    assert off.baseline is None
