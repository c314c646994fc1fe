"""Label Studio's JSON both ways: detections out as tasks with pre-annotations, corrections back in as boxes.

Out: one task per image, `data.image` the image's URL (a prefix, by default that of Label Studio's
local-files storage, then the path relative to the input folder), and one prediction whose result
holds a `rectanglelabels` region per box, in percent of the image as Label Studio stores them.
`labeling_config` is the project's labeling config; its names are the constants below, which the
tasks and the reader share.

In: Label Studio's JSON export of annotated tasks (its "JSON" export) as an `AnnotationSet`. Per
image the latest human annotation counts (predictions, drafts and cancelled annotations never do);
regions are turned from percent into pixels with the original size the region records.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from lxml import etree

from chestdet.core.detections import Detection
from chestdet.core.imaging import ImageReadError, probe_image
from chestdet.core.labels import LabelMap, UnknownLabelError, class_colour, default_label_map
from chestdet.core.rejects import Reject, RejectKind
from chestdet.data.annotations import AnnotationSet, Box, BoxError, fit_boxes_to_image, image_error_kind, make_box
from chestdet.data.image_index import ImageIndex

# The labeling config's control (from_name) and object (to_name) tags, and the task data key
# its <Image value="$image"> reads.
FROM_NAME = "label"
TO_NAME = "image"
DATA_KEY = "image"
RESULT_TYPE = "rectanglelabels"
DEFAULT_IMAGE_URL_PREFIX = "/data/local-files/?d="
SOURCE_LABEL_STUDIO = "label-studio"

# Label Studio stores an uploaded file as /data/upload/<project>/<8 hex digits>-<original name>.
UPLOADED_NAME = re.compile(r"^[0-9a-f]{8}-(.+)$")
ROTATION_TOLERANCE = 1e-6  # degrees
_PER_TASK = 1_000_000  # an annotation's order: its task's position times this, plus its own

NOTE_CANCELLED = "Label Studio annotations cancelled (skipped)"
NOTE_SUPERSEDED = "Label Studio annotations superseded by a later one of the same image"
NOTE_UNANNOTATED = "Label Studio tasks without a human annotation (skipped)"
NOTE_NO_BOXES = "Label Studio annotations without boxes (the image is not written unless in --unlabeled-dir)"
NOTE_REAL_SIZE = "Label Studio regions without original_width/height: real image size used"


# --------------------------------------------------------------------------------------------------
# Out: tasks and the labeling config


def image_url(image: str, prefix: str = DEFAULT_IMAGE_URL_PREFIX) -> str:
    """The URL of an image named by its posix path relative to the input folder."""
    return prefix + quote(image.lstrip("/"), safe="/")


def local_files_prefix(folder: str) -> str:
    """The URL prefix of images in `folder`, a folder directly under Label Studio's
    LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT: `/data/local-files/?d=<folder>/`. Label Studio refuses a
    local-files storage whose path is the document root itself, so the root must be the folder above."""
    folder = folder.strip("/")
    return DEFAULT_IMAGE_URL_PREFIX + (quote(folder, safe="/") + "/" if folder else "")


def region(detection: Detection, width: int, height: int, class_names: Mapping[int, str], number: int) -> dict:
    """One `rectanglelabels` result: corners in percent of the image, the class, the score."""
    d = detection
    return {
        "id": f"box{number}",
        "type": RESULT_TYPE,
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {
            "x": round(100 * d.xmin / width, 6),
            "y": round(100 * d.ymin / height, 6),
            "width": round(100 * (d.xmax - d.xmin) / width, 6),
            "height": round(100 * (d.ymax - d.ymin) / height, 6),
            "rotation": 0,
            "rectanglelabels": [class_names.get(d.class_id, f"class {d.class_id}")],
        },
        "score": d.score,
    }


def task(
    image: str, width: int, height: int, detections: Sequence[Detection], class_names: Mapping[int, str],
    version: str, prefix: str = DEFAULT_IMAGE_URL_PREFIX,
) -> dict:
    """One image's task; its prediction's score is that of its most confident box (0 without boxes)."""
    return {
        "data": {DATA_KEY: image_url(image, prefix)},
        "predictions": [{
            "model_version": version,
            "score": max((d.score for d in detections), default=0.0),
            "result": [region(d, width, height, class_names, n) for n, d in enumerate(detections, start=1)],
        }],
    }


def labeling_config(class_names: Mapping[int, str]) -> bytes:
    """The labeling config: the image, and one rectangle label per class in its drawing colour."""
    view = etree.Element("View")
    etree.SubElement(view, "Image", name=TO_NAME, value=f"${DATA_KEY}", zoom="true", zoomControl="true")
    labels = etree.SubElement(view, "RectangleLabels", name=FROM_NAME, toName=TO_NAME, canRotate="false")
    for class_id, name in sorted(class_names.items()):
        colour = "#{:02x}{:02x}{:02x}".format(*class_colour(class_id))
        etree.SubElement(labels, "Label", value=name, background=colour)
    return etree.tostring(view, pretty_print=True, encoding="utf-8")


@dataclass(frozen=True)
class LabelingConfig:
    """What a project's labeling config says about its boxes: the RectangleLabels control's name, the
    Image it labels, the task data key of that image, and the class names it offers."""

    from_name: str
    to_name: str
    data_key: str
    labels: tuple[str, ...]


def read_labeling_config(text: str) -> LabelingConfig:
    """The first RectangleLabels control of a labeling config and its Image; ValueError saying what is missing."""
    from defusedxml import ElementTree
    from defusedxml.common import DefusedXmlException

    try:
        view = ElementTree.fromstring(text)
    except (ElementTree.ParseError, DefusedXmlException) as error:
        raise ValueError(f"the labeling config is not XML that can be read safely ({error})") from None
    control = next(iter(view.iter("RectangleLabels")), None)
    if control is None or not control.get("name") or not control.get("toName"):
        raise ValueError("the labeling config has no <RectangleLabels name=... toName=...>: nothing to put boxes in")
    image = next((tag for tag in view.iter("Image") if tag.get("name") == control.get("toName")), None)
    value = image.get("value", "") if image is not None else ""
    if not value.startswith("$"):
        raise ValueError(f"the labeling config has no <Image name=\"{control.get('toName')}\" value=\"$...\">")
    labels = tuple(label.get("value") for label in control.iter("Label") if label.get("value"))
    return LabelingConfig(control.get("name"), control.get("toName"), value[1:], labels)


# --------------------------------------------------------------------------------------------------
# In: an export of annotated tasks


def image_names(url: str) -> list[str]:
    """The file names an image URL may stand for, likeliest first.

    `/data/local-files/?d=dir/x.png` (any host) is `x.png`, percent-decoded; any other URL or path
    (`/data/upload/...`, `s3://bucket/dir/x.png`, `https://host/x.png`) is the last part of its path.
    An uploaded file, `/data/upload/3/8f3a2b1c-x.png`, is `x.png`, then `8f3a2b1c-x.png`.
    """
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    path = query["d"][0] if "d" in query else unquote(parts.path)
    name = PurePosixPath(path.replace("\\", "/")).name
    if not name:
        return []
    uploaded = UPLOADED_NAME.match(name) if "/upload/" in parts.path else None
    return [uploaded.group(1), name] if uploaded else [name]


@dataclass(frozen=True)
class _Annotation:
    """One human annotation of a task, with what is needed to choose and to report it."""

    location: str  # "task 12, annotation 34"
    url: str
    names: tuple[str, ...]
    found: Path | None
    order: int
    when: datetime | None
    result: Any

    @property
    def image(self) -> str:
        return self.found.name if self.found is not None else (self.names[0] if self.names else self.url)


def read_export(path: str | Path, index: ImageIndex, labels: LabelMap | None = None) -> AnnotationSet:
    """Read a Label Studio JSON export: the boxes of each image's latest annotation, and rejects.

    Images are found by file name in `index`. Several annotations of one image (in one task or
    several) give the latest by updated_at (else created_at; else the last listed); the others are
    counted, as are cancelled annotations and tasks nobody annotated. Labels must be in `labels`
    (default: the shipped NIH map).
    """
    path = Path(path)
    labels = labels or default_label_map()
    result = AnnotationSet()
    by_image: dict[str, list[_Annotation]] = {}
    ordered: list[tuple[int, Reject]] = []  # rejects in the order of the file's tasks
    for position, item in enumerate(_load_tasks(path, result), start=1):
        before = len(result.rejects)
        for annotation in _task_annotations(path, position, item, index, result):
            by_image.setdefault(annotation.image, []).append(annotation)
        ordered += [(position * _PER_TASK, reject) for reject in result.rejects[before:]]
    for image, candidates in by_image.items():
        if len(candidates) > 1:
            result.notes[NOTE_SUPERSEDED] += len(candidates) - 1
        chosen = _latest(candidates)
        before = len(result.rejects)
        _read_annotation(path, image, chosen, result, labels)
        ordered += [(chosen.order, reject) for reject in result.rejects[before:]]
    if ordered:
        result.rejects = [reject for _, reject in sorted(ordered, key=lambda pair: pair[0])]
    return result


def _load_tasks(path: Path, result: AnnotationSet) -> list:
    def refuse(reason: str, kind: RejectKind) -> list:
        result.rejects.append(Reject(str(path), "file", reason, kind))
        return []

    try:
        with open(path, encoding="utf-8-sig") as handle:
            data = json.load(handle)
    except OSError as error:
        return refuse(f"cannot read the export ({error.strerror})", RejectKind.UNREADABLE_FILE)
    except UnicodeDecodeError as error:
        return refuse(f"not UTF-8 text ({error.reason} at byte {error.start})", RejectKind.UNREADABLE_FILE)
    except json.JSONDecodeError as error:
        return refuse(f"not JSON ({error.msg} at line {error.lineno} column {error.colno})", RejectKind.MALFORMED_JSON)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        return refuse(f"expected a list of tasks, found a JSON {type(data).__name__}", RejectKind.MALFORMED_JSON)
    if not data:
        return refuse("no tasks in the export", RejectKind.NOTHING_FOUND)
    return data


def _task_annotations(
    path: Path, position: int, item: Any, index: ImageIndex, result: AnnotationSet
) -> Iterator[_Annotation]:
    """The task's human annotations that were not cancelled; a malformed task is a reject."""
    location = f"task {item.get('id', f'#{position}')}" if isinstance(item, dict) else f"task #{position}"
    try:
        url, annotations = _task_parts(item)
    except BoxError as error:
        result.rejects.append(Reject(str(path), location, str(error), error.kind))
        return
    names = tuple(image_names(url))
    found = next((p for p in map(index.find, names) if p is not None and index.contains(p)), None)
    live = [a for a in annotations if not (isinstance(a, dict) and a.get("was_cancelled"))]
    if len(live) < len(annotations):
        result.notes[NOTE_CANCELLED] += len(annotations) - len(live)
    if not annotations:  # a task skipped through a cancelled annotation is counted once, above
        result.notes[NOTE_UNANNOTATED] += 1
    for number, annotation in enumerate(live, start=1):
        if not isinstance(annotation, dict):
            result.rejects.append(Reject(str(path), f"{location}, annotation #{number}",
                                         "an annotation that is not a JSON object", RejectKind.MALFORMED_JSON,
                                         names[0] if names else ""))
            continue
        here = f"{location}, annotation {annotation.get('id', f'#{number}')}"
        when = _timestamp(annotation.get("updated_at")) or _timestamp(annotation.get("created_at"))
        yield _Annotation(here, url, names, found, position * _PER_TASK + number, when, annotation.get("result"))


