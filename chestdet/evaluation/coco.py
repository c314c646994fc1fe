"""COCO AP through pycocotools' COCOeval, never re-implemented, and its per-detection outcomes
(what the bootstrap reweighs)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from chestdet.core.labels import CLASS_NAMES
from chestdet.evaluation.boxes import difficult_flags

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # what COCOeval's setDetParams uses
COCO_EXTRA_IOU = 0.25
COCO_MAX_DETECTIONS = 100


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


def _coco_image_ids(images: Sequence[str]) -> dict[str, int]:
    return {image: index for index, image in enumerate(images, start=1)}


def _xywh(row: pd.Series) -> list[float]:
    return [float(row.xmin), float(row.ymin), float(row.xmax - row.xmin), float(row.ymax - row.ymin)]


def category_ids(classes: Sequence[str]) -> dict[str, int]:
    """COCO category ids: the label map's ids (1..N in the classes' order)."""
    return {name: number for number, name in enumerate(classes, start=1)}


def coco_ground_truth(ground_truth: pd.DataFrame, images: Sequence[str], classes: Sequence[str] = CLASS_NAMES) -> dict:
    """A COCO-format dataset dict: every evaluated image, a category per class (the label map's id), the
    boxes (difficult ones as crowd regions)."""
    ids, class_id = _coco_image_ids(images), category_ids(classes)
    annotations = []
    difficult = difficult_flags(ground_truth)
    for number, (row, hard) in enumerate(zip(ground_truth.itertuples(index=False), difficult, strict=True), start=1):
        bbox = _xywh(row)
        annotations.append(
            {
                "id": number,
                "image_id": ids[row.image],
                "category_id": class_id[row.label],
                "bbox": bbox,
                "area": bbox[2] * bbox[3],
                # COCOeval replaces any "ignore" flag by iscrowd, so a difficult box must be a crowd
                # region to be ignored (see coco_average_precision)
                "iscrowd": int(hard),
            }
        )
    return {
        "images": [{"id": ids[image], "file_name": image} for image in images],
        "categories": [{"id": class_id[name], "name": name} for name in classes],
        "annotations": annotations,
    }


def coco_results(detections: pd.DataFrame, images: Sequence[str], classes: Sequence[str] = CLASS_NAMES) -> list[dict]:
    """Detections in COCO's results format."""
    ids, class_id = _coco_image_ids(images), category_ids(classes)
    return [
        {
            "image_id": ids[row.image],
            "category_id": class_id[row.label],
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
    ground_truth: pd.DataFrame, detections: pd.DataFrame, images: Sequence[str], classes: Sequence[str] = CLASS_NAMES
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
        coco_ground_truth(ground_truth, images, classes), coco_results(detections, images, classes), thresholds
    )
    # precision: [T thresholds, R recall points, K categories, A area ranges, M max-detections]
    precision = evaluator.eval["precision"][:, :, :, 0, evaluator.params.maxDets.index(COCO_MAX_DETECTIONS)]
    cat_index = {cat: k for k, cat in enumerate(evaluator.params.catIds)}
    column = {name: cat_index[number] for name, number in category_ids(classes).items()}
    at25, at50, coco_range = precision[0], precision[1], precision[1:]

    def summary(k: slice | int) -> ClassAP:
        return ClassAP(
            ap=_mean_precision(coco_range[:, :, k]),
            ap50=_mean_precision(at50[:, k]),
            ap25=_mean_precision(at25[:, k]),
        )

    return CocoResult(
        overall=summary(slice(None)),
        per_class={name: summary(k) for name, k in column.items()},
        recall_thresholds=np.asarray(evaluator.params.recThrs),
        precision50={name: at50[:, k].copy() for name, k in column.items()},
        precision25={name: at25[:, k].copy() for name, k in column.items()},
        iou_thresholds=np.asarray(evaluator.params.iouThrs),
        matches={name: class_matches(evaluator, k, len(images)) for name, k in column.items()},
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
