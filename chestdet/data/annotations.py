"""Read box annotations: NIH's BBox_List_2017.csv and labelImg's Pascal VOC XML.

Both readers return `Box`es in pixels of the image the annotation was made on, plus a `Reject` for
everything they could not use, so a bad row never stops a run and nothing is dropped silently.
Checks that need the real image (a box outside it, a resized copy) live in `fit_boxes_to_image`.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeElementTree
from defusedxml import DefusedXmlException

from chestdet.core.csvfiles import csv_rows
from chestdet.core.folders import walk_visible
from chestdet.core.imaging import (
    IMAGE_SUFFIXES,
    DecompressionBombError,
    ImageMissingError,
    ImageReadError,
    probe_image,
)
from chestdet.core.labels import UnknownLabelError, canonical_label
from chestdet.core.rejects import Reject, RejectKind

SOURCE_NIH_CSV = "nih-csv"
SOURCE_VOC_XML = "voc-xml"

# NIH's boxes are in pixels of the 1024x1024 PNGs it ships; a resized copy needs them rescaled.
NIH_IMAGE_SIZE = (1024, 1024)
# A box may cross the image border by this many pixels (annotation jitter); it is then clipped.
BORDER_TOLERANCE_PX = 8.0
# Two sizes describe "the same picture at another resolution" when their aspect ratios agree this well.
ASPECT_TOLERANCE = 0.01
MAX_XML_BYTES = 10_000_000

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


def read_nih_csv(path: str | Path) -> tuple[list[Box], list[Reject]]:
    """Read NIH's BBox_List_2017.csv (x, y, w, h in pixels) into corner boxes.

    The header may carry NIH's trailing empty columns or not; numbers may be NIH's long floats or
    spreadsheet-rounded. Row numbers in rejects count the header as row 1, as a spreadsheet does.
    """
    path = Path(path)
    boxes: list[Box] = []
    rejects: list[Reject] = []
    for row_number, cells in csv_rows(path):
        if row_number == 1 and _is_nih_header(cells):
            continue
        try:
            boxes.append(_nih_row_to_box(cells, f"row {row_number}", str(path)))
        except BoxError as error:
            rejects.append(Reject(str(path), f"row {row_number}", str(error), error.kind, cells[0]))
    if not boxes and not rejects:
        rejects.append(Reject(str(path), "file", "no box rows found", RejectKind.NOTHING_FOUND))
    return boxes, rejects


def _is_nih_header(row: Sequence[str]) -> bool:
    return len(row) >= 2 and (row[0].strip(), row[1].strip()) == NIH_COLUMNS


def _nih_row_to_box(row: Sequence[str], location: str, file: str = "") -> Box:
    cells = list(row)
    while len(cells) > 6 and cells[-1] == "":
        cells.pop()
    if len(cells) != 6:
        raise BoxError(f"expected 6 columns (image, label, x, y, w, h), found {len(cells)}", RejectKind.MALFORMED_ROW)
    image, label_text = cells[0], cells[1]
    if not image:
        raise BoxError("empty image name", RejectKind.MISSING_VALUE)
    label = _label(label_text)
    x, y, w, h = (_number(value, name) for value, name in zip(cells[2:], "xywh", strict=True))
    return make_box(image, label, x, y, x + w, y + h, source=SOURCE_NIH_CSV, location=location, file=file)


# --------------------------------------------------------------------------------------------------
# labelImg Pascal VOC XML


def read_voc_xml(
    path: str | Path, image_dirs: Sequence[str | Path] = (), require_image: bool = True
) -> tuple[list[Box], list[Reject]]:
    """Read one labelImg XML file; boxes are keyed by the image's file name (with its extension)."""
    annotation = parse_voc_xml(path, image_dirs, require_image=require_image)
    return annotation.boxes, annotation.rejects


