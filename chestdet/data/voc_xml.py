"""labelImg's Pascal VOC XML: one file per image, read through defusedxml, each box checked against the
real image; a bad file or object becomes a `Reject`, never a stop."""


from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeElementTree
from defusedxml import DefusedXmlException

from chestdet.core.folders import walk_visible
from chestdet.core.imaging import (
    ImageReadError,
    probe_image,
)
from chestdet.core.labels import LabelMap
from chestdet.core.rejects import Reject, RejectKind
from chestdet.data.annotations import (
    SOURCE_VOC_XML,
    AnnotationSet,
    Box,
    BoxError,
    VocAnnotation,
    fit_boxes_to_image,
    image_error_kind,
    make_box,
    parse_label,
    parse_number,
)
from chestdet.data.image_index import ImageIndex, as_written

MAX_XML_BYTES = 10_000_000


def read_voc_xml(
    path: str | Path, image_dirs: Sequence[str | Path] = (), require_image: bool = True,
    labels: LabelMap | None = None,
) -> tuple[list[Box], list[Reject]]:
    """Read one labelImg XML file; boxes are keyed by the image's file name (with its extension)."""
    annotation = parse_voc_xml(path, image_dirs, require_image=require_image, labels=labels)
    return annotation.boxes, annotation.rejects


def read_voc_dir(
    directory: str | Path, image_dirs: Sequence[str | Path] = (), require_image: bool = True,
    labels: LabelMap | None = None,
) -> tuple[list[Box], list[Reject]]:
    """Read every *.xml under a folder (recursively)."""
    result = load_voc_dir(directory, image_dirs, require_image=require_image, labels=labels)
    return result.boxes, result.rejects


def load_voc_dir(
    directory: str | Path,
    image_dirs: Sequence[str | Path] = (),
    require_image: bool = True,
    index: ImageIndex | None = None,
    labels: LabelMap | None = None,
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
        result.add(parse_voc_xml(xml_path, image_dirs, require_image=require_image, index=index, labels=labels))
    return result


def parse_voc_xml(
    path: str | Path,
    image_dirs: Sequence[str | Path] = (),
    require_image: bool = True,
    index: ImageIndex | None = None,
    labels: LabelMap | None = None,
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
    boxes = _voc_objects(root, annotation, labels)
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
    width = parse_number(_text(size, "width"), "size/width")
    height = parse_number(_text(size, "height"), "size/height")
    if width <= 0 or height <= 0:
        return None
    return round(width), round(height)


def _voc_objects(root: Element, annotation: VocAnnotation, labels: LabelMap | None) -> list[Box]:
    boxes = []
    for number, element in enumerate(root.findall("object"), start=1):
        location = f"object {number}"
        try:
            boxes.append(_voc_object_to_box(element, annotation.image or "", location, str(annotation.xml_path),
                                            labels))
        except BoxError as error:
            annotation.rejects.append(
                Reject(str(annotation.xml_path), location, str(error), error.kind, annotation.image or ""))
    return boxes


def _voc_object_to_box(element: Element, image: str, location: str, file: str, labels: LabelMap | None) -> Box:
    label = parse_label(_text(element, "name"), labels)
    bndbox = element.find("bndbox")
    if bndbox is None:
        raise BoxError(f"{label} object without <bndbox>", RejectKind.MISSING_VALUE)
    corners = [parse_number(_text(bndbox, tag), f"bndbox/{tag}") for tag in ("xmin", "ymin", "xmax", "ymax")]
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
