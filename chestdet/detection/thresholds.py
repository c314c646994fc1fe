"""Who sees which box: the score each class needs to be drawn, from one threshold, a `class,min_score`
CSV, or a named operating point of an operating_points.json.

operating_points.json is written by evaluate (on a validation split) and read by detect, the review
server and the DICOM node; this module is its one writer and reader:

    {"split": "val", "source": {...}, "points": ["0.25fp", "0.5fp", "1fp", "2fp", "best_f1"],
     "classes": {"Cardiomegaly": {"1fp": {"threshold": 0.41, "sensitivity": 0.62, "fp_per_image": 0.98,
                                         "precision": 0.31, "interval": {"sensitivity": [0.5, 0.7]}}, ...}}}

A point a class cannot reach (too few boxes, or no score giving that many false positives) has
threshold null and is left to the default threshold.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chestdet.core import atomic
from chestdet.core.detections import Detection
from chestdet.core.errors import DetectError, InputError

# False positives per image of the named points, and the best-F1 point.
FP_RATE_POINTS: dict[str, float] = {"0.25fp": 0.25, "0.5fp": 0.5, "1fp": 1.0, "2fp": 2.0}
BEST_F1 = "best_f1"
POINT_NAMES: tuple[str, ...] = (*FP_RATE_POINTS, BEST_F1)


class OperatingPointsError(InputError):
    """operating_points.json unreadable, malformed, or without the point or classes asked for."""


@dataclass(frozen=True)
class Thresholds:
    """Minimum score for drawing and VOC XML: one default, optionally per class id."""

    default: float = 0.3
    per_class: Mapping[int, float] = field(default_factory=dict)

    def for_class(self, class_id: int) -> float:
        return self.per_class.get(class_id, self.default)

    def shown(self, detections: Sequence[Detection], max_boxes: int) -> list[Detection]:
        """The boxes a person sees: at or above their class's threshold, the first `max_boxes`."""
        return [d for d in detections if d.score >= self.for_class(d.class_id)][:max_boxes]

    def as_dict(self) -> dict:
        return {"default": self.default, "per_class": {str(k): v for k, v in sorted(self.per_class.items())}}


def load_thresholds(path: Path, default: float, class_names: Mapping[int, str]) -> Thresholds:
    """A CSV with columns `class,min_score` (class name as in the label map, any case)."""
    ids = {name.lower(): class_id for class_id, name in class_names.items()}
    per_class: dict[int, float] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or {"class", "min_score"} - set(reader.fieldnames):
                raise DetectError(f"{path}: expected the columns class,min_score; found {reader.fieldnames}")
            for row_number, row in enumerate(reader, start=2):
                per_class[_threshold_class(path, row_number, row["class"], ids)] = _threshold_value(
                    path, row_number, row["min_score"]
                )
    except OSError as error:
        raise DetectError(f"{path}: cannot read the thresholds file ({error.strerror})") from error
    return Thresholds(default, per_class)


def _threshold_class(path: Path, row: int, name: str | None, ids: Mapping[str, int]) -> int:
    key = (name or "").strip().lower()
    if key not in ids:
        raise DetectError(f"{path}: row {row}: unknown class {name!r}; the label map has {', '.join(ids)}")
    return ids[key]


def _threshold_value(path: Path, row: int, text: str | None) -> float:
    try:
        value = float(text or "")
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise DetectError(f"{path}: row {row}: min_score {text!r} is not a number between 0 and 1")
    return value


@dataclass(frozen=True)
class OperatingPoint:
    """One class at one point: the lowest score that keeps it there, and what it gives on the split."""

    threshold: float | None
    sensitivity: float | None = None
    fp_per_image: float | None = None
    precision: float | None = None
    interval: Mapping[str, Sequence[float]] | None = None  # bootstrap [low, high] per figure, when measured


@dataclass(frozen=True)
class OperatingPoints:
    """Per class name, per point name: the operating points of one evaluation."""

    classes: Mapping[str, Mapping[str, OperatingPoint]]
    split: str = ""
    source: Mapping[str, str] = field(default_factory=dict)

    def thresholds(self, point: str, class_names: Mapping[int, str], default: float) -> Thresholds:
        """The per-class thresholds of `point`; a class the file lacks, or cannot reach the point, keeps
        `default`."""
        if point not in POINT_NAMES:
            raise OperatingPointsError(f"unknown operating point {point!r}; expected one of {', '.join(POINT_NAMES)}")
        per_class = {}
        for class_id, name in class_names.items():
            found = self.classes.get(name, {}).get(point)
            if found is not None and found.threshold is not None:
                per_class[class_id] = found.threshold
        return Thresholds(default, per_class)

    def to_dict(self) -> dict:
        return {"split": self.split, "source": dict(self.source), "points": list(POINT_NAMES),
                "classes": {name: {point: _point_dict(value) for point, value in points.items()}
                            for name, points in self.classes.items()}}


def choose_thresholds(default: float, class_names: Mapping[int, str], min_score_file: Path | None = None,
                      operating_points: Path | None = None, point: str | None = None) -> Thresholds:
    """The one Thresholds of whichever form was given: `default` alone, a `class,min_score` CSV, or the
    point `point` of an operating_points.json; a class neither names keeps `default`."""
    if min_score_file is not None and operating_points is not None:
        raise DetectError("a class,min_score CSV and operating points are two forms of per-class thresholds; "
                          "give one")
    if min_score_file is not None:
        return load_thresholds(min_score_file, default, class_names)
    if operating_points is not None:
        return read_operating_points(operating_points).thresholds(point or BEST_F1, class_names, default)
    return Thresholds(default)


def _point_dict(point: OperatingPoint) -> dict:
    data = asdict(point)
    if point.interval is None:
        data.pop("interval")
    return data


def write_operating_points(path: str | Path, points: OperatingPoints) -> Path:
    atomic.write_json(path, points.to_dict())
    return Path(path)


def read_operating_points(path: str | Path) -> OperatingPoints:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise OperatingPointsError(f"{path}: cannot read the operating points ({error.strerror})") from None
    except ValueError as error:
        raise OperatingPointsError(f"{path}: not JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("classes"), dict):
        raise OperatingPointsError(f"{path}: no \"classes\" object; is this evaluate's operating_points.json?")
    classes = {str(name): {str(point): _read_point(path, name, point, value) for point, value in points.items()}
               for name, points in data["classes"].items() if isinstance(points, dict)}
    return OperatingPoints(classes, str(data.get("split", "")), dict(data.get("source") or {}))


def _read_point(path: Path, name: str, point: str, value: object) -> OperatingPoint:
    threshold = value.get("threshold") if isinstance(value, dict) else None
    if not isinstance(value, dict) or not (threshold is None or (
            isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0.0 <= threshold <= 1.0)):
        raise OperatingPointsError(f"{path}: classes.{name}.{point}: threshold {threshold!r} is not a score "
                                   "between 0 and 1")
    return OperatingPoint(threshold, value.get("sensitivity"), value.get("fp_per_image"), value.get("precision"),
                          value.get("interval"))
