"""Box annotations: the `Box` record, the checks every box goes through, and NIH's BBox_List_2017.csv.

Readers (this one, `voc_xml`, `labelstudio`) return `Box`es in pixels of the image the annotation was
made on, plus a `Reject` for everything they could not use, so a bad row never stops a run and nothing
is dropped silently. Checks that need the real image (a box outside it, a resized copy) live in
`fit_boxes_to_image`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from chestdet.core.csvfiles import csv_rows
from chestdet.core.imaging import (
    DecompressionBombError,
    ImageMissingError,
    ImageReadError,
)
from chestdet.core.labels import LabelMap, UnknownLabelError, default_label_map
from chestdet.core.rejects import Reject, RejectKind

SOURCE_NIH_CSV = "nih-csv"
SOURCE_VOC_XML = "voc-xml"

# NIH's boxes are in pixels of the 1024x1024 PNGs it ships; a resized copy needs them rescaled.
NIH_IMAGE_SIZE = (1024, 1024)
# A box may cross the image border by this many pixels (annotation jitter); it is then clipped.
BORDER_TOLERANCE_PX = 8.0
# Two sizes describe "the same picture at another resolution" when their aspect ratios agree this well.
ASPECT_TOLERANCE = 0.01

NIH_COLUMNS = ("Image Index", "Finding Label")


@dataclass(frozen=True)
class Box:
    """One labelled box in float pixels of the original image, top-left origin."""

    image: str
    label: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: bool = False
    source: str = SOURCE_NIH_CSV
    # Where the box came from (the file, and "row 12" or "object 2"); for reject messages, not part of
    # its identity.
    location: str = field(default="", compare=False)
    file: str = field(default="", compare=False)

    @property
    def width(self) -> float:
        return self.xmax - self.xmin

    @property
    def height(self) -> float:
        return self.ymax - self.ymin


@dataclass
class VocAnnotation:
    """One labelImg XML file: its boxes (in the real image's pixels) and what was done to them."""

    xml_path: Path
    image: str | None = None
    image_path: Path | None = None
    declared_size: tuple[int, int] | None = None
    real_size: tuple[int, int] | None = None
    named: str = ""  # the image as the XML names it, for reject lines
    refused: bool = False  # the whole file is a reject
    boxes: list[Box] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    notes: Counter = field(default_factory=Counter)


@dataclass
class AnnotationSet:
    """What one annotation source gave: boxes, rejects, the images it found, and counted conversions.

    `covered` are the images the source annotated (an XML file read for it, even one without
    objects); `sizes` the real (width, height) of those it measured, the pixels its boxes are in.
    """

    boxes: list[Box] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    image_paths: dict[str, Path] = field(default_factory=dict)
    notes: Counter = field(default_factory=Counter)
    covered: set[str] = field(default_factory=set)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add(self, other: VocAnnotation | AnnotationSet) -> None:
        self.boxes.extend(other.boxes)
        self.rejects.extend(other.rejects)
        self.notes.update(other.notes)
        if isinstance(other, VocAnnotation):
            if other.image and other.image_path is not None:
                self.image_paths.setdefault(other.image, other.image_path)
            if other.image and other.image_path is not None and not other.refused:
                self.covered.add(other.image)
                if other.real_size is not None:
                    self.sizes.setdefault(other.image, other.real_size)
        else:
            for name, path in other.image_paths.items():
                self.image_paths.setdefault(name, path)
            self.covered |= other.covered
            for name, size in other.sizes.items():
                self.sizes.setdefault(name, size)


class BoxError(ValueError):
    """A box that cannot be used; the message is the reject reason, `kind` its category."""

    def __init__(self, message: str, kind: RejectKind = RejectKind.OTHER) -> None:
        super().__init__(message)
        self.kind = kind


def image_error_kind(error: ImageReadError) -> RejectKind:
    """The reject kind of an image that could not be used."""
    if isinstance(error, ImageMissingError):
        return RejectKind.IMAGE_NOT_FOUND
    if isinstance(error, DecompressionBombError):
        return RejectKind.DECOMPRESSION_BOMB
    return RejectKind.UNREADABLE_IMAGE


# --------------------------------------------------------------------------------------------------
# NIH CSV


def read_nih_csv(path: str | Path, labels: LabelMap | None = None) -> tuple[list[Box], list[Reject]]:
    """Read NIH's BBox_List_2017.csv (x, y, w, h in pixels) into corner boxes.

    The header may carry NIH's trailing empty columns or not; numbers may be NIH's long floats or
    spreadsheet-rounded. Row numbers in rejects count the header as row 1, as a spreadsheet does. A
    label must be in `labels` (default: the shipped NIH map).
    """
    path = Path(path)
    boxes: list[Box] = []
    rejects: list[Reject] = []
    for row_number, cells in csv_rows(path):
        if row_number == 1 and _is_nih_header(cells):
            continue
        try:
            boxes.append(_nih_row_to_box(cells, f"row {row_number}", str(path), labels))
        except BoxError as error:
            rejects.append(Reject(str(path), f"row {row_number}", str(error), error.kind, cells[0]))
    if not boxes and not rejects:
        rejects.append(Reject(str(path), "file", "no box rows found", RejectKind.NOTHING_FOUND))
    return boxes, rejects


def _is_nih_header(row: Sequence[str]) -> bool:
    return len(row) >= 2 and (row[0].strip(), row[1].strip()) == NIH_COLUMNS


def _nih_row_to_box(row: Sequence[str], location: str, file: str = "", labels: LabelMap | None = None) -> Box:
    cells = list(row)
    while len(cells) > 6 and cells[-1] == "":
        cells.pop()
    if len(cells) != 6:
        raise BoxError(f"expected 6 columns (image, label, x, y, w, h), found {len(cells)}", RejectKind.MALFORMED_ROW)
    image, label_text = cells[0], cells[1]
    if not image:
        raise BoxError("empty image name", RejectKind.MISSING_VALUE)
    label = parse_label(label_text, labels)
    x, y, w, h = (parse_number(value, name) for value, name in zip(cells[2:], "xywh", strict=True))
    return make_box(image, label, x, y, x + w, y + h, source=SOURCE_NIH_CSV, location=location, file=file)


# --------------------------------------------------------------------------------------------------
# Boxes


def make_box(
    image: str,
    label: str,
    xmin: float,
    ymin: float,
    xmax: float,
    ymax: float,
    difficult: bool = False,
    source: str = SOURCE_NIH_CSV,
    location: str = "",
    file: str = "",
) -> Box:
    """A Box, refusing non-finite numbers and boxes of zero or negative size."""
    for value in (xmin, ymin, xmax, ymax):
        if not math.isfinite(value):
            raise BoxError(f"coordinate {value} is not a finite number", RejectKind.NOT_A_NUMBER)
    if xmax <= xmin or ymax <= ymin:
        raise BoxError(
            f"box of zero or negative size (xmin {xmin:g}, ymin {ymin:g}, xmax {xmax:g}, ymax {ymax:g})",
            RejectKind.EMPTY_BOX,
        )
    return Box(image, label, xmin, ymin, xmax, ymax, difficult, source, location, file)


def parse_label(text: str, labels: LabelMap | None = None) -> str:
    """The label map's name of a class (`labels`, default the shipped NIH map)."""
    if not text.strip():
        raise BoxError("empty label", RejectKind.MISSING_VALUE)
    try:
        return (labels or default_label_map()).canonical(text)
    except UnknownLabelError as error:
        raise BoxError(str(error), RejectKind.UNKNOWN_LABEL) from error


def parse_number(text: str, name: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise BoxError(f"{name} is {text!r}, not a number", RejectKind.NOT_A_NUMBER) from None
    if not math.isfinite(value):
        raise BoxError(f"{name} is {text!r}, not a finite number", RejectKind.NOT_A_NUMBER)
    return value


def same_picture(declared: tuple[int, int], real: tuple[int, int]) -> bool:
    """True when two sizes differ only in resolution (the same aspect ratio)."""
    declared_ratio = declared[0] / declared[1]
    real_ratio = real[0] / real[1]
    return abs(declared_ratio / real_ratio - 1.0) <= ASPECT_TOLERANCE


def fit_boxes_to_image(
    boxes: Sequence[Box], declared_size: tuple[int, int], real_size: tuple[int, int]
) -> tuple[list[Box], Counter]:
    """Rescale boxes made on a `declared_size` image to the real one, or raise BoxError.

    Only a change of resolution is fixed; a different aspect ratio means another picture.
    """
    notes: Counter = Counter()
    if tuple(declared_size) == tuple(real_size):
        return list(boxes), notes
    if not same_picture(declared_size, real_size):
        raise BoxError(
            f"annotation is for a {declared_size[0]}x{declared_size[1]} image but the image is "
            f"{real_size[0]}x{real_size[1]} (different aspect ratio)",
            RejectKind.SIZE_MISMATCH,
        )
    sx = real_size[0] / declared_size[0]
    sy = real_size[1] / declared_size[1]
    notes[f"boxes rescaled from {declared_size[0]}x{declared_size[1]} to {real_size[0]}x{real_size[1]}"] += len(
        boxes
    )
    return [
        replace(box, xmin=box.xmin * sx, ymin=box.ymin * sy, xmax=box.xmax * sx, ymax=box.ymax * sy)
        for box in boxes
    ], notes


def clip_to_image(box: Box, width: int, height: int, tolerance: float = BORDER_TOLERANCE_PX) -> tuple[Box, bool]:
    """Clip a box that crosses the border by at most `tolerance` pixels; raise BoxError if further out.

    Returns the (possibly clipped) box and whether it was clipped.
    """
    outside = max(-box.xmin, -box.ymin, box.xmax - width, box.ymax - height)
    if outside <= 0:
        return box, False
    if outside > tolerance:
        raise BoxError(
            f"box (xmin {box.xmin:g}, ymin {box.ymin:g}, xmax {box.xmax:g}, ymax {box.ymax:g}) lies "
            f"{outside:g} px outside the {width}x{height} image",
            RejectKind.BOX_OUTSIDE,
        )
    clipped = replace(
        box,
        xmin=min(max(box.xmin, 0.0), width), ymin=min(max(box.ymin, 0.0), height),
        xmax=min(max(box.xmax, 0.0), width), ymax=min(max(box.ymax, 0.0), height),
    )
    if clipped.xmax <= clipped.xmin or clipped.ymax <= clipped.ymin:
        raise BoxError(f"box lies outside the {width}x{height} image", RejectKind.BOX_OUTSIDE)
    return clipped, True

