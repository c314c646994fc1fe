"""Detections as evaluation takes them: detect's detections folder (read by its owner,
chestdet.detection.tables) turned into the metrics' table keyed by image file name, the images
detection processed, and a Reject for every unusable row. Every class a row names (or its id) must be one
of the label map's, with the map's id: otherwise the detections came from a model of another map, and the
whole file is refused (LabelMapError)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from chestdet.core.errors import EvaluationError
from chestdet.core.labels import LabelMap, LabelMapError, UnknownLabelError, default_label_map
from chestdet.core.rejects import Reject
from chestdet.detection.tables import read_detections_folder
from chestdet.evaluation.boxes import image_key

NUMBER_COLUMNS = ("score", "xmin", "ymin", "xmax", "ymax")


@dataclass
class DetectionSet:
    """Detections keyed by image file name, the images detection processed, and the rejected rows."""

    table: pd.DataFrame  # columns image (key), label, score, xmin, ymin, xmax, ymax
    processed: list[str] | None  # image keys from images.csv; None when it is absent
    rejects: list[Reject] = field(default_factory=list)
    source: Path | None = None
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # (width, height) detection saw
    paths: dict[str, list[str]] = field(default_factory=dict)  # image key -> images.csv's image and path


class _OtherMap(ValueError):
    """A row's class that is not the label map's (a name not in it, an id outside it or another id)."""


def detections_frame(frame: pd.DataFrame, source: str = "detections",
                     labels: LabelMap | None = None) -> tuple[pd.DataFrame, list[Reject]]:
    """Validate a detections.csv-shaped table; returns the usable rows as the metrics' table and
    a Reject per unusable row (row numbers count the header as row 1). A class outside `labels` (default
    the shipped map) is a LabelMapError naming the file, the row and the map."""
    labels = labels or default_label_map()
    has_class = "class_name" in frame.columns or "class_id" in frame.columns
    missing = [c for c in ("image", "score", "xmin", "ymin", "xmax", "ymax") if c not in frame.columns]
    if missing or not has_class:
        missing += [] if has_class else ["class_name"]
        raise EvaluationError(f"{source}: missing column(s) {', '.join(missing)}")
    # read_frame's index is each row's line number minus 2, blank rows left out; others count rows
    lines = frame.index.to_numpy() + 2 if pd.api.types.is_integer_dtype(frame.index) else np.arange(len(frame)) + 2
    frame = frame.reset_index(drop=True)
    numbers = frame[list(NUMBER_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    keys = _cached_map(frame["image"], lambda value: "" if _blank(value) else image_key(str(value)))
    classes = _row_labels(frame, labels, source, lines)
    good = (
        np.isfinite(numbers).all(axis=1)
        & (numbers[:, 3] >= numbers[:, 1])  # xmax >= xmin
        & (numbers[:, 4] >= numbers[:, 2])  # ymax >= ymin
        & np.array([bool(key) for key in keys], dtype=bool)
        & np.array([label is not None for label in classes], dtype=bool)
    )
    table = pd.DataFrame(numbers[good], columns=list(NUMBER_COLUMNS))
    table.insert(0, "label", [label for label, ok in zip(classes, good, strict=True) if ok])
    table.insert(0, "image", [key for key, ok in zip(keys, good, strict=True) if ok])
    # Rows the fast path doubts are read one by one: that gives the exact reason, or keeps a row that
    # only pandas could not parse.
    rejects: list[Reject] = []
    rescued = []
    for position in np.flatnonzero(~good):
        try:
            rescued.append(_detection_row(frame.iloc[position].to_dict(), labels))
        except ValueError as error:
            rejects.append(Reject(source, f"row {lines[position]}", str(error), image=_row_image(frame, position)))
    if rescued:
        table = pd.concat([table, pd.DataFrame(rescued)], ignore_index=True)
    return table[["image", "label", *NUMBER_COLUMNS]].astype({c: float for c in NUMBER_COLUMNS}), rejects



def _cached_map(values: Iterable, function) -> list:  # noqa: ANN001
    cache: dict = {}
    result = []
    for value in values:
        key = value if isinstance(value, str) else repr(value)
        if key not in cache:
            cache[key] = function(value)
        result.append(cache[key])
    return result


def _row_labels(frame: pd.DataFrame, labels: LabelMap, source: str, lines: np.ndarray) -> list[str | None]:
    """The label map's name of every row's class, None where it has no usable class; raises LabelMapError
    at the first row whose class is not the map's."""
    names = frame["class_name"] if "class_name" in frame.columns else [""] * len(frame)
    ids = frame["class_id"] if "class_id" in frame.columns else [""] * len(frame)

    def label(pair: tuple) -> str | _OtherMap | None:
        try:
            return _detection_label({"class_name": pair[0], "class_id": pair[1]}, labels)
        except _OtherMap as error:
            return error
        except ValueError:
            return None

    found = _cached_map(zip(names, ids, strict=True), label)
    for line, value in zip(lines, found, strict=True):
        if isinstance(value, _OtherMap):
            raise LabelMapError(f"{source}: row {line}: {value}; evaluate with the label map of the model that "
                                "made the detections (--label-map)")
    return found


