"""Bootstrap intervals: the reweighting equals pycocotools and the metrics, intervals behave, patients
are the unit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chestdet.core.labels import CLASS_NAMES
from chestdet.data.annotations import read_nih_csv
from chestdet.data.split import patient_of
from chestdet.evaluation import bootstrap, coco, froc, ground_truth, image_level, metrics
from chestdet.evaluation.boxes import DETECTION_TABLE_COLUMNS, DIFFICULT
from chestdet.evaluation.metrics import compute_metrics
from tests.support.metric_tables import random_case


def with_difficult(truth: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return truth.assign(**{DIFFICULT: rng.random(len(truth)) < 0.2})


def reference_values(result: metrics.Metrics) -> dict[str, dict[str, float | None]]:
    table = {name: vars(result.coco.per_class[name]) for name in CLASS_NAMES}
    table["overall"] = vars(result.coco.overall)
    return table


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weights_of_one_give_pycocotools_ap_and_the_froc_exactly(seed):
    truth, found, images = random_case(seed, images=30)
    truth = with_difficult(truth, seed)
    result = compute_metrics(truth, found, images)
    ones = np.ones((1, len(images)))
    coco = bootstrap.coco_replicates(result.coco.matches, result.coco.iou_thresholds,
                                     result.coco.recall_thresholds, ones)
    for name, expected in reference_values(result).items():
        for key in ("ap", "ap50", "ap25"):
            value = coco[name][key][0]
            if expected[key] is None:
                assert np.isnan(value), (name, key)
            else:
                assert value == pytest.approx(expected[key], abs=1e-12), (name, key)
    table = bootstrap.froc_outcome_table(truth, found, images, 0.5)
    for name in [*CLASS_NAMES, "overall"]:
        curve = result.froc.overall if name == "overall" else result.froc.per_class[name]
        got = bootstrap.weighted_froc(table[name], ones, froc.FROC_FP_RATES)[0]
        want = np.array([np.nan if v is None else v for v in curve.at_rates])
        np.testing.assert_allclose(got, want, atol=1e-12, equal_nan=True)
    flags = image_level.image_level_flags(truth, found, images)
    for name in CLASS_NAMES:
        sensitivity, specificity = bootstrap.weighted_image_level(flags[name], ones)
        level = result.image_level[name]
        assert (np.nan if level.sensitivity is None else level.sensitivity) == pytest.approx(sensitivity[0],
                                                                                            nan_ok=True)
        assert level.specificity == pytest.approx(specificity[0])


def test_integer_weights_equal_pycocotools_on_the_resampled_image_list():
    # Weight 2 = the image twice, weight 0 = left out: pycocotools on that image list must agree.
    truth, found, images = random_case(5, images=20)
    weights = np.random.default_rng(1).integers(0, 3, size=len(images))
    copies = [(image, f"{image}#{copy}") for image, w in zip(images, weights, strict=True) for copy in range(w)]
    rename = pd.DataFrame(copies, columns=["image", "copy"])
    truth2 = truth.merge(rename, on="image").drop(columns="image").rename(columns={"copy": "image"})
    found2 = found.merge(rename, on="image").drop(columns="image").rename(columns={"copy": "image"})
    expected = coco.coco_average_precision(truth2, found2, [copy for _, copy in copies])
    full = coco.coco_average_precision(truth, found, images)
    got = bootstrap.coco_replicates(full.matches, full.iou_thresholds, full.recall_thresholds,
                                    weights[None, :].astype(float))
    for name in CLASS_NAMES:
        for key in ("ap", "ap50", "ap25"):
            want = getattr(expected.per_class[name], key)
            value = got[name][key][0]
            assert np.isnan(value) if want is None else value == pytest.approx(want, abs=1e-9), (name, key)


def test_patients_are_resampled_not_images():
    patients = ["p1", "p1", "p2", "p3", "p3", "p3"]
    weights = bootstrap.patient_weights(patients, replicates=200, seed=4)
    assert weights.shape == (200, 6)
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 3] == weights[:, 5]).all()
    per_patient = weights[:, [0, 2, 3]]
    assert (per_patient.sum(axis=1) == 3).all()  # three patients drawn with replacement
    assert len({tuple(row) for row in per_patient}) > 3
    np.testing.assert_array_equal(weights, bootstrap.patient_weights(patients, replicates=200, seed=4))


def run_bootstrap(truth, found, images, replicates=300, seed=0):
    result = compute_metrics(truth, found, images)
    patients = [image.split("_")[0] for image in images]
    return result, bootstrap.bootstrap_metrics(result, truth, found, images, patients, replicates, seed)


def grouped_case(seed: int, images: int):
    """random_case with two images per patient (`p007_1.png`)."""
    truth, found, names = random_case(seed, images=images)
    rename = {name: f"p{k // 2:03d}_{k % 2}.png" for k, name in enumerate(names)}
    return truth.replace({"image": rename}), found.replace({"image": rename}), [rename[n] for n in names]


def test_interval_contains_its_estimate_and_the_same_seed_gives_the_same_intervals():
    truth, found, images = grouped_case(3, 60)
    result, boot = run_bootstrap(truth, found, images)
    block = boot.to_dict()
    assert {k: block[k] for k in ("replicates", "seed", "level", "unit")} == {
        "replicates": 300, "seed": 0, "level": 0.95, "unit": "patient"}
    checks = [
        (result.coco.overall.ap50, block["coco"]["overall"]["ap50"]),
        (result.coco.overall.ap, block["coco"]["overall"]["ap"]),
        (result.froc.overall.score, block["froc"]["overall"]["score"]),
        *[(v, b) for v, b in zip(result.froc.overall.at_rates, block["froc"]["overall"]["sensitivity"], strict=True)],
    ]
    for name in CLASS_NAMES[:4]:
        checks += [(result.coco.per_class[name].ap50, block["coco"]["per_class"][name]["ap50"]),
                   (result.image_level[name].sensitivity, block["image_level"][name]["sensitivity"]),
                   (result.image_level[name].specificity, block["image_level"][name]["specificity"])]
    for estimate, (low, high) in checks:
        assert low <= estimate <= high
    assert block["coco"]["overall"]["ap50"][0] < block["coco"]["overall"]["ap50"][1]
    assert run_bootstrap(truth, found, images)[1].to_dict() == block
    assert run_bootstrap(truth, found, images, seed=1)[1].to_dict() != block
    assert block["coco"]["per_class"]["Pneumothorax"]["ap50"] is None  # random_case uses the first 4 classes


def width(bounds: list[float]) -> float:
    return bounds[1] - bounds[0]


def test_interval_narrows_as_images_are_added():
    small = run_bootstrap(*grouped_case(7, 40))[1].to_dict()
    large = run_bootstrap(*grouped_case(7, 400))[1].to_dict()
    for path in (("coco", "overall", "ap50"), ("coco", "overall", "ap"), ("froc", "overall", "score")):
        a, b = small, large
        for key in path:
            a, b = a[key], b[key]
        assert width(b) < 0.6 * width(a), path  # ten times the patients: about a third of the width


def test_bootstrap_refuses_bad_arguments():
    truth, found, images = random_case(0, images=4)
    result = compute_metrics(truth, found, images)
    with pytest.raises(ValueError, match="replicates must be >= 1"):
        bootstrap.bootstrap_metrics(result, truth, found, images, images, replicates=0)
    with pytest.raises(ValueError, match="3 patients for 4 images"):
        bootstrap.bootstrap_metrics(result, truth, found, images, images[:3])


def test_real_nih_boxes_of_the_440_images(full_nih):
    """The 440-image copy: real boxes, patients from the file names, intervals around the estimates."""
    names = sorted(path.name for path in (full_nih / "images").glob("*.png"))
    boxes = [b for b in read_nih_csv(full_nih / "BBox_List_2017.csv")[0] if b.image in set(names)]
    truth = ground_truth.ground_truth_frame(boxes)
    rng = np.random.default_rng(0)
    rows = [(b.image, b.label, float(rng.random()), b.xmin + rng.normal(0, 10), b.ymin + rng.normal(0, 10),
             b.xmax + rng.normal(0, 10), b.ymax + rng.normal(0, 10)) for b in boxes for _ in range(2)]
    rows += [(name, CLASS_NAMES[rng.integers(8)], float(rng.random()) * 0.6, 100.0, 100.0, 300.0, 300.0)
             for name in names for _ in range(3)]
    found = pd.DataFrame(rows, columns=DETECTION_TABLE_COLUMNS)
    result = compute_metrics(truth, found, names)
    patients = [patient_of(name) for name in names]
    assert len(set(patients)) < len(names)  # several images per patient: the unit matters
    boot = bootstrap.bootstrap_metrics(result, truth, found, names, patients, replicates=200, seed=0).to_dict()
    low, high = boot["coco"]["overall"]["ap50"]
    assert low <= result.coco.overall.ap50 <= high and high - low < 0.2
    for name in CLASS_NAMES:
        low, high = boot["froc"]["per_class"][name]["score"]
        assert low <= result.froc.per_class[name].score <= high, name