def _task_parts(item: Any) -> tuple[str, list]:
    if not isinstance(item, dict):
        raise BoxError(f"a task that is not a JSON object but a {type(item).__name__}", RejectKind.MALFORMED_JSON)
    data = item.get("data")
    if "annotations" not in item:
        hint = " (a JSON-MIN export? export as JSON)" if DATA_KEY in item and data is None else ""
        raise BoxError(f"a task without 'annotations'{hint}", RejectKind.MALFORMED_JSON)
    if not isinstance(item["annotations"], list):
        raise BoxError("'annotations' is not a list", RejectKind.MALFORMED_JSON)
    url = data.get(DATA_KEY) if isinstance(data, dict) else None
    if not isinstance(url, str) or not url.strip():
        raise BoxError(f"a task without data.{DATA_KEY} (the image of <Image value=\"${DATA_KEY}\">)",
                       RejectKind.MISSING_VALUE)
    return url, item["annotations"]


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _latest(annotations: Sequence[_Annotation]) -> _Annotation:
    if all(a.when is not None for a in annotations):
        return max(annotations, key=lambda a: (a.when, a.order))
    return max(annotations, key=lambda a: a.order)


def _read_annotation(path: Path, image: str, annotation: _Annotation, result: AnnotationSet,
                     labels: LabelMap) -> None:
    """The annotation's boxes in the real image's pixels, or the reject saying why not."""
    def reject(location: str, reason: str, kind: RejectKind) -> None:
        result.rejects.append(Reject(str(path), location, reason, kind, image))

    if annotation.found is None:
        return reject(annotation.location, f"image {image} (data.{DATA_KEY} {annotation.url!r}) not found in the "
                      "--image-dir folders", RejectKind.IMAGE_NOT_FOUND)
    if not isinstance(annotation.result, list):
        return reject(annotation.location, "an annotation without a 'result' list", RejectKind.MALFORMED_JSON)
    try:
        info = probe_image(annotation.found)
    except ImageReadError as error:
        return reject(annotation.location, error.reason, image_error_kind(error))
    real_size = (info.width, info.height)
    result.image_paths.setdefault(image, annotation.found)
    result.covered.add(image)
    result.sizes.setdefault(image, real_size)
    if not annotation.result:
        result.notes[NOTE_NO_BOXES] += 1
    for number, item in enumerate(annotation.result, start=1):
        location = f"{annotation.location}, result {number}"
        for label in _labels_of(item, location, reject, labels):
            try:
                box, declared = _region_box(item, image, label, real_size, location, str(path), result)
                [box], notes = fit_boxes_to_image([box], declared, real_size)
            except BoxError as error:
                reject(location, str(error), error.kind)
                continue
            result.boxes.append(box)
            result.notes.update(notes)