def _detection_row(row: dict, labels: LabelMap) -> dict:
    image = "" if _blank(row.get("image")) else image_key(str(row["image"]))
    if not image:
        raise ValueError("empty image name")
    label = _detection_label(row, labels)
    values = {}
    for column in ("score", "xmin", "ymin", "xmax", "ymax"):
        try:
            value = float(row[column])
        except (TypeError, ValueError):
            raise ValueError(f"{column} is {row[column]!r}, not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{column} is {row[column]!r}, not a finite number")
        values[column] = value
    if values["xmax"] < values["xmin"] or values["ymax"] < values["ymin"]:
        raise ValueError(
            f"box corners out of order (xmin {values['xmin']:g}, ymin {values['ymin']:g}, "
            f"xmax {values['xmax']:g}, ymax {values['ymax']:g})"
        )
    return {"image": image, "label": label, **values}


def _row_image(frame: pd.DataFrame, position: int) -> str:
    value = frame["image"].iloc[position]
    return "" if _blank(value) else str(value).strip()


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def _detection_label(row: dict, labels: LabelMap) -> str:
    """The map's name of a row's class: its class_name (whose class_id, if any, must be the map's id of it),
    else its class_id. _OtherMap for a class of another map; ValueError for a row without a usable class."""
    number = _class_number(row.get("class_id"))
    if not _blank(row.get("class_name")):
        try:
            name = labels.canonical(str(row["class_name"]))
        except UnknownLabelError:
            raise _OtherMap(f"class {str(row['class_name']).strip()!r} is not in the label map "
                            f"{labels.describe()}") from None
        if number is not None and number != labels.id_of(name):
            raise _OtherMap(f"class {name!r} has id {number:g} here but {labels.id_of(name)} in the label map "
                            f"{labels.describe()}")
        return name
    if number is None:
        raise ValueError(f"no usable class_name or class_id (class_id {row.get('class_id')!r})")
    if number not in labels.ids:
        raise _OtherMap(f"class id {number:g} is not in the label map {labels.describe()}")
    return labels.ids[int(number)]


def _class_number(value: object) -> float | None:
    """A class_id cell as a number, None when it is blank or not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None



def read_detections(path: str | Path, labels: LabelMap | None = None) -> DetectionSet:
    """Read detect.py's detections.csv (or the folder holding it) and the images.csv beside it; every class
    must be one of `labels` (default the shipped map)."""
    folder = read_detections_folder(path)
    frame, csv_path, images, images_path = folder.detections, folder.detections_path, folder.images, folder.images_path
    table, rejects = detections_frame(frame, str(csv_path), labels)
    sizes = image_sizes(frame)
    processed = None
    if images is not None:
        if "image" not in images.columns:
            raise EvaluationError(f"{images_path}: missing column image")
        processed = []
        for number, name in zip(images.index + 2, images["image"], strict=True):
            if _blank(name):
                rejects.append(Reject(str(images_path), f"row {number}", "empty image name"))
            else:
                processed.append(image_key(str(name)))
        sizes.update(image_sizes(images))
    paths = image_paths(images) if processed is not None else {}
    return DetectionSet(table=table, processed=processed, rejects=rejects, source=csv_path, sizes=sizes,
                        paths=paths)


def image_paths(images: pd.DataFrame) -> dict[str, list[str]]:
    """Image key -> the image's name and path as images.csv gives them (where to look for the file)."""
    names = images["image"]
    paths = images["path"] if "path" in images.columns else [""] * len(images)
    return {image_key(str(name)): [str(name), str(path)] for name, path in zip(names, paths, strict=True)
            if not _blank(name)}


def image_sizes(frame: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """(width, height) per image key from a table with image, width, height columns; unusable rows skipped."""
    if not {"image", "width", "height"} <= set(frame.columns):
        return {}
    sizes = {}
    for image, width, height in zip(frame["image"], frame["width"], frame["height"], strict=True):
        try:
            size = (int(float(width)), int(float(height)))
        except (TypeError, ValueError):
            continue
        if size[0] > 0 and size[1] > 0 and not _blank(image):
            sizes[image_key(str(image))] = size
    return sizes
