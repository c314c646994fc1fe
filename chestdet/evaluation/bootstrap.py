"""Bootstrap confidence intervals that resample patients, not images.

Each replicate draws as many patients as were evaluated, with replacement, and weighs every image by
how many times its patient was drawn. The matching of detections to boxes within an image does not
depend on the other images, so it is done once: COCOeval's per-detection outcomes
(`CocoResult.matches`) and the outcomes of `froc` and `image_level` are reweighted per replicate with
matrix products, which is what makes 1,000 replicates cheap. With every weight 1 the functions here
give the point estimates exactly (tests check it against pycocotools).

The interval is the percentile interval: the 2.5th and 97.5th percentiles of the replicates (for
level 0.95), replicates where a figure is undefined (a class drawn without boxes) left out.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from chestdet.core.labels import CLASS_NAMES
from chestdet.evaluation.boxes import difficult_flags, group_boxes
from chestdet.evaluation.coco import COCO_EXTRA_IOU, ClassMatches
from chestdet.evaluation.froc import FALSE_POSITIVE, HIT, froc_outcomes
from chestdet.evaluation.image_level import image_level_flags
from chestdet.evaluation.intervals import LEVEL, BootstrapResult, interval
from chestdet.evaluation.metrics import EvaluationSettings, Metrics


def patient_weights(patients: Sequence[str], replicates: int, seed: int) -> np.ndarray:
    """[replicates, images] weights: how often each image's patient was drawn in each replicate."""
    codes, unique = pd.factorize(pd.Series(list(patients), dtype=object))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(unique), size=(replicates, len(unique)))
    counts = np.zeros((replicates, len(unique)), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(replicates), len(unique)), draws.ravel()), 1.0)
    return counts[:, codes]


# ---------------------------------------------------------------------------------------------
# COCO AP from COCOeval's per-detection outcomes


def weighted_ap(
    true_positive: np.ndarray, false_positive: np.ndarray, image: np.ndarray, boxes: np.ndarray,
    weights: np.ndarray, recall_thresholds: np.ndarray,
) -> np.ndarray:
    """[replicates] COCO AP at one IoU threshold, as COCOeval.accumulate computes it, per weighting.

    `true_positive`, `false_positive` and `image` run over the detections in accumulate's rank
    order, `boxes` counts the ordinary boxes per image. Precision is only needed where recall
    rises, at the true positives: the cumulative counts there are the weights times per-image counts
    of true and false positives ranked up to each of them. NaN where a weighting leaves no box.
    """
    images = weights.shape[1]
    npig = weights @ boxes.astype(np.float64)
    tp_rank = np.flatnonzero(true_positive)
    if not tp_rank.size:
        return np.where(npig > 0, 0.0, np.nan)
    tp_counts = np.zeros((images, tp_rank.size))
    tp_counts[image[tp_rank], np.arange(tp_rank.size)] = 1.0
    fp_rank = np.flatnonzero(false_positive)
    fp_counts = np.zeros((images, tp_rank.size + 1))
    np.add.at(fp_counts, (image[fp_rank], np.searchsorted(tp_rank, fp_rank, side="right")), 1.0)
    tp = weights @ np.cumsum(tp_counts, axis=1)
    fp = weights @ np.cumsum(fp_counts, axis=1)[:, : tp_rank.size]
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = tp / npig[:, None]
        precision = tp / (fp + tp + np.spacing(1))  # accumulate's formula
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    reached = np.searchsorted(recall_thresholds, np.nan_to_num(recall), side="right")  # thresholds <= recall
    gained = np.diff(reached, axis=1, prepend=0)
    ap = (envelope * gained).sum(axis=1) / len(recall_thresholds)
    return np.where(npig > 0, ap, np.nan)


def coco_replicates(
    matches: Mapping[str, ClassMatches], iou_thresholds: np.ndarray, recall_thresholds: np.ndarray,
    weights: np.ndarray,
) -> dict[str, dict[str, np.ndarray]]:
    """{class or "overall": {"ap", "ap50", "ap25": [replicates]}}, the classes those of `matches`; overall is
    the mean over the classes a replicate has boxes of, as COCOeval.summarize averages."""
    coco_range = [t for t, value in enumerate(iou_thresholds) if not np.isclose(value, COCO_EXTRA_IOU)]
    at50 = int(np.argmin(np.abs(iou_thresholds - 0.5)))
    at25 = int(np.argmin(np.abs(iou_thresholds - COCO_EXTRA_IOU)))
    result = {}
    for name, m in matches.items():
        per_t = {t: weighted_ap(m.true_positive[t], m.false_positive[t], m.image, m.boxes, weights,
                                recall_thresholds) for t in {*coco_range, at25}}
        result[name] = {"ap": np.mean([per_t[t] for t in coco_range], axis=0), "ap50": per_t[at50],
                        "ap25": per_t[at25]}
    with warnings.catch_warnings():  # a replicate without any box has no overall AP: NaN, left out
        warnings.simplefilter("ignore", RuntimeWarning)
        result["overall"] = {key: np.nanmean([result[name][key] for name in matches], axis=0)
                             for key in ("ap", "ap50", "ap25")}
    return result


# ---------------------------------------------------------------------------------------------
# FROC


@dataclass(frozen=True)
class FrocOutcomes:
    """One curve's detections (a class, or all pooled): what each is, its score and image."""

    scores: np.ndarray
    outcomes: np.ndarray  # froc.HIT, DUPLICATE, FALSE_POSITIVE or IGNORED
    image: np.ndarray  # index into the evaluated images
    boxes: np.ndarray  # [I] ordinary boxes per image


