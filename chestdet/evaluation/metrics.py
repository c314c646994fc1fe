"""Detection metrics as pure functions over tables of boxes; each returns a dataclass, none plots.

Inputs share one shape: `ground_truth` is a DataFrame with columns `image, label, xmin, ymin, xmax,
ymax` (pixels) and optionally `difficult` (bool), `detections` the same plus `score`, and `images`
names every evaluated image (so images without boxes or without detections count). `image` is any
key the two tables share. Difficult boxes are ignored as PASCAL VOC ignores them: a detection on one
is neither a hit nor a false positive, and missing one is no miss.

- COCO AP comes from pycocotools' COCOeval, never re-implemented.
- FROC, the ChestX-ray8 T(IoBB) accuracy, image-level sensitivity/specificity and the confusion
  matrix are matching rules on top of the OD API's `np_box_ops` overlaps; docs/evaluate.md states
  each rule.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from chestdet.core.geometry import pairwise_iobb, pairwise_iou
from chestdet.core.labels import CLASS_NAMES, class_id

BOX_COLUMNS = ["xmin", "ymin", "xmax", "ymax"]
GROUND_TRUTH_COLUMNS = ["image", "label", *BOX_COLUMNS]
DIFFICULT = "difficult"  # optional ground-truth column
DETECTION_COLUMNS = ["image", "label", "score", *BOX_COLUMNS]
BACKGROUND = "background"

FROC_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
IOBB_THRESHOLDS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # what COCOeval's setDetParams uses
COCO_EXTRA_IOU = 0.25
COCO_MAX_DETECTIONS = 100


@dataclass(frozen=True)
class EvaluationSettings:
    score_threshold: float = 0.3  # T(IoBB), image-level and confusion matrix use boxes scoring above it
    hit_iou: float = 0.5  # FROC: a detection hits a box at IoU >= this
    confusion_iou: float = 0.5
    fp_rates: tuple[float, ...] = FROC_FP_RATES
    iobb_thresholds: tuple[float, ...] = IOBB_THRESHOLDS

    def __post_init__(self) -> None:
        for name in ("score_threshold", "hit_iou", "confusion_iou"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {value}")
        if not self.fp_rates or any(rate <= 0 for rate in self.fp_rates):
            raise ValueError(f"fp_rates must be positive numbers, got {self.fp_rates}")


@dataclass(frozen=True)
class ClassAP:
    """AP@[.5:.95], AP@0.5, AP@0.25; None where the class has no ground-truth box."""

    ap: float | None
    ap50: float | None
    ap25: float | None


@dataclass(frozen=True)
class ClassMatches:
    """COCOeval's per-detection outcome for one class, in the order its accumulate() ranks them.

    Enough to recompute AP for any weighting of the images (the bootstrap) without matching again.
    """

    image: np.ndarray  # [D] index into the evaluated images of each detection, highest score first
    true_positive: np.ndarray  # [T, D] matched an ordinary box at threshold t
    false_positive: np.ndarray  # [T, D] matched nothing (detections on difficult boxes are neither)
    boxes: np.ndarray  # [I] ordinary (not ignored) boxes of the class per image


@dataclass
class CocoResult:
    overall: ClassAP
    per_class: dict[str, ClassAP]
    recall_thresholds: np.ndarray  # COCOeval's 101 recall points
    precision50: dict[str, np.ndarray]  # interpolated precision at IoU 0.5, per class (-1: no boxes)
    precision25: dict[str, np.ndarray]
    iou_thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0))  # rows of ClassMatches
    matches: dict[str, ClassMatches] = field(default_factory=dict)


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


@dataclass(frozen=True)
class ImageLevel:
    true_positives: int
    false_positives: int
    true_negatives: int
    false_negatives: int
    sensitivity: float | None
    specificity: float | None
    ignored: int = 0  # images whose only boxes of the class are difficult: neither positive nor negative


@dataclass
class ConfusionMatrix:
    """Rows: ground-truth class, columns: predicted class; the last of each is background."""

    labels: list[str]
    matrix: np.ndarray


BOOTSTRAP_UNIT = "patient"


@dataclass
class BootstrapResult:
    replicates: int
    seed: int
    level: float
    patients: int  # distinct patients resampled (the report says it; metrics.json has the images)
    coco: dict  # mirrors metrics.json's "coco" block with [low, high] for each figure
    froc: dict
    image_level: dict

    def to_dict(self) -> dict:
        """metrics.json's "bootstrap" block."""
        return {
            "replicates": self.replicates,
            "seed": self.seed,
            "level": self.level,
            "unit": BOOTSTRAP_UNIT,
            "coco": self.coco,
            "froc": self.froc,
            "image_level": self.image_level,
        }


