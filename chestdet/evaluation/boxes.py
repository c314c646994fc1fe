"""The metrics' tables of boxes, and the arrays the matching rules work on.

`ground_truth` is a DataFrame with columns `image, label, xmin, ymin, xmax, ymax` (pixels) and
optionally `difficult` (bool); `detections` the same plus `score` (DETECTION_TABLE_COLUMNS, not
detections.csv's columns); `images` names every evaluated image. `image` is any key the two tables
share: evaluate makes it the file name (image_key), so `sub/00000001_000.png` in detections.csv
meets `00000001_000.png` in BBox_List_2017.csv.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from chestdet.core.labels import CLASS_NAMES

BOX_COLUMNS = ["xmin", "ymin", "xmax", "ymax"]
GROUND_TRUTH_COLUMNS = ["image", "label", *BOX_COLUMNS]
DIFFICULT = "difficult"  # optional ground-truth column
# The metrics' detections table; detections.csv has more (contracts.DETECTION_COLUMNS)
DETECTION_TABLE_COLUMNS = ["image", "label", "score", *BOX_COLUMNS]


def image_key(name: str) -> str:
    """The file name an image is matched by: the last part of a relative path, / or \\ separated."""
    return PurePosixPath(str(name).strip().replace("\\", "/")).name


def ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def mean_known(values: Iterable[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return sum(known) / len(known) if known else None


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


def box_counts(ground_truth: pd.DataFrame, classes: Sequence[str] = CLASS_NAMES) -> dict[str, int]:
    """Boxes per class that count (difficult boxes are ignored)."""
    counts = ground_truth.loc[~difficult_flags(ground_truth), "label"].value_counts()
    return {name: int(counts.get(name, 0)) for name in classes}


def ignored_counts(ground_truth: pd.DataFrame, classes: Sequence[str] = CLASS_NAMES) -> dict[str, int]:
    """Difficult boxes per class."""
    counts = ground_truth.loc[difficult_flags(ground_truth), "label"].value_counts()
    return {name: int(counts.get(name, 0)) for name in classes}


def check_tables(ground_truth: pd.DataFrame, detections: pd.DataFrame, images: Sequence[str],
                 classes: Sequence[str] = CLASS_NAMES) -> None:
    for frame, columns, what in (
        (ground_truth, GROUND_TRUTH_COLUMNS, "ground truth"),
        (detections, DETECTION_TABLE_COLUMNS, "detections"),
    ):
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            raise ValueError(f"{what} table lacks columns {missing}")
        unknown = set(frame["label"]) - set(classes)
        if unknown:
            known = "CLASS_NAMES" if tuple(classes) == CLASS_NAMES else f"the evaluated classes {list(classes)}"
            raise ValueError(f"{what} table has labels outside {known}: {sorted(unknown)}")
        outside = set(frame["image"]) - set(images)
        if outside:
            raise ValueError(f"{what} table names {len(outside)} images not in `images`, e.g. {min(outside)}")
    if not images:
        raise ValueError("no images to evaluate")
    if len(set(images)) != len(images):
        raise ValueError("`images` lists an image twice")
    if detections["score"].isna().any() or not np.isfinite(detections["score"].to_numpy(float)).all():
        raise ValueError("detections table has scores that are not finite numbers")