def froc_outcome_table(
    ground_truth: pd.DataFrame, detections: pd.DataFrame, images: Sequence[str], hit_iou: float,
    classes: Sequence[str] = CLASS_NAMES,
) -> dict[str, FrocOutcomes]:
    """{class or "overall": FrocOutcomes}, labelled by froc.label_froc_detections."""
    position = {image: k for k, image in enumerate(images)}
    gt_groups, det_groups = group_boxes(ground_truth, by_label=True), group_boxes(detections, by_label=True)
    ordinary = ground_truth[~difficult_flags(ground_truth)]
    table = {}
    for name in classes:
        scores, outcomes, names = froc_outcomes(gt_groups, det_groups, name, hit_iou)
        own = ordinary.loc[ordinary["label"] == name, "image"].map(position).to_numpy(dtype=np.int64)
        table[name] = FrocOutcomes(scores, outcomes, np.array([position[n] for n in names], dtype=np.int64),
                                   np.bincount(own, minlength=len(images)))
    table["overall"] = FrocOutcomes(
        *(np.concatenate([getattr(table[name], part) for name in classes]) for part in ("scores", "outcomes",
                                                                                       "image")),
        sum(table[name].boxes for name in classes),
    )
    return table


def weighted_froc(found: FrocOutcomes, weights: np.ndarray, fp_rates: Sequence[float]) -> np.ndarray:
    """[replicates, rates] sensitivity at each FP rate, as froc.froc_curve computes it, per weighting.

    A hit counts at a rate when the false positives scoring at least as high as it (ties enter
    together) stay within the rate times the replicate's images. NaN where a weighting leaves no box.
    """
    boxes = weights @ found.boxes.astype(np.float64)
    image_count = weights.sum(axis=1)
    hit = found.outcomes == HIT
    hit_order = np.argsort(-found.scores[hit], kind="mergesort")
    hit_scores, hit_images = found.scores[hit][hit_order], found.image[hit][hit_order]
    fp = found.outcomes == FALSE_POSITIVE
    # a false positive scoring s counts for every hit scoring <= s: those after the hits scoring more
    after = np.searchsorted(-hit_scores, -found.scores[fp], side="left")
    fp_counts = np.zeros((weights.shape[1], hit_scores.size + 1))
    np.add.at(fp_counts, (found.image[fp], after), 1.0)
    fps_at_hit = weights @ np.cumsum(fp_counts, axis=1)[:, : hit_scores.size]
    hit_weight = weights[:, hit_images]
    per_image = fps_at_hit / np.maximum(image_count, 1.0)[:, None]
    result = np.stack([(hit_weight * (per_image <= rate + 1e-12)).sum(axis=1) for rate in fp_rates], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(boxes[:, None] > 0, result / boxes[:, None], np.nan)


# ---------------------------------------------------------------------------------------------
# Image level


def weighted_image_level(
    flags: tuple[np.ndarray, np.ndarray, np.ndarray], weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """[replicates] sensitivity and specificity of one class from image_level.image_level_flags."""
    positive, predicted, ignored = flags
    counted = ~ignored

    def total(mask: np.ndarray) -> np.ndarray:
        return weights @ (mask & counted).astype(np.float64)

    tp, fn = total(positive & predicted), total(positive & ~predicted)
    tn, fp = total(~positive & ~predicted), total(~positive & predicted)
    with np.errstate(divide="ignore", invalid="ignore"):
        return tp / (tp + fn), tn / (tn + fp)


# ---------------------------------------------------------------------------------------------
# Putting it together


def bootstrap_metrics(
    metrics: Metrics,
    ground_truth: pd.DataFrame,
    detections: pd.DataFrame,
    images: Sequence[str],
    patients: Sequence[str],
    replicates: int = 1000,
    seed: int = 0,
    settings: EvaluationSettings | None = None,
    level: float = LEVEL,
) -> BootstrapResult:
    """Percentile intervals of AP@[.5:.95], AP@0.5, AP@0.25, the FROC sensitivities and score, and
    image-level sensitivity and specificity, per class and overall; `patients[k]` is images[k]'s."""
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    if len(patients) != len(images):
        raise ValueError(f"{len(patients)} patients for {len(images)} images")
    settings = settings or metrics.settings
    weights = patient_weights(patients, replicates, seed)
    coco = coco_replicates(metrics.coco.matches, metrics.coco.iou_thresholds, metrics.coco.recall_thresholds,
                           weights)
    coco_block = {
        "overall": {key: interval(values, level) for key, values in coco["overall"].items()},
        "per_class": {name: {key: interval(values, level) for key, values in coco[name].items()}
                      for name in metrics.coco.matches},
    }
    froc_block = {}
    for name, found in froc_outcome_table(ground_truth, detections, images, settings.hit_iou,
                                          metrics.settings.classes).items():
        sensitivity = weighted_froc(found, weights, settings.fp_rates)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            score = np.mean(sensitivity, axis=1)
        froc_block[name] = {"sensitivity": [interval(sensitivity[:, k], level) for k in range(sensitivity.shape[1])],
                            "score": interval(score, level)}
    image_block = {}
    for name, flags in image_level_flags(ground_truth, detections, images, settings.score_threshold,
                                         metrics.settings.classes).items():
        sensitivity, specificity = weighted_image_level(flags, weights)
        image_block[name] = {"sensitivity": interval(sensitivity, level), "specificity": interval(specificity, level)}
    return BootstrapResult(
        replicates=replicates, seed=seed, level=level, patients=len(set(patients)), coco=coco_block,
        froc={"fp_per_image": list(settings.fp_rates), "overall": froc_block.pop("overall"), "per_class": froc_block},
        image_level=image_block,
    )
