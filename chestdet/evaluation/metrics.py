"""Every metric of one evaluation, as pure functions over tables of boxes gathered in one dataclass;
nothing here plots.

Inputs share one shape (chestdet.evaluation.boxes): a ground-truth table, a detections table and
`images`, every evaluated image (so images without boxes or without detections count). Difficult
boxes are ignored as PASCAL VOC ignores them: a detection on one is neither a hit nor a false
positive, and missing one is no miss.

- COCO AP comes from pycocotools' COCOeval, never re-implemented (coco).
- FROC (froc), the ChestX-ray8 T(IoBB) accuracy (iobb), image-level sensitivity/specificity
  (image_level) and the confusion matrix (confusion) are matching rules on top of the OD API's
  `np_box_ops` overlaps; docs/evaluate.md states each rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from chestdet.core import atomic
from chestdet.core.labels import CLASS_NAMES
from chestdet.evaluation.boxes import box_counts, check_tables, difficult_flags, ignored_counts
from chestdet.evaluation.coco import COCO_MAX_DETECTIONS, CocoResult, coco_average_precision
from chestdet.evaluation.confusion import BACKGROUND, ConfusionMatrix, confusion_matrix
from chestdet.evaluation.froc import FROC_FP_RATES, FrocCurve, FrocResult, froc
from chestdet.evaluation.image_level import ImageLevel, image_level
from chestdet.evaluation.intervals import BootstrapResult
from chestdet.evaluation.iobb import IOBB_THRESHOLDS, IobbResult, iobb_localisation

# Rows and keys the metrics add beside the classes' own ("all" classes, bootstrap's "overall", the
# confusion matrix's background).
RESERVED_NAMES = {"all", "overall", BACKGROUND}


@dataclass(frozen=True)
class EvaluationSettings:
    score_threshold: float = 0.3  # T(IoBB), image-level and confusion matrix use boxes scoring above it
    hit_iou: float = 0.5  # FROC: a detection hits a box at IoU >= this
    confusion_iou: float = 0.5
    fp_rates: tuple[float, ...] = FROC_FP_RATES
    iobb_thresholds: tuple[float, ...] = IOBB_THRESHOLDS
    # The label map's classes in id order (COCO category id k + 1 for classes[k]); every metric is per class of these.
    classes: tuple[str, ...] = CLASS_NAMES

    def __post_init__(self) -> None:
        for name in ("score_threshold", "hit_iou", "confusion_iou"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {value}")
        if not self.fp_rates or any(rate <= 0 for rate in self.fp_rates):
            raise ValueError(f"fp_rates must be positive numbers, got {self.fp_rates}")
        object.__setattr__(self, "classes", tuple(self.classes))
        folded = [name.lower() for name in self.classes]
        if not self.classes or len(set(folded)) != len(folded) or "" in folded:
            raise ValueError(f"classes must be distinct names, got {self.classes}")
        reserved = sorted(set(folded) & RESERVED_NAMES)
        if reserved:
            raise ValueError(f"a class may not be named {reserved[0]!r}: the report uses that name for its own rows")


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
            "settings": {**_settings_block(self.settings), "coco_max_detections": COCO_MAX_DETECTIONS},
            "images": self.images,
            "images_with_boxes": self.images_with_boxes,
            "boxes": self.boxes,
            "ignored_boxes": self.ignored or dict.fromkeys(self.settings.classes, 0),
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


def _settings_block(settings: EvaluationSettings) -> dict:
    """The settings as metrics.json records them; the classes are the per-class blocks' keys, in id order."""
    return {key: value for key, value in asdict(settings).items() if key != "classes"}


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


def compute_metrics(
    ground_truth: pd.DataFrame,
    detections: pd.DataFrame,
    images: Sequence[str],
    settings: EvaluationSettings | None = None,
) -> Metrics:
    """Every metric of the report over one evaluated image set."""
    settings = settings or EvaluationSettings()
    images = [str(image) for image in images]
    classes = settings.classes
    check_tables(ground_truth, detections, images, classes)
    return Metrics(
        settings=settings,
        images=len(images),
        images_with_boxes=int(ground_truth.loc[~difficult_flags(ground_truth), "image"].nunique()),
        boxes=box_counts(ground_truth, classes),
        ignored=ignored_counts(ground_truth, classes),
        detections=len(detections),
        coco=coco_average_precision(ground_truth, detections, images, classes),
        froc=froc(ground_truth, detections, images, settings.hit_iou, settings.fp_rates, classes),
        iobb=iobb_localisation(
            ground_truth, detections, images, settings.iobb_thresholds, settings.score_threshold, classes
        ),
        image_level=image_level(ground_truth, detections, images, settings.score_threshold, classes),
        confusion=confusion_matrix(
            ground_truth, detections, images, settings.score_threshold, settings.confusion_iou, classes
        ),
    )


def json_ready(value: object) -> object:
    """NaN and infinity are not JSON: they become null; numpy numbers become Python's."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return json_ready(float(value))
    return value


def write_metrics_json(path: str | Path, document: dict) -> Path:
    """metrics.json: `document` (a Metrics.to_dict() with its sources, or the cross-validation summary)
    with every undefined figure as null."""
    atomic.write_json(path, json_ready(document))
    return Path(path)
