"""FROC: sensitivity against false positives per image as the score threshold falls, per class and
pooled, over the OD API's `np_box_ops` overlaps (docs/evaluate.md states the rule)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from chestdet.core.geometry import pairwise_iou
from chestdet.core.labels import CLASS_NAMES
from chestdet.evaluation.boxes import NO_BOXES, box_counts, group_boxes, mean_known

FROC_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
HIT, DUPLICATE, FALSE_POSITIVE, IGNORED = 1, 0, -1, 2


@dataclass
class FrocCurve:
    fps_per_image: np.ndarray  # one point per distinct score, descending scores
    sensitivity: np.ndarray
    thresholds: np.ndarray  # the score at each point
    at_rates: list[float | None]  # sensitivity at each of the settings' FP rates
    score: float | None  # mean of at_rates
    boxes: int
    hits: int
    false_positives: int
    duplicates: int
    ignored: int = 0  # detections on difficult boxes only


@dataclass
class FrocResult:
    fp_rates: tuple[float, ...]
    per_class: dict[str, FrocCurve]
    overall: FrocCurve


def label_froc_detections(
    gt_boxes: np.ndarray, det_boxes: np.ndarray, hit_iou: float, difficult: np.ndarray | None = None
) -> np.ndarray:
    """Mark each detection of one image and class HIT, DUPLICATE, FALSE_POSITIVE or IGNORED.

    Highest score first, a detection hits the not-yet-hit ordinary box it overlaps most at IoU >=
    hit_iou. One that reaches only ordinary boxes already hit is a DUPLICATE: the box counts once,
    and the extra detection is not a false positive either (the LUNA16 convention). One that reaches
    no ordinary box but a difficult one (`difficult` flags the boxes) is IGNORED, as PASCAL VOC
    ignores it. Boxes are (ymin, xmin, ymax, xmax); `det_boxes` must be sorted by descending score.
    """
    outcome = np.full(len(det_boxes), FALSE_POSITIVE, dtype=np.int8)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return outcome
    difficult = np.zeros(len(gt_boxes), dtype=bool) if difficult is None else np.asarray(difficult, dtype=bool)
    ious = pairwise_iou(det_boxes, gt_boxes)
    hit = np.zeros(len(gt_boxes), dtype=bool)
    for index, overlaps in enumerate(ious):
        reachable = overlaps >= hit_iou
        ordinary = reachable & ~difficult
        if not ordinary.any():
            if reachable.any():
                outcome[index] = IGNORED
            continue
        free = ordinary & ~hit
        if free.any():
            best = int(np.argmax(np.where(free, overlaps, -1.0)))
            hit[best] = True
            outcome[index] = HIT
        else:
            outcome[index] = DUPLICATE
    return outcome


def froc_outcomes(
    gt_groups: dict, det_groups: dict, name: str, hit_iou: float
) -> tuple[np.ndarray, np.ndarray, list]:
    """Scores, outcomes and images of one class's detections over all images."""
    scores, outcomes, images = [np.zeros(0)], [np.zeros(0, dtype=np.int8)], []
    for (image, label), found in det_groups.items():
        if label != name:
            continue
        truth = gt_groups.get((image, label), NO_BOXES)
        scores.append(found.scores)
        outcomes.append(label_froc_detections(truth.yxyx, found.yxyx, hit_iou, truth.difficult))
        images += [image] * len(found.scores)
    return np.concatenate(scores), np.concatenate(outcomes), images


def froc_curve(
    scores: np.ndarray, outcomes: np.ndarray, boxes: int, images: int, fp_rates: Sequence[float]
) -> FrocCurve:
    """Sensitivity against false positives per image as the score threshold falls.

    A point sits at each distinct score (tied detections enter together). The sensitivity at a
    rate is the highest one reached without exceeding that many false positives per image; the
    origin (no detection kept) is always reachable.
    """
    order = np.argsort(-scores, kind="mergesort")
    scores, outcomes = scores[order], outcomes[order]
    cum_hits = np.cumsum(outcomes == HIT)
    cum_fps = np.cumsum(outcomes == FALSE_POSITIVE)
    last_of_tie = np.r_[scores[1:] != scores[:-1], True] if scores.size else np.zeros(0, dtype=bool)
    fps_per_image = np.r_[0.0, cum_fps[last_of_tie] / images]
    hits = np.r_[0, cum_hits[last_of_tie]]
    sensitivity = hits / boxes if boxes else np.full(hits.shape, np.nan)
    at_rates: list[float | None] = []
    for rate in fp_rates:
        if not boxes:
            at_rates.append(None)
            continue
        reachable = fps_per_image <= rate + 1e-12
        at_rates.append(float(sensitivity[reachable].max()))
    return FrocCurve(
        fps_per_image=fps_per_image,
        sensitivity=sensitivity,
        thresholds=np.r_[np.inf, scores[last_of_tie]],
        at_rates=at_rates,
        score=mean_known(at_rates),
        boxes=boxes,
        hits=int(cum_hits[-1]) if cum_hits.size else 0,
        false_positives=int(cum_fps[-1]) if cum_fps.size else 0,
        duplicates=int(np.sum(outcomes == DUPLICATE)),
        ignored=int(np.sum(outcomes == IGNORED)),
    )


def froc(
    ground_truth: pd.DataFrame,
    detections: pd.DataFrame,
    images: Sequence[str],
    hit_iou: float = 0.5,
    fp_rates: Sequence[float] = FROC_FP_RATES,
    classes: Sequence[str] = CLASS_NAMES,
) -> FrocResult:
    """FROC per class and over all classes (class-aware matching, boxes and false positives pooled)."""
    per_class, all_scores, all_outcomes = {}, [], []
    counts = box_counts(ground_truth, classes)
    gt_groups, det_groups = group_boxes(ground_truth, by_label=True), group_boxes(detections, by_label=True)
    for name in classes:
        scores, outcomes, _ = froc_outcomes(gt_groups, det_groups, name, hit_iou)
        per_class[name] = froc_curve(scores, outcomes, counts[name], len(images), fp_rates)
        all_scores.append(scores)
        all_outcomes.append(outcomes)
    overall = froc_curve(
        np.concatenate(all_scores), np.concatenate(all_outcomes), sum(counts.values()), len(images), fp_rates
    )
    return FrocResult(fp_rates=tuple(fp_rates), per_class=per_class, overall=overall)
