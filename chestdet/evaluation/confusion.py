"""The confusion matrix: class-agnostic one-to-one matching per image, with a background row and column."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from chestdet.core.geometry import pairwise_iou
from chestdet.core.labels import CLASS_NAMES
from chestdet.evaluation.boxes import NO_BOXES, group_boxes

BACKGROUND = "background"


@dataclass
class ConfusionMatrix:
    """Rows: ground-truth class, columns: predicted class; the last of each is background."""

    labels: list[str]
    matrix: np.ndarray


def match_greedy(ious: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs with IoU >= min_iou, highest IoU first."""
    rows, cols = np.nonzero(ious >= min_iou)
    order = np.argsort(-ious[rows, cols], kind="mergesort")
    used_rows, used_cols, pairs = set(), set(), []
    for row, col in zip(rows[order], cols[order], strict=True):
        if row in used_rows or col in used_cols:
            continue
        used_rows.add(row)
        used_cols.add(col)
        pairs.append((int(row), int(col)))
    return pairs


def confusion_matrix(
    ground_truth: pd.DataFrame,
    detections: pd.DataFrame,
    images: Sequence[str],
    score_threshold: float = 0.3,
    min_iou: float = 0.5,
    classes: Sequence[str] = CLASS_NAMES,
) -> ConfusionMatrix:
    """Class-agnostic one-to-one matching per image at IoU >= min_iou, highest IoU first.

    A matched pair adds to [true class, predicted class]; an unmatched box to [true class,
    background] (missed); an unmatched detection above the threshold to [background, predicted
    class]. Difficult boxes take part in the matching, but neither a pair with one nor an unmatched
    one is counted. [background, background] stays 0: nothing is counted there, so images with
    neither boxes nor detections (`images` takes them for symmetry with the other metrics) add nothing.
    """
    labels = [*classes, BACKGROUND]
    index = {name: k for k, name in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    gt_groups = group_boxes(ground_truth)
    det_groups = group_boxes(detections[detections["score"] > score_threshold])
    background = index[BACKGROUND]
    for image in set(gt_groups) | set(det_groups):
        truth, found = gt_groups.get(image, NO_BOXES), det_groups.get(image, NO_BOXES)
        pairs = match_greedy(pairwise_iou(truth.yxyx, found.yxyx), min_iou)
        gt_labels, det_labels = list(truth.labels), list(found.labels)
        for g, d in pairs:
            if not truth.difficult[g]:
                matrix[index[gt_labels[g]], index[det_labels[d]]] += 1
        matched_gt, matched_det = {g for g, _ in pairs}, {d for _, d in pairs}
        for g, label in enumerate(gt_labels):
            if g not in matched_gt and not truth.difficult[g]:
                matrix[index[label], background] += 1
        for d, label in enumerate(det_labels):
            if d not in matched_det:
                matrix[background, index[label]] += 1
    return ConfusionMatrix(labels=labels, matrix=matrix)