def read_voc_dir(
    directory: str | Path, image_dirs: Sequence[str | Path] = (), require_image: bool = True
) -> tuple[list[Box], list[Reject]]:
    """Read every *.xml under a folder (recursively)."""
    result = load_voc_dir(directory, image_dirs, require_image=require_image)
    return result.boxes, result.rejects


def load_voc_dir(
    directory: str | Path,
    image_dirs: Sequence[str | Path] = (),
    require_image: bool = True,
    index: ImageIndex | None = None,
) -> AnnotationSet:
    """Like read_voc_dir, but also returns the images found and the counted conversions."""
    directory = Path(directory)
    result = AnnotationSet()
    if not directory.is_dir():
        result.rejects.append(Reject(str(directory), "folder", "XML folder not found", RejectKind.NOTHING_FOUND))
        return result
    index = index or ImageIndex([directory, *image_dirs])
    xml_files = sorted(
        Path(folder) / name for folder, files in walk_visible(directory) for name in files
        if Path(name).suffix.lower() == ".xml"
    )
    if not xml_files:
        result.rejects.append(Reject(str(directory), "folder", "no .xml files found", RejectKind.NOTHING_FOUND))
    for xml_path in xml_files:
        result.add(parse_voc_xml(xml_path, image_dirs, require_image=require_image, index=index))
    return result


def parse_voc_xml(
    path: str | Path,
    image_dirs: Sequence[str | Path] = (),
    require_image: bool = True,
    index: ImageIndex | None = None,
) -> VocAnnotation:
    """Parse one XML safely, find its image inside the allowed folders, and fit boxes to it.

    The allowed folders are the XML's own folder and `image_dirs`; nothing outside them is opened.
    Entity declarations (XML bombs, external entities) make the file a reject, never expanded.
    """
    path = Path(path)
    annotation = VocAnnotation(xml_path=path)
    root = _parse_xml_root(path, annotation)
    if root is None:
        return annotation
    if root.tag != "annotation":
        return _reject_file(annotation, "root", f"root element is <{root.tag}>, expected <annotation>",
                            RejectKind.MALFORMED_XML)
    annotation.named = _text(root, "filename") or _text(root, "path")
    if not _locate_image(root, annotation, index or ImageIndex([path.parent, *image_dirs]), require_image):
        return annotation
    try:
        annotation.declared_size = _declared_size(root)
    except BoxError as error:
        return _reject_file(annotation, "size", str(error), error.kind)
    boxes = _voc_objects(root, annotation)
    if annotation.image_path is None or not boxes:
        annotation.boxes = boxes
        return annotation
    return _fit_to_real_image(annotation, boxes)


def _locate_image(root: Element, annotation: VocAnnotation, index: ImageIndex, require_image: bool) -> bool:
    """Set the annotation's image (and its path, when found); False when the file is a reject."""
    try:
        annotation.image_path = _find_voc_image(root, annotation.xml_path, index)
    except BoxError as error:
        _reject_file(annotation, "filename", str(error), error.kind)
        return False
    if annotation.image_path is not None:
        annotation.image = annotation.image_path.name
        return True
    if require_image:
        named = annotation.named or "(none)"
        _reject_file(annotation, "filename", f"image {named!r} not found in the allowed folders",
                     RejectKind.IMAGE_NOT_FOUND)
        return False
    annotation.image = _declared_image_name(root)
    if not annotation.image:
        _reject_file(annotation, "filename", "no <filename> or <path> element", RejectKind.MISSING_VALUE)
        return False
    return True


