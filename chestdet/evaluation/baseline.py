"""The trivial baseline every evaluation is put beside: a model that learned nothing but where each
finding usually sits and how often it occurs.

Per class, the median box of the training images' boxes (the median of each corner, in fractions of
the image) is placed on every evaluated image, scored with the class frequency (the share of the
training images with a box of the class), and scored by the same metrics as the model. On chest
films that is not zero: the heart sits in the middle, effusions at the bases. A class whose AP@0.5
is not above the baseline's has not shown that it learned anything.

The training images are split.csv's `train` rows, with their boxes from the evaluation's ground
truth (a records folder's `train-*` shards); `baseline_from` takes the boxes from another source
(a records folder, an NIH CSV, labelImg XML), all of its images or, with a split, its train rows.
Evaluated images are never training images of the baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from chestdet.core.labels import CLASS_NAMES, LabelMap
from chestdet.data.split import TRAIN, SplitRow
from chestdet.evaluation.boxes import BOX_COLUMNS, DETECTION_TABLE_COLUMNS, difficult_flags, image_key
from chestdet.evaluation.ground_truth import GroundTruth, ground_truth_frame, ground_truth_labels, read_ground_truth
from chestdet.evaluation.metrics import EvaluationSettings, Metrics, compute_metrics

FRACTION, PIXEL = "fraction", "pixel"  # units of the median boxes
RULE = "each class's median training box on every evaluated image, scored by the class's frequency"
OVERALL = "all"


@dataclass(frozen=True)
class ClassPrior:
    box: tuple[float, float, float, float] | None  # (xmin, ymin, xmax, ymax); None: no training box
    score: float  # share of the training images with a box of the class
    boxes: int  # training boxes of the class


@dataclass
class Baseline:
    priors: dict[str, ClassPrior]
    images: int  # training images
    unit: str  # FRACTION of the image, or PIXEL where some training image's size is unknown
    source: str
    metrics: Metrics | None = None  # the baseline scored on the evaluated images
    notes: list[str] = field(default_factory=list)

    def beaten(self, model: Metrics) -> dict[str, bool | None]:
        """Per class and "all": is the model's AP@0.5 above the baseline's? None where there is no box."""
        if self.metrics is None:
            raise ValueError("the baseline has not been scored")
        pairs = {name: (model.coco.per_class[name].ap50, self.metrics.coco.per_class[name].ap50)
                 for name in model.settings.classes}
        pairs[OVERALL] = (model.coco.overall.ap50, self.metrics.coco.overall.ap50)
        return {name: None if ours is None or theirs is None else bool(ours > theirs)
                for name, (ours, theirs) in pairs.items()}

    def to_dict(self, model: Metrics) -> dict:
        """metrics.json's "baseline" block."""
        scored = self.metrics.to_dict() if self.metrics is not None else {}
        return {
            "rule": RULE,
            "source": self.source,
            "training_images": self.images,
            "unit": self.unit,
            "priors": {name: {"box": list(prior.box) if prior.box else None, "score": prior.score,
                              "training_boxes": prior.boxes} for name, prior in self.priors.items()},
            "coco": scored.get("coco"),
            "froc": scored.get("froc"),
            "beaten": self.beaten(model),
        }


def class_priors(truth: pd.DataFrame, images: Sequence[str], sizes: Mapping[str, tuple[int, int]],
                 classes: Sequence[str] = CLASS_NAMES) -> tuple[dict[str, ClassPrior], str]:
    """Per class, the median box and frequency over the training `images` (metrics' ground-truth table
    of their boxes; difficult ones left out). Fractions of each box's image when every size is known."""
    ordinary = truth.loc[~difficult_flags(truth) & truth["image"].isin(set(images))]
    corners = ordinary[BOX_COLUMNS].to_numpy(dtype=np.float64).reshape(-1, 4)
    unit = FRACTION if all(image in sizes for image in ordinary["image"]) else PIXEL
    if unit == FRACTION and len(ordinary):
        width, height = np.array([sizes[image] for image in ordinary["image"]], dtype=np.float64).T
        corners = corners / np.stack([width, height, width, height], axis=1)
    priors = {}
    for name in classes:
        own = (ordinary["label"] == name).to_numpy()
        box = tuple(float(v) for v in np.median(corners[own], axis=0)) if own.any() else None
        with_class = ordinary.loc[own, "image"].nunique()
        priors[name] = ClassPrior(box, with_class / len(images) if images else 0.0, int(own.sum()))
    return priors, unit


