"""Operating points: per class, the score threshold that gives 0.25, 0.5, 1 and 2 false positives per
image, and the one with the best F1, on the evaluated images, with the sensitivity each gives. They
come from the class's FROC curve, so a false positive and a hit mean what they mean there (a second
detection of a box hit already is neither). detection.thresholds writes and reads operating_points.json.

A point at a rate keeps the highest sensitivity reachable without exceeding that many false
positives per image, at the highest threshold that reaches it (no false positive is added that finds
nothing more). Best F1 is over the curve's points, precision counting hits against false positives.
A threshold keeps the detections scoring at least as much. Where a class has no box, or only keeping
nothing stays within a rate, the point's threshold is null (detect keeps its default for the class).

With bootstrap weights, each point carries the percentile intervals of the sensitivity and the false
positives per image that its threshold gives on the resampled patients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from chestdet.detection.thresholds import BEST_F1, FP_RATE_POINTS, OperatingPoint, OperatingPoints
from chestdet.evaluation.bootstrap import FrocOutcomes, froc_outcome_table, patient_weights
from chestdet.evaluation.froc import FALSE_POSITIVE, HIT, FrocCurve
from chestdet.evaluation.intervals import LEVEL, interval
from chestdet.evaluation.metrics import Metrics

UNREACHED = OperatingPoint(threshold=None)


def _point(curve: FrocCurve, k: int, images: int) -> OperatingPoint:
    """The curve's point k (k >= 1: the origin keeps nothing) as an operating point."""
    hits = curve.sensitivity[k] * curve.boxes
    false_positives = curve.fps_per_image[k] * images
    kept = hits + false_positives
    return OperatingPoint(threshold=float(curve.thresholds[k]), sensitivity=float(curve.sensitivity[k]),
                          fp_per_image=float(curve.fps_per_image[k]),
                          precision=float(hits / kept) if kept else None)


def at_rate(curve: FrocCurve, rate: float, images: int) -> OperatingPoint:
    """The threshold of the highest sensitivity within `rate` false positives per image (fewest FPs first)."""
    if not curve.boxes:
        return UNREACHED
    reachable = np.flatnonzero(curve.fps_per_image <= rate + 1e-12)
    best = curve.sensitivity[reachable].max()
    k = int(reachable[np.argmax(curve.sensitivity[reachable] >= best)])  # the first: the highest threshold
    return UNREACHED if k == 0 else _point(curve, k, images)


def best_f1(curve: FrocCurve, images: int) -> OperatingPoint:
    """The threshold of the best F1 over the curve's points (the highest threshold among ties)."""
    if not curve.boxes or len(curve.sensitivity) < 2:
        return UNREACHED
    hits = curve.sensitivity[1:] * curve.boxes
    false_positives = curve.fps_per_image[1:] * images
    f1 = np.where(hits > 0, 2 * hits / (2 * hits + false_positives + (curve.boxes - hits)), 0.0)
    if not (f1 > 0).any():
        return UNREACHED
    return _point(curve, int(np.argmax(f1)) + 1, images)


def class_points(curve: FrocCurve, images: int) -> dict[str, OperatingPoint]:
    """Every named point of one class, whose FROC curve is over `images` evaluated images."""
    points = {name: at_rate(curve, rate, images) for name, rate in FP_RATE_POINTS.items()}
    points[BEST_F1] = best_f1(curve, images)
    return points


def operating_points(metrics: Metrics, split: str = "", source: Mapping[str, str] | None = None) -> OperatingPoints:
    """Each class's operating points on the evaluated images."""
    return OperatingPoints({name: class_points(metrics.froc.per_class[name], metrics.images)
                            for name in metrics.settings.classes}, split, dict(source or {}))


def weighted_at_threshold(found: FrocOutcomes, threshold: float, weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """[replicates] sensitivity and false positives per image that keeping scores >= threshold gives."""
    kept = found.scores >= threshold
    images = weights.shape[1]
    hits = np.bincount(found.image[kept & (found.outcomes == HIT)], minlength=images).astype(np.float64)
    fps = np.bincount(found.image[kept & (found.outcomes == FALSE_POSITIVE)], minlength=images).astype(np.float64)
    boxes = weights @ found.boxes.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (weights @ hits) / boxes, (weights @ fps) / weights.sum(axis=1)


def with_intervals(
    points: OperatingPoints, ground_truth: pd.DataFrame, detections: pd.DataFrame, images: Sequence[str],
    patients: Sequence[str], replicates: int, seed: int, hit_iou: float, level: float = LEVEL,
) -> OperatingPoints:
    """`points` with, at each reached threshold, the bootstrap intervals of its sensitivity and false
    positives per image (patients resampled as the metrics' bootstrap resamples them)."""
    weights = patient_weights(patients, replicates, seed)
    table = froc_outcome_table(ground_truth, detections, images, hit_iou, list(points.classes))
    classes = {}
    for name, named in points.classes.items():
        classes[name] = {}
        for point_name, point in named.items():
            if point.threshold is not None:
                sensitivity, fp_rate = weighted_at_threshold(table[name], point.threshold, weights)
                point = replace(point, interval={"sensitivity": interval(sensitivity, level),
                                                 "fp_per_image": interval(fp_rate, level)})
            classes[name][point_name] = point
    return replace(points, classes=classes)
