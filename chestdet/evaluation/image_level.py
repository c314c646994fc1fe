"""Image-level sensitivity and specificity per class: is the finding on the film at all?"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from chestdet.core.labels import CLASS_NAMES
from chestdet.evaluation.boxes import difficult_flags, ratio


@dataclass(frozen=True)
class ImageLevel:
    true_positives: int
    false_positives: int
    true_negatives: int
    false_negatives: int
    sensitivity: float | None
    specificity: float | None
    ignored: int = 0  # images whose only boxes of the class are difficult: neither positive nor negative


def image_level_flags(
    ground_truth: pd.DataFrame, detections: pd.DataFrame, images: Sequence[str], score_threshold: float = 0.3,
    classes: Sequence[str] = CLASS_NAMES,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per class, three bool arrays over `images`: truly positive (an ordinary box of the class),
    predicted positive (a detection of the class above the threshold) and ignored (its only boxes of
    the class are difficult, so the image is neither positive nor negative for the class)."""
    kept = detections[detections["score"] > score_threshold]
    difficult = difficult_flags(ground_truth)
    index = pd.Index(images)
    result = {}
    for name in classes:
        of_class = (ground_truth["label"] == name).to_numpy()
        positive = index.isin(ground_truth.loc[of_class & ~difficult, "image"])
        ignored = index.isin(ground_truth.loc[of_class & difficult, "image"]) & ~positive
        predicted = index.isin(kept.loc[kept["label"] == name, "image"])
        result[name] = (positive, predicted, ignored)
    return result


def image_level(
    ground_truth: pd.DataFrame, detections: pd.DataFrame, images: Sequence[str], score_threshold: float = 0.3,
    classes: Sequence[str] = CLASS_NAMES,
) -> dict[str, ImageLevel]:
    """Per class: an image is truly positive when it has an ordinary box of the class, predicted
    positive when a detection of the class scores above the threshold; images whose only boxes of
    the class are difficult are left out of that class's counts."""
    result = {}
    for name, (positive, predicted, ignored) in image_level_flags(
        ground_truth, detections, images, score_threshold, classes
    ).items():
        counted = ~ignored
        tp = int(np.sum(positive & predicted & counted))
        fp = int(np.sum(~positive & predicted & counted))
        fn = int(np.sum(positive & ~predicted & counted))
        tn = int(np.sum(~positive & ~predicted & counted))
        result[name] = ImageLevel(tp, fp, tn, fn, ratio(tp, tp + fn), ratio(tn, tn + fp), int(ignored.sum()))
    return result