def baseline_detections(priors: Mapping[str, ClassPrior], unit: str, images: Sequence[str],
                        sizes: Mapping[str, tuple[int, int]], default_size: tuple[int, int]) -> pd.DataFrame:
    """Every class's median box on every image (fractions scaled to the image's size, or its default)."""
    rows = []
    for image in images:
        width, height = sizes.get(image, default_size) if unit == FRACTION else (1, 1)
        for name, prior in priors.items():
            if prior.box is not None:
                xmin, ymin, xmax, ymax = prior.box
                rows.append((image, name, prior.score, xmin * width, ymin * height, xmax * width, ymax * height))
    frame = pd.DataFrame(rows, columns=DETECTION_TABLE_COLUMNS)
    return frame.astype({column: float for column in ["score", *BOX_COLUMNS]})


def training_images(split_rows: Sequence[SplitRow] | None, source: GroundTruth, from_other: bool) -> list[str]:
    """The baseline's training images: the split's train rows; without any, every image of another
    source (`baseline_from`): those it lists, else those with boxes; else none."""
    train = [image_key(row.image) for row in split_rows or () if row.split == TRAIN and row.image]
    if train or not from_other:
        return list(dict.fromkeys(train))
    listed = source.images if source.images is not None else [box.image for box in source.boxes]
    return list(dict.fromkeys(image_key(image) for image in listed))


def training_source(ground_truth_spec: str | Path, evaluated: GroundTruth, baseline_from: str | Path | None,
                    labels: LabelMap | None = None) -> GroundTruth:
    """Where the training images' boxes are: `baseline_from`, the train shards of a records folder, or
    the evaluation's own ground truth (an NIH CSV or labelImg XML holds every image's boxes); read with the
    evaluation's label map."""
    if baseline_from is not None:
        return read_ground_truth(baseline_from, TRAIN, ground_truth_labels(baseline_from, labels))
    if evaluated.images is not None and Path(ground_truth_spec).is_dir():
        return read_ground_truth(ground_truth_spec, TRAIN, labels)
    return evaluated


def build_baseline(
    evaluated_truth: pd.DataFrame, images: Sequence[str], sizes: Mapping[str, tuple[int, int]],
    source: GroundTruth, train_images: Sequence[str], settings: EvaluationSettings | None = None,
) -> Baseline | None:
    """The baseline from `source`'s boxes of `train_images`, scored on the evaluated images (their
    ground-truth table and detected sizes); None when no training image has a box."""
    notes, settings = [], settings or EvaluationSettings()
    evaluated = set(images)
    overlap = [image for image in train_images if image in evaluated]
    if overlap:
        notes.append(f"baseline: {len(overlap)} of its training images are evaluated images and are left out")
    train = [image for image in train_images if image not in evaluated]
    truth = ground_truth_frame(source.boxes)
    priors, unit = class_priors(truth, train, {image_key(k): v for k, v in source.sizes.items()}, settings.classes)
    if not any(prior.box for prior in priors.values()):
        return None
    known = [source.sizes[image] for image in train if image in source.sizes]
    default = tuple(int(v) for v in np.median(np.array(known), axis=0)) if known else (1, 1)
    found = baseline_detections(priors, unit, images, sizes, default)
    baseline = Baseline(priors, len(train), unit, source.description, notes=notes)
    baseline.metrics = compute_metrics(evaluated_truth, found, list(images), settings)
    return baseline