@dataclass
class Metrics:
    settings: EvaluationSettings
    images: int
    images_with_boxes: int
    boxes: dict[str, int]
    detections: int
    coco: CocoResult
    froc: FrocResult
    iobb: IobbResult
    image_level: dict[str, ImageLevel]
    confusion: ConfusionMatrix
    notes: list[str] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)  # difficult boxes per class, ignored
    bootstrap: BootstrapResult | None = None

    def to_dict(self) -> dict:
        """Plain JSON-ready data: what metrics.json holds."""
        data = self._point_estimates()
        if self.bootstrap is not None:
            data["bootstrap"] = self.bootstrap.to_dict()
        return data

    def _point_estimates(self) -> dict:
        return {
            "settings": {**asdict(self.settings), "coco_max_detections": COCO_MAX_DETECTIONS},
            "images": self.images,
            "images_with_boxes": self.images_with_boxes,
            "boxes": self.boxes,
            "ignored_boxes": self.ignored or dict.fromkeys(CLASS_NAMES, 0),
            "detections": self.detections,
            "coco": {
                "overall": asdict(self.coco.overall),
                "per_class": {name: asdict(row) for name, row in self.coco.per_class.items()},
            },
            "froc": {
                "fp_per_image": list(self.froc.fp_rates),
                "overall": _froc_summary(self.froc.overall),
                "per_class": {name: _froc_summary(curve) for name, curve in self.froc.per_class.items()},
            },
            "iobb": {
                "thresholds": list(self.iobb.thresholds),
                "per_class": {name: asdict(row) for name, row in self.iobb.per_class.items()},
            },
            "image_level": {name: asdict(row) for name, row in self.image_level.items()},
            "confusion_matrix": {
                "rows": "ground truth",
                "columns": "prediction",
                "labels": self.confusion.labels,
                "matrix": self.confusion.matrix.tolist(),
            },
            "notes": self.notes,
        }