def _labels_of(item: Any, location: str, reject: Callable[[str, str, RejectKind], None],
               labels: LabelMap) -> list[str]:
    """The canonical class names of a rectanglelabels region; [] after rejecting anything else."""
    try:
        value = _check_region(item)
        named = value.get("rectanglelabels")
        if not isinstance(named, list) or not named or not all(isinstance(x, str) for x in named):
            raise BoxError("a region without a class (value.rectanglelabels)", RejectKind.MISSING_VALUE)
    except BoxError as error:
        reject(location, str(error), error.kind)
        return []
    known = []
    for label in named:
        try:
            known.append(labels.canonical(label))
        except UnknownLabelError as error:
            reject(location, str(error), RejectKind.UNKNOWN_LABEL)
    return known


def _check_region(item: Any) -> dict:
    if not isinstance(item, dict):
        raise BoxError("a result that is not a JSON object", RejectKind.MALFORMED_JSON)
    kind = item.get("type")
    if kind != RESULT_TYPE:
        raise BoxError(f"a {kind!r} result, not a rectangle with a class ({RESULT_TYPE}); only those are read",
                       RejectKind.UNSUPPORTED_RESULT)
    value = item.get("value")
    if not isinstance(value, dict):
        raise BoxError("a region without a 'value' object", RejectKind.MALFORMED_JSON)
    rotation = _number(value, "rotation", default=0.0)
    if abs(rotation) > ROTATION_TOLERANCE:
        raise BoxError(f"a rectangle rotated by {rotation:g} degrees; only axis-aligned boxes are read",
                       RejectKind.UNSUPPORTED_RESULT)
    return value


