"""Metric functions on hand-made cases (answers worked out in the comments) and parity with COCOeval."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from chestdet.core.labels import CLASS_NAMES, class_id
from chestdet.evaluation import boxes, coco, confusion, froc, image_level, iobb
from chestdet.evaluation.metrics import EvaluationSettings, compute_metrics
from tests.support.metric_tables import det, gt, random_case

RATES = froc.FROC_FP_RATES  # 0.125, 0.25, 0.5, 1, 2, 4, 8


NO_DETECTIONS = det()


# ---------------------------------------------------------------------------------------------
# FROC


def test_froc_hand_case_with_duplicate_false_positives_and_a_box_free_image():
    # Image A has two Mass boxes, image B none. Detections by score:
    #   0.9 on box 1 (hit), 0.8 on box 1 again (duplicate: not a hit, not a false positive),
    #   0.7 nowhere on A (FP), 0.6 on B (FP), 0.5 on box 2 (hit).
    # Curve (FP per image over 2 images, sensitivity over 2 boxes):
    #   0.9 -> (0, .5); 0.8 -> (0, .5); 0.7 -> (.5, .5); 0.6 -> (1, .5); 0.5 -> (1, 1)
    # At 0.125, 0.25, 0.5 FP/image: 0.5; at 1, 2, 4, 8: 1.0; mean (3 * .5 + 4 * 1) / 7.
    truth = gt(("A", "Mass", 0, 0, 100, 100), ("A", "Mass", 500, 500, 600, 600))
    found = det(
        ("A", "Mass", 0.9, 0, 0, 100, 100),
        ("A", "Mass", 0.8, 2, 2, 100, 100),
        ("A", "Mass", 0.7, 300, 300, 400, 400),
        ("B", "Mass", 0.6, 0, 0, 100, 100),
        ("A", "Mass", 0.5, 500, 500, 600, 600),
    )
    result = froc.froc(truth, found, ["A", "B"])
    mass = result.per_class["Mass"]
    assert mass.at_rates == [0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert mass.score == pytest.approx(5.5 / 7)
    assert (mass.hits, mass.false_positives, mass.duplicates, mass.boxes) == (2, 2, 1, 2)
    assert mass.fps_per_image.tolist() == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]
    assert mass.sensitivity.tolist() == [0.0, 0.5, 0.5, 0.5, 0.5, 1.0]
    assert result.overall.at_rates == mass.at_rates
    assert result.per_class["Nodule"].at_rates == [None] * 7
    assert result.per_class["Nodule"].score is None


def test_froc_no_detections_is_zero_sensitivity():
    truth = gt(("A", "Effusion", 0, 0, 10, 10))
    result = froc.froc(truth, NO_DETECTIONS, ["A", "B"])
    assert result.per_class["Effusion"].at_rates == [0.0] * 7
    assert result.per_class["Effusion"].score == 0.0
    assert result.overall.score == 0.0
    assert result.overall.false_positives == 0


def test_froc_only_false_positives():
    # 4 FPs over 2 images = 2 FP/image, nothing ever hit: sensitivity 0 everywhere.
    truth = gt(("A", "Nodule", 0, 0, 10, 10))
    found = det(*[("B", "Nodule", s, 0, 0, 10, 10) for s in (0.9, 0.8)], ("A", "Nodule", 0.7, 50, 50, 60, 60),
                ("A", "Mass", 0.95, 0, 0, 10, 10))  # right place, wrong class: a Mass false positive
    result = froc.froc(truth, found, ["A", "B"])
    nodule = result.per_class["Nodule"]
    assert nodule.at_rates == [0.0] * 7
    assert (nodule.hits, nodule.false_positives) == (0, 3)
    assert result.per_class["Mass"].false_positives == 1
    assert result.per_class["Mass"].score is None  # no Mass box: sensitivity undefined
    assert result.overall.false_positives == 4
    assert result.overall.fps_per_image[-1] == 2.0


def test_froc_several_detections_on_one_box_count_once():
    truth = gt(("A", "Mass", 0, 0, 100, 100))
    found = det(*[("A", "Mass", s, d, d, 100, 100) for s, d in ((0.9, 0), (0.8, 5), (0.3, 10))])
    mass = froc.froc(truth, found, ["A"]).per_class["Mass"]
    assert (mass.hits, mass.duplicates, mass.false_positives) == (1, 2, 0)
    assert mass.at_rates == [1.0] * 7


def test_froc_duplicate_reaching_a_second_free_box_hits_it():
    # Two overlapping boxes; the second detection overlaps both but box 1 is taken: it hits box 2.
    truth = gt(("A", "Mass", 0, 0, 100, 100), ("A", "Mass", 10, 0, 110, 100))
    found = det(("A", "Mass", 0.9, 0, 0, 100, 100), ("A", "Mass", 0.8, 5, 0, 105, 100))
    mass = froc.froc(truth, found, ["A"]).per_class["Mass"]
    assert (mass.hits, mass.duplicates) == (2, 0)


def test_froc_images_without_boxes_dilute_false_positives():
    # One box, one FP scoring above the hit, 4 images (2 with neither box nor detection).
    # The FP alone is 1/4 = 0.25 FP/image: below 0.25 the hit cannot be reached.
    truth = gt(("A", "Pneumonia", 0, 0, 10, 10))
    found = det(("B", "Pneumonia", 0.9, 0, 0, 10, 10), ("A", "Pneumonia", 0.5, 0, 0, 10, 10))
    curve = froc.froc(truth, found, ["A", "B", "C", "D"]).per_class["Pneumonia"]
    assert curve.at_rates == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    same_on_two_images = froc.froc(truth, found, ["A", "B"]).per_class["Pneumonia"]
    assert same_on_two_images.at_rates == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_froc_tied_scores_enter_together():
    # A hit and an FP at the same score on 1 image: the hit is only reachable at 1 FP/image.
    truth = gt(("A", "Mass", 0, 0, 10, 10))
    found = det(("A", "Mass", 0.5, 0, 0, 10, 10), ("A", "Mass", 0.5, 50, 50, 60, 60))
    curve = froc.froc(truth, found, ["A"]).per_class["Mass"]
    assert curve.at_rates == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]


def test_froc_hit_iou_is_configurable():
    # Detection (0,0,100,50) on box (0,0,100,100): IoU = 5000 / 10000 = 0.5 exactly, a hit at >= 0.5;
    # detection (0,0,100,40): IoU 0.4, a hit only when hit_iou <= 0.4.
    truth = gt(("A", "Mass", 0, 0, 100, 100))
    half = det(("A", "Mass", 0.9, 0, 0, 100, 50))
    assert froc.froc(truth, half, ["A"], hit_iou=0.5).per_class["Mass"].hits == 1
    forty = det(("A", "Mass", 0.9, 0, 0, 100, 40))
    assert froc.froc(truth, forty, ["A"], hit_iou=0.5).per_class["Mass"].false_positives == 1
    assert froc.froc(truth, forty, ["A"], hit_iou=0.4).per_class["Mass"].hits == 1


def test_froc_overall_pools_classes():
    # Mass: 1 box hit at 0.9. Nodule: 1 box, missed; one Nodule FP at 0.8. 2 images.
    # Pooled: 0.9 -> (0, 1/2); 0.8 -> (0.5, 1/2). Sensitivity 0.5 at every rate.
    truth = gt(("A", "Mass", 0, 0, 10, 10), ("B", "Nodule", 0, 0, 10, 10))
    found = det(("A", "Mass", 0.9, 0, 0, 10, 10), ("A", "Nodule", 0.8, 50, 50, 60, 60))
    result = froc.froc(truth, found, ["A", "B"])
    assert result.overall.at_rates == [0.5] * 7
    assert result.overall.boxes == 2
    assert result.per_class["Mass"].score == 1.0 and result.per_class["Nodule"].score == 0.0


# ---------------------------------------------------------------------------------------------
# ChestX-ray8 T(IoBB)


def test_iobb_hand_case():
    # Box g = (0,0,100,100) on A; B has no box. Score threshold 0.3.
    #   d1 (0,0,200,200) score .9: IoBB = 100*100 / (200*200) = 0.25
    #   d2 (0,0,100,125) score .2: IoBB = 10000 / 12500 = 0.8, but below the threshold: ignored
    #   d3 on B, score .5: localises nothing, a false positive at every T.
    # T=.1: g hit (0.25 > 0.1), FPs {d3}: Acc 1, FP/image 1/2. T>=.25: 0.25 is not > 0.25: Acc 0,
    # FPs {d1,d3}. Wang et al.'s AFP counts the FPs on boxed images (A: d1 from T=.25 on) over the
    # one annotated image-finding pair.
    truth = gt(("A", "Cardiomegaly", 0, 0, 100, 100))
    found = det(
        ("A", "Cardiomegaly", 0.9, 0, 0, 200, 200),
        ("A", "Cardiomegaly", 0.2, 0, 0, 100, 125),
        ("B", "Cardiomegaly", 0.5, 0, 0, 100, 100),
    )
    row = iobb.iobb_localisation(truth, found, ["A", "B"], score_threshold=0.3).per_class["Cardiomegaly"]
    assert row.accuracy == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert row.fp_per_image == [0.5, 1.0, 1.0, 1.0, 1.0]
    assert row.afp == [0.0, 1.0, 1.0, 1.0, 1.0]
    # With d2 kept (threshold 0.1): T=.5 and .75: 0.8 > T, g hit, FPs {d1,d3}; T=.9: nothing hits, 3 FPs.
    low = iobb.iobb_localisation(truth, found, ["A", "B"], score_threshold=0.1).per_class["Cardiomegaly"]
    assert low.accuracy == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert low.fp_per_image == [0.5, 1.0, 1.0, 1.0, 1.5]
    assert low.afp == [0.0, 1.0, 1.0, 1.0, 2.0]
    assert low.boxes == 1


def test_iobb_rewards_a_detection_inside_the_box_where_iou_does_not():
    # A detection inside a large box: IoBB = 1 (all of it is on the box), IoU = 2500 / 40000.
    truth = gt(("A", "Effusion", 0, 0, 200, 200))
    found = det(("A", "Effusion", 0.9, 50, 50, 100, 100))
    row = iobb.iobb_localisation(truth, found, ["A"]).per_class["Effusion"]
    assert row.accuracy == [1.0] * 5
    assert froc.froc(truth, found, ["A"]).per_class["Effusion"].hits == 0


def test_iobb_each_box_counts_and_classes_do_not_mix():
    # Two Mass boxes, one found; a Nodule detection on the other is no Mass hit and is a Nodule FP.
    truth = gt(("A", "Mass", 0, 0, 10, 10), ("A", "Mass", 50, 50, 60, 60))
    found = det(("A", "Mass", 0.9, 0, 0, 10, 10), ("A", "Nodule", 0.9, 50, 50, 60, 60))
    result = iobb.iobb_localisation(truth, found, ["A"])
    assert result.per_class["Mass"].accuracy == [0.5] * 5
    assert result.per_class["Mass"].afp == [0.0] * 5
    assert result.per_class["Nodule"].accuracy == [None] * 5
    assert result.per_class["Nodule"].afp == [1.0] * 5  # one FP over the one image-finding pair (A, Mass)


def test_iobb_afp_is_over_image_finding_pairs_and_boxed_images_only():
    # A has Mass and Nodule boxes (2 image-finding pairs), B a Mass box (1 pair), C no box.
    # Mass FPs: one on A, one on C. Wang et al.'s AFP: the one on A over 3 pairs; the one on C lies
    # on an image without boxes, which the paper never evaluated. Per evaluated image: 2 / 3 images.
    truth = gt(("A", "Mass", 0, 0, 10, 10), ("A", "Nodule", 50, 50, 60, 60), ("B", "Mass", 0, 0, 10, 10))
    found = det(("A", "Mass", 0.9, 200, 200, 300, 300), ("C", "Mass", 0.9, 0, 0, 10, 10))
    row = iobb.iobb_localisation(truth, found, ["A", "B", "C"]).per_class["Mass"]
    assert row.afp == [pytest.approx(1 / 3)] * 5
    assert row.fp_per_image == [pytest.approx(2 / 3)] * 5


# ---------------------------------------------------------------------------------------------
# Image level and confusion matrix


def test_image_level_hand_case():
    # Mass truth on A, B. Mass predicted (score > .3) on A, C; the .3 on B is not above the threshold.
    # TP {A}, FN {B}, FP {C}, TN {D}: sensitivity 1/2, specificity 1/2.
    truth = gt(("A", "Mass", 0, 0, 10, 10), ("B", "Mass", 0, 0, 10, 10), ("B", "Mass", 20, 20, 30, 30))
    found = det(("A", "Mass", 0.9, 500, 500, 510, 510), ("B", "Mass", 0.3, 0, 0, 10, 10),
                ("C", "Mass", 0.31, 0, 0, 10, 10))
    result = image_level.image_level(truth, found, ["A", "B", "C", "D"], score_threshold=0.3)
    mass = result["Mass"]
    assert (mass.true_positives, mass.false_negatives, mass.false_positives, mass.true_negatives) == (1, 1, 1, 1)
    assert (mass.sensitivity, mass.specificity) == (0.5, 0.5)
    nodule = result["Nodule"]
    assert nodule.sensitivity is None and nodule.specificity == 1.0 and nodule.true_negatives == 4


def test_confusion_matrix_hand_case():
    # A: Mass box detected as Nodule (IoU 1) -> [Mass, Nodule]; a second, weaker detection on the same
    #    box cannot match again -> [background, Mass]; the Effusion box is missed -> [Effusion, bg];
    #    a low-scoring Atelectasis detection (0.1) is ignored.
    # B: an Atelectasis box found as Atelectasis with IoU 0.81 -> [Atelectasis, Atelectasis].
    truth = gt(("A", "Mass", 0, 0, 100, 100), ("A", "Effusion", 300, 300, 400, 400),
               ("B", "Atelectasis", 0, 0, 100, 100))
    found = det(("A", "Nodule", 0.9, 0, 0, 100, 100), ("A", "Mass", 0.8, 0, 0, 100, 90),
                ("A", "Atelectasis", 0.1, 300, 300, 400, 400), ("B", "Atelectasis", 0.7, 0, 0, 90, 90))
    result = confusion.confusion_matrix(truth, found, ["A", "B"], score_threshold=0.3)
    labels = result.labels
    assert labels == [*CLASS_NAMES, "background"]
    expected = np.zeros((9, 9), dtype=int)
    at = labels.index
    expected[at("Mass"), at("Nodule")] = 1
    expected[at("background"), at("Mass")] = 1
    expected[at("Effusion"), at("background")] = 1
    expected[at("Atelectasis"), at("Atelectasis")] = 1
    assert result.matrix.tolist() == expected.tolist()


def test_match_greedy_takes_highest_iou_first():
    ious = np.array([[0.6, 0.9], [0.55, 0.7]])
    # 0.9 pairs (0,1); then row 1 can only take column 0 (0.55 >= 0.5).
    assert confusion.match_greedy(ious, 0.5) == [(0, 1), (1, 0)]
    assert confusion.match_greedy(ious, 0.6) == [(0, 1)]


# ---------------------------------------------------------------------------------------------
# COCO AP


def test_coco_ap_hand_case():
    # One class, boxes on A and B. Detections: .9 exact on A (TP), .8 elsewhere (FP), .7 exact on B (TP).
    # Precision/recall: (1, .5), (.5, .5), (2/3, 1). COCO interpolates (max precision to the right) and
    # samples 101 recall points: 0.00..0.50 (51 points) at 1, 0.51..1.00 (50 points) at 2/3.
    # AP = (51 + 50 * 2/3) / 101 at every IoU threshold (the hits are exact).
    truth = gt(("A", "Pneumothorax", 0, 0, 100, 100), ("B", "Pneumothorax", 10, 10, 50, 80))
    found = det(("A", "Pneumothorax", 0.9, 0, 0, 100, 100), ("A", "Pneumothorax", 0.8, 500, 500, 600, 600),
                ("B", "Pneumothorax", 0.7, 10, 10, 50, 80))
    result = coco.coco_average_precision(truth, found, ["A", "B", "C"])
    expected = (51 + 50 * 2 / 3) / 101
    row = result.per_class["Pneumothorax"]
    assert row.ap == pytest.approx(expected) and row.ap50 == pytest.approx(expected)
    assert row.ap25 == pytest.approx(expected)
    assert result.per_class["Mass"].ap is None
    assert result.overall.ap == pytest.approx(expected)


def test_coco_ap_at_025_differs_from_050():
    # The detection overlaps the box with IoU 1/3: a hit at 0.25 only. AP@0.25 = 1, AP@0.5 = 0.
    truth = gt(("A", "Mass", 0, 0, 100, 100))
    found = det(("A", "Mass", 0.9, 0, 50, 100, 150))
    row = coco.coco_average_precision(truth, found, ["A"]).per_class["Mass"]
    assert row.ap25 == pytest.approx(1.0)
    assert row.ap50 == 0.0 and row.ap == 0.0


def test_coco_ap_without_any_detection_is_zero():
    truth = gt(("A", "Mass", 0, 0, 100, 100))
    result = coco.coco_average_precision(truth, NO_DETECTIONS, ["A"])
    assert result.per_class["Mass"] == coco.ClassAP(0.0, 0.0, 0.0)


def reference_cocoeval(truth: pd.DataFrame, found: pd.DataFrame, images: list[str],
                       cat_ids: list[int] | None = None, iou_thresholds: list[float] | None = None) -> np.ndarray:
    """pycocotools used the documented way: COCO + loadRes + evaluate/accumulate/summarize -> stats."""
    ids = {name: k for k, name in enumerate(images, start=1)}
    dataset = {
        "images": [{"id": i} for i in ids.values()],
        "categories": [{"id": class_id(name), "name": name} for name in CLASS_NAMES],
        "annotations": [
            {"id": n, "image_id": ids[r.image], "category_id": class_id(r.label), "iscrowd": 0,
             "bbox": [r.xmin, r.ymin, r.xmax - r.xmin, r.ymax - r.ymin],
             "area": (r.xmax - r.xmin) * (r.ymax - r.ymin)}
            for n, r in enumerate(truth.itertuples(), start=1)
        ],
    }
    results = [{"image_id": ids[r.image], "category_id": class_id(r.label), "score": r.score,
                "bbox": [r.xmin, r.ymin, r.xmax - r.xmin, r.ymax - r.ymin]} for r in found.itertuples()]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        if cat_ids is not None:
            evaluator.params.catIds = cat_ids
        if iou_thresholds is not None:
            evaluator.params.iouThrs = np.array(iou_thresholds)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_ap_equals_cocoeval_on_random_cases(seed):
    truth, found, images = random_case(seed)
    ours = coco.coco_average_precision(truth, found, images)
    stats = reference_cocoeval(truth, found, images)
    assert ours.overall.ap == pytest.approx(stats[0], abs=1e-12)
    assert ours.overall.ap50 == pytest.approx(stats[1], abs=1e-12)
    assert ours.overall.ap25 == pytest.approx(reference_cocoeval(truth, found, images, iou_thresholds=[0.25])[0],
                                              abs=1e-12)
    for name in CLASS_NAMES[:4]:
        per_class = reference_cocoeval(truth, found, images, cat_ids=[class_id(name)])
        per_class25 = reference_cocoeval(truth, found, images, cat_ids=[class_id(name)], iou_thresholds=[0.25])
        row = ours.per_class[name]
        assert row.ap == pytest.approx(per_class[0], abs=1e-12), name
        assert row.ap50 == pytest.approx(per_class[1], abs=1e-12), name
        assert row.ap25 == pytest.approx(per_class25[0], abs=1e-12), name
    assert 0 < ours.overall.ap < ours.overall.ap50 <= ours.overall.ap25 < 1  # a case worth comparing


# ---------------------------------------------------------------------------------------------
# Everything together


def test_compute_metrics_counts_and_json_shape():
    truth = gt(("A", "Mass", 0, 0, 100, 100))
    found = det(("A", "Mass", 0.9, 0, 0, 100, 100), ("B", "Nodule", 0.4, 0, 0, 10, 10))
    result = compute_metrics(truth, found, ["A", "B", "C"], EvaluationSettings(score_threshold=0.5))
    data = result.to_dict()
    assert (data["images"], data["images_with_boxes"], data["detections"]) == (3, 1, 2)
    assert data["boxes"]["Mass"] == 1 and sum(data["boxes"].values()) == 1
    assert data["settings"]["score_threshold"] == 0.5
    assert data["coco"]["per_class"]["Mass"] == {"ap": pytest.approx(1.0), "ap50": pytest.approx(1.0),
                                                 "ap25": pytest.approx(1.0)}
    assert data["froc"]["per_class"]["Nodule"]["false_positives"] == 1
    assert data["iobb"]["per_class"]["Nodule"]["afp"] == [0.0] * 5  # 0.4 is below the 0.5 threshold
    assert data["image_level"]["Mass"]["sensitivity"] == 1.0
    assert len(data["confusion_matrix"]["matrix"]) == 9


@pytest.mark.parametrize(
    ("truth", "found", "images", "message"),
    [
        (gt(("A", "Mass", 0, 0, 1, 1)), NO_DETECTIONS, ["B"], "ground truth table names 1 images not in `images`"),
        (gt(), det(("A", "Tumour", 0.5, 0, 0, 1, 1)), ["A"], "labels outside CLASS_NAMES"),
        (gt(), NO_DETECTIONS, [], "no images to evaluate"),
        (gt(), NO_DETECTIONS, ["A", "A"], "lists an image twice"),
        (gt(), det(("A", "Mass", float("nan"), 0, 0, 1, 1)), ["A"], "not finite"),
    ],
)
def test_compute_metrics_refuses_inconsistent_tables(truth, found, images, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(truth, found, images)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="score_threshold must be within 0..1, got 1.5"):
        EvaluationSettings(score_threshold=1.5)
    with pytest.raises(ValueError, match="fp_rates must be positive"):
        EvaluationSettings(fp_rates=(0.0, 1.0))


# ---------------------------------------------------------------------------------------------
# Difficult boxes: ignored, as PASCAL VOC ignores them


def hard_gt(*rows) -> pd.DataFrame:
    """rows: (image, label, xmin, ymin, xmax, ymax, difficult)"""
    frame = pd.DataFrame(rows, columns=[*boxes.GROUND_TRUTH_COLUMNS, boxes.DIFFICULT])
    return frame.astype({**{c: float for c in boxes.BOX_COLUMNS}, boxes.DIFFICULT: bool})


# A: an ordinary Mass box g1 and a difficult one g2. d_hard sits exactly on g2 and outscores d_easy,
# exactly on g1.
G1, G2 = (0, 0, 100, 100), (500, 500, 600, 600)
HARD_TRUTH = hard_gt(("A", "Mass", *G1, False), ("A", "Mass", *G2, True))
D_EASY, D_HARD = ("A", "Mass", 0.8, *G1), ("A", "Mass", 0.9, *G2)


def test_coco_ap_ignores_difficult_boxes_and_detections_on_them():
    # Ordinary g2 and only d_easy: recall stops at 1/2, AP = 51/101 (recall points 0..0.5 at precision 1).
    # Difficult g2: missing it is no miss, AP = 1. d_hard on it is no false positive either: still 1,
    # where a false positive ranked first would halve the precision.
    ordinary = HARD_TRUTH.assign(difficult=False)
    assert coco.coco_average_precision(ordinary, det(D_EASY), ["A"]).per_class["Mass"].ap50 == \
        pytest.approx(51 / 101)
    def ap50(truth, found):
        return coco.coco_average_precision(truth, found, ["A"]).per_class["Mass"].ap50

    assert ap50(HARD_TRUTH, det(D_EASY)) == pytest.approx(1.0)
    assert ap50(HARD_TRUTH, det(D_EASY, D_HARD)) == pytest.approx(1.0)
    only_hard = coco.coco_average_precision(HARD_TRUTH.iloc[1:], det(D_HARD), ["A"]).per_class["Mass"]
    assert only_hard.ap50 is None  # no ordinary box: no AP, as for a class without boxes


def test_pycocotools_ignore_flag_alone_is_overwritten_by_iscrowd():
    # Why difficult boxes go in as crowd regions: COCOeval sets gt["ignore"] = gt["iscrowd"], so an
    # annotation with "ignore": 1 and "iscrowd": 0 is scored as an ordinary box (the miss counts).
    dataset = coco.coco_ground_truth(HARD_TRUTH.assign(difficult=False), ["A"])
    dataset["annotations"][1]["ignore"] = 1
    evaluator = coco.run_cocoeval(dataset, coco.coco_results(det(D_EASY), ["A"]))
    assert float(np.mean(evaluator.eval["precision"][0, :, class_id("Mass") - 1, 0, 2])) == pytest.approx(51 / 101)
    crowd = coco.coco_ground_truth(HARD_TRUTH, ["A"])
    assert [a["iscrowd"] for a in crowd["annotations"]] == [0, 1]


def test_coco_crowd_rule_ignores_a_small_detection_inside_a_difficult_box():
    # COCOeval's crowd overlap is intersection over the detection's area: a 20x20 detection inside
    # g2 (IoU 0.04) is ignored in COCO AP, while FROC's IoU rule calls it a false positive.
    inside = ("A", "Mass", 0.9, 540, 540, 560, 560)
    result = coco.coco_average_precision(HARD_TRUTH, det(inside, D_EASY), ["A"])
    assert result.per_class["Mass"].ap50 == pytest.approx(1.0)
    assert froc.froc(HARD_TRUTH, det(inside, D_EASY), ["A"]).per_class["Mass"].false_positives == 1


def test_froc_ignores_difficult_boxes_and_detections_on_them():
    result = froc.froc(HARD_TRUTH, det(D_EASY, D_HARD), ["A"]).per_class["Mass"]
    assert (result.boxes, result.hits, result.false_positives, result.ignored) == (1, 1, 0, 1)
    assert result.at_rates == [1.0] * 7
    ordinary = froc.froc(HARD_TRUTH.assign(difficult=False), det(D_EASY), ["A"]).per_class["Mass"]
    assert ordinary.at_rates == [0.5] * 7  # the same detections, g2 an ordinary box: missed
    # A detection reaching both an ordinary and a difficult box hits the ordinary one.
    both = hard_gt(("A", "Mass", *G1, True), ("A", "Mass", 0, 0, 100, 90, False))
    assert froc.froc(both, det(D_EASY), ["A"]).per_class["Mass"].hits == 1


def test_iobb_ignores_difficult_boxes_and_detections_on_them():
    row = iobb.iobb_localisation(HARD_TRUTH, det(D_EASY, D_HARD), ["A"]).per_class["Mass"]
    assert row.boxes == 1 and row.accuracy == [1.0] * 5
    assert row.afp == [0.0] * 5 and row.fp_per_image == [0.0] * 5
    ordinary = iobb.iobb_localisation(HARD_TRUTH.assign(difficult=False), det(D_EASY), ["A"]).per_class["Mass"]
    assert ordinary.accuracy == [0.5] * 5


def test_image_level_leaves_out_images_whose_only_boxes_are_difficult():
    # B's only Mass box is difficult: B is neither positive nor negative for Mass, detected or not.
    # A (ordinary box, detected) is a TP; C (no box, nothing detected) a TN.
    truth = hard_gt(("A", "Mass", *G1, False), ("B", "Mass", *G1, True))
    found = det(D_EASY, ("B", "Mass", 0.9, *G1))
    mass = image_level.image_level(truth, found, ["A", "B", "C"])["Mass"]
    assert (mass.true_positives, mass.false_positives, mass.true_negatives, mass.false_negatives) == (1, 0, 1, 0)
    assert mass.ignored == 1
    ordinary = image_level.image_level(truth.assign(difficult=False), det(D_EASY), ["A", "B", "C"])["Mass"]
    assert ordinary.false_negatives == 1 and ordinary.ignored == 0


def test_confusion_matrix_counts_no_difficult_box():
    # d_hard pairs with g2 (difficult): nothing counted; an unmatched difficult box is no miss.
    result = confusion.confusion_matrix(HARD_TRUTH, det(D_EASY, D_HARD), ["A"])
    at = result.labels.index
    assert result.matrix.sum() == 1 and result.matrix[at("Mass"), at("Mass")] == 1
    missed = confusion.confusion_matrix(HARD_TRUTH, det(D_EASY), ["A"])
    assert missed.matrix[at("Mass"), at("background")] == 0


def test_compute_metrics_reports_the_ignored_boxes():
    result = compute_metrics(HARD_TRUTH, det(D_EASY, D_HARD), ["A", "B"])
    assert result.boxes["Mass"] == 1 and result.ignored["Mass"] == 1
    data = result.to_dict()
    assert data["ignored_boxes"]["Mass"] == 1 and data["boxes"]["Mass"] == 1
    assert "bootstrap" not in data