def _froc_summary(curve: FrocCurve) -> dict:
    return {
        "sensitivity": curve.at_rates,
        "score": curve.score,
        "boxes": curve.boxes,
        "hits": curve.hits,
        "false_positives": curve.false_positives,
        "duplicates": curve.duplicates,
        "ignored": curve.ignored,
    }


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _mean(values: Iterable[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return sum(known) / len(known) if known else None


# ---------------------------------------------------------------------------------------------
# Box tables


@dataclass(frozen=True)
class BoxArrays:
    """One group of boxes as arrays; detections come highest score first."""

    yxyx: np.ndarray  # [N, 4] in the OD API's (ymin, xmin, ymax, xmax) order
    scores: np.ndarray  # [N]; zeros for ground truth
    labels: np.ndarray  # [N] class names
    difficult: np.ndarray  # [N] bool; all False for detections


NO_BOXES = BoxArrays(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=object), np.zeros(0, dtype=bool))


def difficult_flags(frame: pd.DataFrame) -> np.ndarray:
    """The `difficult` column as bools; all False when the table has none (detections, older tables)."""
    if DIFFICULT not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return frame[DIFFICULT].fillna(False).to_numpy(dtype=bool)


def group_boxes(frame: pd.DataFrame, by_label: bool = False) -> dict:
    """{image: BoxArrays}, or {(image, label): BoxArrays} with by_label; detections sorted by score."""
    if "score" in frame.columns:
        frame = frame.sort_values("score", ascending=False, kind="mergesort")
    yxyx = frame[["ymin", "xmin", "ymax", "xmax"]].to_numpy(dtype=np.float64).reshape(-1, 4)
    scores = frame["score"].to_numpy(dtype=np.float64) if "score" in frame.columns else np.zeros(len(frame))
    labels = frame["label"].to_numpy(dtype=object)
    difficult = difficult_flags(frame)
    if frame.empty:
        return {}
    keys = ["image", "label"] if by_label else "image"
    groups = frame.groupby(keys, sort=False).indices  # positions, in the (sorted) frame's order
    return {
        key: BoxArrays(yxyx[rows], scores[rows], labels[rows], difficult[rows]) for key, rows in groups.items()
    }


def box_counts(ground_truth: pd.DataFrame) -> dict[str, int]:
    """Boxes per class that count (difficult boxes are ignored)."""
    counts = ground_truth.loc[~difficult_flags(ground_truth), "label"].value_counts()
    return {name: int(counts.get(name, 0)) for name in CLASS_NAMES}


def ignored_counts(ground_truth: pd.DataFrame) -> dict[str, int]:
    """Difficult boxes per class."""
    counts = ground_truth.loc[difficult_flags(ground_truth), "label"].value_counts()
    return {name: int(counts.get(name, 0)) for name in CLASS_NAMES}


# ---------------------------------------------------------------------------------------------
# COCO AP through pycocotools


def _coco_image_ids(images: Sequence[str]) -> dict[str, int]:
    return {image: index for index, image in enumerate(images, start=1)}


def _xywh(row: pd.Series) -> list[float]:
    return [float(row.xmin), float(row.ymin), float(row.xmax - row.xmin), float(row.ymax - row.ymin)]


def coco_ground_truth(ground_truth: pd.DataFrame, images: Sequence[str]) -> dict:
    """A COCO-format dataset dict: every evaluated image, the 8 categories, the boxes (difficult ones
    as crowd regions)."""
    ids = _coco_image_ids(images)
    annotations = []
    difficult = difficult_flags(ground_truth)
    for number, (row, hard) in enumerate(zip(ground_truth.itertuples(index=False), difficult, strict=True), start=1):
        bbox = _xywh(row)
        annotations.append(
            {
                "id": number,
                "image_id": ids[row.image],
                "category_id": class_id(row.label),
                "bbox": bbox,
                "area": bbox[2] * bbox[3],
                # COCOeval replaces any "ignore" flag by iscrowd, so a difficult box must be a crowd
                # region to be ignored (see coco_average_precision)
                "iscrowd": int(hard),
            }
        )
    return {
        "images": [{"id": ids[image], "file_name": image} for image in images],
        "categories": [{"id": class_id(name), "name": name} for name in CLASS_NAMES],
        "annotations": annotations,
    }


def coco_results(detections: pd.DataFrame, images: Sequence[str]) -> list[dict]:
    """Detections in COCO's results format."""
    ids = _coco_image_ids(images)
    return [
        {
            "image_id": ids[row.image],
            "category_id": class_id(row.label),
            "bbox": _xywh(row),
            "score": float(row.score),
        }
        for row in detections.itertuples(index=False)
    ]


def run_cocoeval(gt_dataset: dict, results: list[dict], iou_thresholds: Sequence[float] | None = None):
    """COCOeval (bbox) evaluate + accumulate with its console output swallowed; returns the COCOeval."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_dataset
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes cannot take an empty list; an empty result set is a COCO with no annotations
            coco_dt = COCO()
            coco_dt.dataset = {**gt_dataset, "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if iou_thresholds is not None:
            evaluator.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def _mean_precision(precision: np.ndarray) -> float | None:
    """COCOeval.summarize's rule: the mean of the entries that are not -1 (no ground truth)."""
    valid = precision[precision > -1]
    return float(np.mean(valid)) if valid.size else None


def coco_average_precision(
    ground_truth: pd.DataFrame, detections: pd.DataFrame, images: Sequence[str]
) -> CocoResult:
    """AP@[.5:.95], AP@0.5 and AP@0.25, overall and per class, from one COCOeval run.

    COCOeval matches every IoU threshold independently, so adding 0.25 to its ten thresholds leaves
    the others' results unchanged; the summaries are taken exactly as COCOeval.summarize takes them
    (area "all", 100 detections per image).

    Difficult boxes go in as crowd regions, COCOeval's only way to ignore a box (it overwrites an
    `ignore` flag with `iscrowd`). A detection that matches no ordinary box but covers a crowd region
    by intersection over the detection's own area >= the threshold is then ignored, however many
    detections do so, and the region is never a miss.
    """
    thresholds = np.concatenate([[COCO_EXTRA_IOU], COCO_IOU_THRESHOLDS])
    evaluator = run_cocoeval(
        coco_ground_truth(ground_truth, images), coco_results(detections, images), thresholds
    )
    # precision: [T thresholds, R recall points, K categories, A area ranges, M max-detections]
    precision = evaluator.eval["precision"][:, :, :, 0, evaluator.params.maxDets.index(COCO_MAX_DETECTIONS)]
    cat_index = {cat: k for k, cat in enumerate(evaluator.params.catIds)}
    at25, at50, coco_range = precision[0], precision[1], precision[1:]

    def summary(k: slice | int) -> ClassAP:
        return ClassAP(
            ap=_mean_precision(coco_range[:, :, k]),
            ap50=_mean_precision(at50[:, k]),
            ap25=_mean_precision(at25[:, k]),
        )

    per_class = {name: summary(cat_index[class_id(name)]) for name in CLASS_NAMES}
    return CocoResult(
        overall=summary(slice(None)),
        per_class=per_class,
        recall_thresholds=np.asarray(evaluator.params.recThrs),
        precision50={name: at50[:, cat_index[class_id(name)]].copy() for name in CLASS_NAMES},
        precision25={name: at25[:, cat_index[class_id(name)]].copy() for name in CLASS_NAMES},
        iou_thresholds=np.asarray(evaluator.params.iouThrs),
        matches={name: class_matches(evaluator, cat_index[class_id(name)], len(images)) for name in CLASS_NAMES},
    )


def class_matches(evaluator, k: int, images: int) -> ClassMatches:  # noqa: ANN001
    """One category's detections as COCOeval.accumulate ranks them (area "all", 100 per image)."""
    max_det = COCO_MAX_DETECTIONS
    per_area = len(evaluator.params.areaRng) * len(evaluator.params.imgIds)
    entries = evaluator.evalImgs[k * per_area: k * per_area + len(evaluator.params.imgIds)]  # area "all"
    thresholds = len(evaluator.params.iouThrs)
    boxes = np.zeros(images, dtype=np.int64)
    image, scores, matched, ignored = [np.zeros(0, dtype=np.int64)], [np.zeros(0)], [], []
    for index, entry in enumerate(entries):
        if entry is None:
            continue
        boxes[index] = int(np.count_nonzero(np.asarray(entry["gtIgnore"]) == 0))
        count = len(entry["dtScores"][:max_det])
        image.append(np.full(count, index, dtype=np.int64))
        scores.append(np.asarray(entry["dtScores"][:max_det], dtype=np.float64))
        matched.append(np.asarray(entry["dtMatches"])[:, :max_det].reshape(thresholds, count))
        ignored.append(np.asarray(entry["dtIgnore"])[:, :max_det].reshape(thresholds, count))
    order = np.argsort(-np.concatenate(scores), kind="mergesort")  # accumulate's ranking
    matched_all = np.concatenate([np.zeros((thresholds, 0)), *matched], axis=1)[:, order] != 0
    ignored_all = np.concatenate([np.zeros((thresholds, 0)), *ignored], axis=1)[:, order] != 0
    return ClassMatches(
        image=np.concatenate(image)[order],
        true_positive=matched_all & ~ignored_all,
        false_positive=~matched_all & ~ignored_all,
        boxes=boxes,
    )


# ---------------------------------------------------------------------------------------------
# FROC

HIT, DUPLICATE, FALSE_POSITIVE, IGNORED = 1, 0, -1, 2


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
        score=_mean(at_rates),
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
) -> FrocResult:
    """FROC per class and over all classes (class-aware matching, boxes and false positives pooled)."""
    per_class, all_scores, all_outcomes = {}, [], []
    counts = box_counts(ground_truth)
    gt_groups, det_groups = group_boxes(ground_truth, by_label=True), group_boxes(detections, by_label=True)
    for name in CLASS_NAMES:
        scores, outcomes, _ = froc_outcomes(gt_groups, det_groups, name, hit_iou)
        per_class[name] = froc_curve(scores, outcomes, counts[name], len(images), fp_rates)
        all_scores.append(scores)
        all_outcomes.append(outcomes)
    overall = froc_curve(
        np.concatenate(all_scores), np.concatenate(all_outcomes), sum(counts.values()), len(images), fp_rates
    )
    return FrocResult(fp_rates=tuple(fp_rates), per_class=per_class, overall=overall)