def _region_box(
    item: dict, image: str, label: str, real_size: tuple[int, int], location: str, file: str, result: AnnotationSet
) -> tuple[Box, tuple[int, int]]:
    """A region's box in pixels of the size it was drawn on, and that size (the real one when not recorded)."""
    value = item["value"]
    x, y, w, h = (_number(value, key) for key in ("x", "y", "width", "height"))
    declared = _original_size(item)
    if declared is None:
        declared = real_size
        result.notes[NOTE_REAL_SIZE] += 1
    sx, sy = declared[0] / 100.0, declared[1] / 100.0
    box = make_box(image, label, x * sx, y * sy, (x + w) * sx, (y + h) * sy, source=SOURCE_LABEL_STUDIO,
                   location=location, file=file)
    return box, declared


def _original_size(item: dict) -> tuple[int, int] | None:
    width, height = item.get("original_width"), item.get("original_height")
    if width is None and height is None:
        return None
    values = []
    for name, value in (("original_width", width), ("original_height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise BoxError(f"{name} is {value!r}, not a positive number", RejectKind.NOT_A_NUMBER)
        values.append(round(value))
    return values[0], values[1]


def _number(value: dict, key: str, default: float | None = None) -> float:
    number = value.get(key, default)
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        raise BoxError(f"value.{key} is {number!r}, not a number", RejectKind.NOT_A_NUMBER)
    return float(number)

