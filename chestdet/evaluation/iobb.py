"""The ChestX-ray8 (Wang et al., CVPR 2017) localisation accuracy and average false positives at each
T(IoBB)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from chestdet.core.geometry import pairwise_iobb
from chestdet.core.labels import CLASS_NAMES
from chestdet.evaluation.boxes import NO_BOXES, box_counts, difficult_flags, group_boxes, ratio

IOBB_THRESHOLDS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True)
class IobbRow:
    accuracy: list[float | None]  # per T(IoBB); None where the class has no box
    # Wang et al.'s AFP: false positives on the images with boxes over the annotated image-finding
    # pairs (984 in NIH's list); None when no image has a box
    afp: list[float | None]
    fp_per_image: list[float]  # false positives on every evaluated image over the evaluated images
    boxes: int


@dataclass
class IobbResult:
    thresholds: tuple[float, ...]
    per_class: dict[str, IobbRow]


def iobb_localisation(
    ground_truth: pd.DataFrame,
    detections: pd.DataFrame,
    images: Sequence[str],
    thresholds: Sequence[float] = IOBB_THRESHOLDS,
    score_threshold: float = 0.3,
    classes: Sequence[str] = CLASS_NAMES,
) -> IobbResult:
    """Accuracy and average false positives at each T(IoBB), per class.

    With the detections of a class scoring above `score_threshold`: an ordinary ground-truth box is
    correctly localised when some detection of its class in its image has IoBB > T; accuracy is the
    share of the class's ordinary boxes correctly localised. A detection whose IoBB is <= T with
    every box of its class in its image is a false positive (one above T with a difficult box only
    is ignored). AFP, as Wang et al. count it, is the false positives on the images that have boxes
    over the number of annotated image-finding pairs (distinct image and class); `fp_per_image` is
    the false positives on every evaluated image over the number of evaluated images.
    """
    counts = box_counts(ground_truth, classes)
    gt_groups = group_boxes(ground_truth, by_label=True)
    det_groups = group_boxes(detections[detections["score"] > score_threshold], by_label=True)
    ordinary = ground_truth.loc[~difficult_flags(ground_truth)]
    boxed_images, findings = set(ordinary["image"]), len(ordinary[["image", "label"]].drop_duplicates())
    hits, false_positives, on_boxed = ({name: np.zeros(len(thresholds), dtype=np.int64) for name in classes}
                                       for _ in range(3))
    for key in set(gt_groups) | set(det_groups):
        image, name = key
        truth = gt_groups.get(key, NO_BOXES)
        iobb = pairwise_iobb(truth.yxyx, det_groups.get(key, NO_BOXES).yxyx)
        for t, threshold in enumerate(thresholds):
            correct = iobb > threshold
            hits[name][t] += int(correct[~truth.difficult].any(axis=1).sum())
            wrong = int((~correct.any(axis=0)).sum())
            false_positives[name][t] += wrong
            on_boxed[name][t] += wrong if image in boxed_images else 0
    per_class = {}
    for name in classes:
        per_class[name] = IobbRow(
            accuracy=[ratio(int(h), counts[name]) for h in hits[name]],
            afp=[ratio(int(fp), findings) for fp in on_boxed[name]],
            fp_per_image=[int(fp) / len(images) for fp in false_positives[name]],
            boxes=counts[name],
        )
    return IobbResult(thresholds=tuple(thresholds), per_class=per_class)