# ---------------------------------------------------------------------------------------------
# ChestX-ray8 (Wang et al., CVPR 2017) localisation accuracy


def iobb_localisation(
    ground_truth: pd.DataFrame,
    detections: pd.DataFrame,
    images: Sequence[str],
    thresholds: Sequence[float] = IOBB_THRESHOLDS,
    score_threshold: float = 0.3,
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
    counts = box_counts(ground_truth)
    gt_groups = group_boxes(ground_truth, by_label=True)
    det_groups = group_boxes(detections[detections["score"] > score_threshold], by_label=True)
    ordinary = ground_truth.loc[~difficult_flags(ground_truth)]
    boxed_images, findings = set(ordinary["image"]), len(ordinary[["image", "label"]].drop_duplicates())
    hits, false_positives, on_boxed = ({name: np.zeros(len(thresholds), dtype=np.int64) for name in CLASS_NAMES}
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
    for name in CLASS_NAMES:
        per_class[name] = IobbRow(
            accuracy=[_ratio(int(h), counts[name]) for h in hits[name]],
            afp=[_ratio(int(fp), findings) for fp in on_boxed[name]],
            fp_per_image=[int(fp) / len(images) for fp in false_positives[name]],
            boxes=counts[name],
        )
    return IobbResult(thresholds=tuple(thresholds), per_class=per_class)


# ---------------------------------------------------------------------------------------------
# Image level and confusion matrix


def image_level_flags(
    ground_truth: pd.DataFrame, detections: pd.DataFrame, images: Sequence[str], score_threshold: float = 0.3
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per class, three bool arrays over `images`: truly positive (an ordinary box of the class),
    predicted positive (a detection of the class above the threshold) and ignored (its only boxes of
    the class are difficult, so the image is neither positive nor negative for the class)."""
    kept = detections[detections["score"] > score_threshold]
    difficult = difficult_flags(ground_truth)
    index = pd.Index(images)
    result = {}
    for name in CLASS_NAMES:
        of_class = (ground_truth["label"] == name).to_numpy()
        positive = index.isin(ground_truth.loc[of_class & ~difficult, "image"])
        ignored = index.isin(ground_truth.loc[of_class & difficult, "image"]) & ~positive
        predicted = index.isin(kept.loc[kept["label"] == name, "image"])
        result[name] = (positive, predicted, ignored)
    return result


def image_level(
    ground_truth: pd.DataFrame, detections: pd.DataFrame, images: Sequence[str], score_threshold: float = 0.3
) -> dict[str, ImageLevel]:
    """Per class: an image is truly positive when it has an ordinary box of the class, predicted
    positive when a detection of the class scores above the threshold; images whose only boxes of
    the class are difficult are left out of that class's counts."""
    result = {}
    for name, (positive, predicted, ignored) in image_level_flags(
        ground_truth, detections, images, score_threshold
    ).items():
        counted = ~ignored
        tp = int(np.sum(positive & predicted & counted))
        fp = int(np.sum(~positive & predicted & counted))
        fn = int(np.sum(positive & ~predicted & counted))
        tn = int(np.sum(~positive & ~predicted & counted))
        result[name] = ImageLevel(tp, fp, tn, fn, _ratio(tp, tp + fn), _ratio(tn, tn + fp), int(ignored.sum()))
    return result


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
) -> ConfusionMatrix:
    """Class-agnostic one-to-one matching per image at IoU >= min_iou, highest IoU first.

    A matched pair adds to [true class, predicted class]; an unmatched box to [true class,
    background] (missed); an unmatched detection above the threshold to [background, predicted
    class]. Difficult boxes take part in the matching, but neither a pair with one nor an unmatched
    one is counted. [background, background] stays 0: nothing is counted there, so images with
    neither boxes nor detections (`images` takes them for symmetry with the other metrics) add nothing.
    """
    labels = [*CLASS_NAMES, BACKGROUND]
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


# ---------------------------------------------------------------------------------------------


def _check_tables(ground_truth: pd.DataFrame, detections: pd.DataFrame, images: Sequence[str]) -> None:
    for frame, columns, what in (
        (ground_truth, GROUND_TRUTH_COLUMNS, "ground truth"),
        (detections, DETECTION_COLUMNS, "detections"),
    ):
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            raise ValueError(f"{what} table lacks columns {missing}")
        unknown = set(frame["label"]) - set(CLASS_NAMES)
        if unknown:
            raise ValueError(f"{what} table has labels outside CLASS_NAMES: {sorted(unknown)}")
        outside = set(frame["image"]) - set(images)
        if outside:
            raise ValueError(f"{what} table names {len(outside)} images not in `images`, e.g. {min(outside)}")
    if not images:
        raise ValueError("no images to evaluate")
    if len(set(images)) != len(images):
        raise ValueError("`images` lists an image twice")
    if detections["score"].isna().any() or not np.isfinite(detections["score"].to_numpy(float)).all():
        raise ValueError("detections table has scores that are not finite numbers")


def compute_metrics(
    ground_truth: pd.DataFrame,
    detections: pd.DataFrame,
    images: Sequence[str],
    settings: EvaluationSettings | None = None,
) -> Metrics:
    """Every metric of the report over one evaluated image set."""
    settings = settings or EvaluationSettings()
    images = [str(image) for image in images]
    _check_tables(ground_truth, detections, images)
    return Metrics(
        settings=settings,
        images=len(images),
        images_with_boxes=int(ground_truth.loc[~difficult_flags(ground_truth), "image"].nunique()),
        boxes=box_counts(ground_truth),
        ignored=ignored_counts(ground_truth),
        detections=len(detections),
        coco=coco_average_precision(ground_truth, detections, images),
        froc=froc(ground_truth, detections, images, settings.hit_iou, settings.fp_rates),
        iobb=iobb_localisation(
            ground_truth, detections, images, settings.iobb_thresholds, settings.score_threshold
        ),
        image_level=image_level(ground_truth, detections, images, settings.score_threshold),
        confusion=confusion_matrix(
            ground_truth, detections, images, settings.score_threshold, settings.confusion_iou
        ),
    )



# ---------------------------------------------------------------------------------------------
# Agreement between two backends' detections