def _fit_to_real_image(annotation: VocAnnotation, boxes: list[Box]) -> VocAnnotation:
    """Boxes in the pixels of the real image: rescaled from the XML's <size> when only the resolution differs."""
    try:
        info = probe_image(annotation.image_path)
    except ImageReadError as error:
        return _reject_file(annotation, "filename", error.reason, image_error_kind(error))
    annotation.real_size = (info.width, info.height)
    if annotation.declared_size is None:
        annotation.notes["xml without <size>: real image size used"] += 1
        annotation.boxes = boxes
        return annotation
    try:
        fitted, notes = fit_boxes_to_image(boxes, annotation.declared_size, annotation.real_size)
    except BoxError as error:
        return _reject_file(annotation, "size", str(error), error.kind, count=len(boxes))
    annotation.boxes = [replace(box, source=SOURCE_VOC_XML) for box in fitted]
    annotation.notes.update(notes)
    return annotation


def _reject_file(
    annotation: VocAnnotation, location: str, reason: str, kind: RejectKind, count: int = 0
) -> VocAnnotation:
    if count > 1:
        reason = f"{reason} ({count} boxes rejected)"
    image = annotation.image or annotation.named
    annotation.rejects.append(Reject(str(annotation.xml_path), location, reason, kind, image))
    annotation.boxes = []
    annotation.refused = True
    return annotation


def _parse_xml_root(path: Path, annotation: VocAnnotation) -> Element | None:
    try:
        size = path.stat().st_size
    except OSError as error:
        _reject_file(annotation, "file", f"cannot read XML ({error.strerror})", RejectKind.UNREADABLE_FILE)
        return None
    if size > MAX_XML_BYTES:
        _reject_file(annotation, "file", f"XML is {size} bytes, over the {MAX_XML_BYTES}-byte limit",
                     RejectKind.UNREADABLE_FILE)
        return None
    try:
        return SafeElementTree.parse(str(path), forbid_dtd=False).getroot()
    except DefusedXmlException as error:
        _reject_file(
            annotation, "file",
            f"refused: the XML declares entities or external references, which are never expanded ({error})",
            RejectKind.UNSAFE_XML,
        )
    except ParseError as error:
        _reject_file(annotation, "file", f"malformed XML ({error})", RejectKind.MALFORMED_XML)
    except (OSError, UnicodeDecodeError) as error:
        _reject_file(annotation, "file", f"cannot read XML ({error})", RejectKind.UNREADABLE_FILE)
    return None


def _text(element: Element, tag: str) -> str:
    child = element.find(tag)
    return (child.text or "").strip() if child is not None else ""


def _declared_image_name(root: Element) -> str:
    return _text(root, "filename") or Path(_text(root, "path").replace("\\", "/")).name


def _declared_size(root: Element) -> tuple[int, int] | None:
    size = root.find("size")
    if size is None or not _text(size, "width") and not _text(size, "height"):
        return None
    width = _number(_text(size, "width"), "size/width")
    height = _number(_text(size, "height"), "size/height")
    if width <= 0 or height <= 0:
        return None
    return round(width), round(height)


def _voc_objects(root: Element, annotation: VocAnnotation) -> list[Box]:
    boxes = []
    for number, element in enumerate(root.findall("object"), start=1):
        location = f"object {number}"
        try:
            boxes.append(_voc_object_to_box(element, annotation.image or "", location, str(annotation.xml_path)))
        except BoxError as error:
            annotation.rejects.append(
                Reject(str(annotation.xml_path), location, str(error), error.kind, annotation.image or ""))
    return boxes


def _voc_object_to_box(element: Element, image: str, location: str, file: str) -> Box:
    label = _label(_text(element, "name"))
    bndbox = element.find("bndbox")
    if bndbox is None:
        raise BoxError(f"{label} object without <bndbox>", RejectKind.MISSING_VALUE)
    corners = [_number(_text(bndbox, tag), f"bndbox/{tag}") for tag in ("xmin", "ymin", "xmax", "ymax")]
    difficult = _flag(_text(element, "difficult"))
    return make_box(image, label, *corners, difficult=difficult, source=SOURCE_VOC_XML, location=location,
                    file=file)


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise BoxError(f"difficult is {text!r}, expected 0 or 1", RejectKind.NOT_A_NUMBER)


def _find_voc_image(root: Element, xml_path: Path, index: ImageIndex) -> Path | None:
    """The image an XML names, looked for only inside the allowed folders.

    `<filename>` is tried beside the XML (it may lack its extension), then by name in the index;
    `<path>` (labelImg writes where the image was when it was labelled) is used only when it lies
    inside an allowed folder. Names that climb out of the folders are refused.
    """
    filename = _text(root, "filename")
    declared_path = _text(root, "path")
    if filename:
        if index.escapes(xml_path.parent / filename):
            raise BoxError(f"<filename> {filename!r} resolves outside the allowed folders; refused",
                           RejectKind.PATH_OUTSIDE)
        found = index.find_near(xml_path.parent, filename)
        if found is not None:
            return found
    if declared_path:
        candidate = as_written(xml_path.parent / declared_path)
        if index.contains(candidate) and candidate.is_file():
            return candidate
        if not filename:
            if index.escapes(candidate):
                raise BoxError(f"<path> {declared_path!r} resolves outside the allowed folders; refused",
                               RejectKind.PATH_OUTSIDE)
            return index.find_near(xml_path.parent, Path(declared_path.replace("\\", "/")).name)
    return None


def as_written(path: str | Path) -> Path:
    """An absolute path with `.` and `..` taken as written: no symlink is followed."""
    return Path(os.path.abspath(path))


class ImageIndex:
    """Image files under the allowed folders, by file name and by stem, found once.

    A file reached through a symlink inside a folder (a per-file symlink as DVC, git-annex and DataLad
    check data out, or a linked sub-folder) is the folder's own: paths are judged as written, never
    by where a symlink points, and are kept as written.
    """

    def __init__(self, roots: Iterable[str | Path]) -> None:
        self.roots = [as_written(root) for root in roots if Path(root).is_dir()]
        self.by_name: dict[str, Path] = {}
        self.by_stem: dict[str, Path] = {}
        self.duplicates: list[tuple[Path, Path]] = []
        for root in self.roots:
            for directory, files in walk_visible(root):
                for name in sorted(files):
                    if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                        self._add(Path(directory) / name)

    def _add(self, path: Path) -> None:
        if path.name in self.by_name:
            first = self.by_name[path.name]
            if first != path and first.resolve() != path.resolve():
                self.duplicates.append((first, path))
            return
        self.by_name[path.name] = path
        self.by_stem.setdefault(path.stem, path)

    def contains(self, path: Path) -> bool:
        """True when `path`, as written (`..` taken as written, no symlink followed), lies inside an
        allowed folder."""
        written = as_written(path)
        return any(written == root or written.is_relative_to(root) for root in self.roots)

    def escapes(self, path: Path) -> bool:
        return not self.contains(path)

    def find(self, name: str) -> Path | None:
        """By exact file name, then by name without extension."""
        found = self.by_name.get(name)
        if found is None and not Path(name).suffix:
            found = self.by_stem.get(name)
        return found

    def find_near(self, folder: Path, name: str) -> Path | None:
        """Beside `folder` first (a labelImg habit), then anywhere in the index."""
        beside = as_written(folder / name)
        candidates = [beside] if Path(name).suffix else [beside.with_name(beside.name + s) for s in _suffixes()]
        for candidate in candidates:
            if candidate.is_file() and self.contains(candidate):
                return candidate
        found = self.find(Path(name).name)
        if found is not None and self.contains(found):
            return found
        return None


def _suffixes() -> list[str]:
    return [*IMAGE_SUFFIXES, *(suffix.upper() for suffix in IMAGE_SUFFIXES)]


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


def _label(text: str) -> str:
    if not text.strip():
        raise BoxError("empty label", RejectKind.MISSING_VALUE)
    try:
        return canonical_label(text)
    except UnknownLabelError as error:
        raise BoxError(str(error), RejectKind.UNKNOWN_LABEL) from error


def _number(text: str, name: str) -> float:
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

