"""Ground truth as evaluation takes it: NIH's CSV, labelImg XML (a file or folder) or TFRecords (a file,
a glob, or a folder of `<split>-*` shards), as Boxes in the pixels of the image detection saw, and
as the metrics' table. Its classes are a label map's: the records' own (label_map.pbtxt beside them)
or the shipped one, and a map given for records must be theirs.

One ground truth for training and evaluation: records hold the boxes the records step accepted; an NIH
CSV's or labelImg XML's boxes go through that step's own rules (duplicates dropped by
dataset.combine_sources, then records.fit_boxes on the image detection saw), so evaluation rejects,
rescales and clips exactly what the records step does, and leaves out an image with no box left."""

from __future__ import annotations

import glob
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from chestdet.core.contracts import FOLD_DIR, LABEL_MAP_FILE
from chestdet.core.errors import EvaluationError
from chestdet.core.labels import LabelMap, default_label_map
from chestdet.core.logs import progress_logging
from chestdet.core.rejects import RejectKind
from chestdet.data.annotations import (
    NIH_IMAGE_SIZE,
    SOURCE_NIH_CSV,
    AnnotationSet,
    Box,
    BoxError,
    Reject,
    fit_boxes_to_image,
    read_nih_csv,
    same_picture,
)
from chestdet.data.dataset import combine_sources
from chestdet.data.records import RecordOptions, fit_boxes
from chestdet.data.split import TEST
from chestdet.data.voc_xml import load_voc_dir, parse_voc_xml
from chestdet.evaluation.boxes import DIFFICULT, GROUND_TRUTH_COLUMNS, image_key

log = logging.getLogger("chestdet.evaluation.evaluate")

SOURCE_TFRECORD = "tfrecord"
NOT_RECORD_SUFFIXES = {".json", ".csv", ".txt", ".md", ".pbtxt", ".config"}


@dataclass
class GroundTruth:
    boxes: list[Box]
    rejects: list[Reject]
    images: list[str] | None  # every image the source lists, boxed or not (TFRecords); else None
    description: str
    # (width, height) of the image the boxes' pixels belong to, where known: a TFRecord's stored image
    # (the dataset step may have downscaled it), NIH's 1024x1024 for its CSV, the image beside a labelImg
    # XML. Detections are in the pixels of the image detection saw; fit_to_detected brings the boxes there.
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)  # image keys whose every box was rejected: not evaluated


_FOLD_NAME = re.compile("^" + FOLD_DIR.format(fold=r"\d+") + "$")


def records_folder(spec: str | Path) -> Path | None:
    """The folder of TFRecords ground truth (a folder of shards, or the folder of a record file or of a
    glob's first file); None for an NIH CSV or labelImg XML."""
    text, path = str(spec), Path(spec)
    if not path.exists() and any(char in text for char in "*?["):
        files = sorted(Path(name) for name in glob.glob(text) if Path(name).is_file())
        return files[0].parent if files else None
    if path.is_file():
        return None if path.suffix.lower() in (".csv", ".xml") else path.parent
    if path.is_dir() and not any(p.suffix.lower() == ".xml" for p in path.rglob("*")):
        return path
    return None


def ground_truth_labels(spec: str | Path, given: LabelMap | None = None) -> LabelMap:
    """The label map ground truth is read with: for TFRecords, the one the records step wrote beside them
    (in a cross-validation fold's folder above), which a given map must equal; else the given map, or the
    shipped one."""
    folder = records_folder(spec)
    candidates = [folder, *([folder.parent] if _FOLD_NAME.match(folder.name) else [])] if folder else []
    own = next((f / LABEL_MAP_FILE for f in candidates if (f / LABEL_MAP_FILE).is_file()), None)
    if own is None:
        return given or default_label_map()
    records = LabelMap.load(own)
    if given is None:
        return records
    given.check_same_as(records, "the ground-truth records' label map")
    return given


def read_ground_truth(spec: str | Path, split: str = TEST, labels: LabelMap | None = None) -> GroundTruth:
    """NIH CSV, a labelImg XML file or folder, or TFRecords (a file, a glob, or a folder of
    `<split>-*` shards); classes are `labels`' (default: the shipped map)."""
    text = str(spec)
    path = Path(text)
    labels = labels or default_label_map()
    if not path.exists() and any(char in text for char in "*?["):
        files = sorted(Path(name) for name in glob.glob(text) if Path(name).is_file())
        if not files:
            raise EvaluationError(f"{text}: no TFRecord files match this pattern")
        return read_tfrecords(files, labels)
    if path.is_file():
        if path.suffix.lower() == ".csv":
            boxes, rejects = read_nih_csv(path, labels)
            # NIH's boxes are in pixels of its 1024x1024 PNGs, whatever copy detection ran on
            sizes = {box.image: NIH_IMAGE_SIZE for box in boxes}
            return GroundTruth(boxes, rejects, None, f"NIH CSV {path}", sizes)
        if path.suffix.lower() == ".xml":
            annotation = parse_voc_xml(path, require_image=False, labels=labels)
            measured = {annotation.image: annotation.real_size} if annotation.real_size and annotation.image else {}
            return GroundTruth(annotation.boxes, annotation.rejects, None, f"labelImg XML {path}", measured)
        return read_tfrecords([path], labels)
    if path.is_dir():
        has_xml = any(p.suffix.lower() == ".xml" for p in path.rglob("*"))
        shards = sorted(
            p for p in path.iterdir()
            if p.is_file() and p.name.startswith(f"{split}-") and p.suffix.lower() not in NOT_RECORD_SUFFIXES
        )
        if has_xml and shards:
            raise EvaluationError(f"{path}: holds both labelImg .xml files and {split}-* TFRecord shards; name one")
        if has_xml:
            found = load_voc_dir(path, require_image=False, labels=labels)
            return GroundTruth(found.boxes, found.rejects, None, f"labelImg XML folder {path}", found.sizes)
        if shards:
            return read_tfrecords(shards, labels)
        raise EvaluationError(f"{path}: holds neither labelImg .xml files nor {split}-* TFRecord shards")
    raise EvaluationError(f"{path}: ground truth not found")


def read_tfrecords(files: Sequence[Path], labels: LabelMap | None = None) -> GroundTruth:
    """Decode records with the OD API's TfExampleDecoder; boxes from normalised to pixels, class ids named by
    `labels` (default: the shipped map)."""
    from object_detection.data_decoders.tf_example_decoder import TfExampleDecoder
    from tqdm import tqdm

    from chestdet.core import compat

    compat.apply()
    decoder, labels = TfExampleDecoder(), labels or default_label_map()
    names = ", ".join(str(p) for p in files[:3]) + (" ..." if len(files) > 3 else "")
    truth = GroundTruth([], [], [], f"TFRecords {names}")
    with progress_logging(), tqdm(desc="ground-truth records", unit="record", disable=None, leave=False) as bar:
        for path in files:
            _read_record_file(path, decoder, truth, bar, labels)
    return truth


def _read_record_file(path: Path, decoder: object, truth: GroundTruth, bar: object, labels: LabelMap) -> None:
    import tensorflow as tf
    from object_detection.core.standard_fields import InputDataFields as fields

    number = 0
    try:
        for number, serialized in enumerate(tf.data.TFRecordDataset(str(path)), start=1):
            bar.update(1)
            try:
                decoded = decoder.decode(serialized)
            except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
                truth.rejects.append(Reject(str(path), f"record {number}", _tf_message(error)))
                continue
            image, boxes, rejects = _record_boxes(decoded, fields, str(path), number, labels)
            truth.rejects.extend(rejects)
            if image in truth.sizes:
                truth.rejects.append(Reject(str(path), f"record {number}", f"{image} is in an earlier record too",
                                            image=image))
            elif image:
                truth.images.append(image)
                truth.boxes.extend(boxes)
                height, width = (int(v) for v in decoded[fields.original_image_spatial_shape].numpy())
                truth.sizes[image] = (width, height)
    except tf.errors.DataLossError as error:
        truth.rejects.append(Reject(str(path), f"after record {number}", f"corrupt file: {_tf_message(error)}"))
    except tf.errors.OpError as error:
        truth.rejects.append(Reject(str(path), "file", f"cannot read as TFRecord: {_tf_message(error)}"))


def _tf_message(error: Exception) -> str:
    message = getattr(error, "message", str(error))
    return message.strip().splitlines()[0] if message.strip() else type(error).__name__


def _record_boxes(decoded: dict, fields: type, source: str, number: int,
                  labels: LabelMap) -> tuple[str, list[Box], list[Reject]]:
    where = f"record {number}"
    image = image_key(decoded[fields.filename].numpy().decode("utf-8", "replace"))
    if not image:
        return "", [], [Reject(source, where, "no image/filename")]
    height, width = (int(v) for v in decoded[fields.original_image_spatial_shape].numpy())
    normalised = decoded[fields.groundtruth_boxes].numpy().reshape(-1, 4)
    classes = decoded[fields.groundtruth_classes].numpy().reshape(-1)
    difficult = decoded[fields.groundtruth_difficult].numpy().reshape(-1)
    if len(difficult) != len(normalised):
        difficult = np.zeros(len(normalised), dtype=bool)
    boxes, rejects = [], []
    for k, ((ymin, xmin, ymax, xmax), label_id, hard) in enumerate(zip(normalised, classes, difficult, strict=True)):
        box_where = f"{where} ({image}) object {k + 1}"
        try:
            label = labels.name_of(int(label_id))
        except ValueError as error:
            rejects.append(Reject(source, box_where, str(error), image=image))
            continue
        if not (xmax > xmin and ymax > ymin):
            rejects.append(Reject(source, box_where, "box of zero or negative size", image=image))
            continue
        boxes.append(
            Box(image, label, float(xmin) * width, float(ymin) * height, float(xmax) * width,
                float(ymax) * height, bool(hard), SOURCE_TFRECORD, box_where)
        )
    return image, boxes, rejects


def rescale_to_detected_sizes(truth: GroundTruth, detected: dict[str, tuple[int, int]]) -> GroundTruth:
    """Bring records' boxes to the pixels of the image detection saw when that is another resolution of
    the picture they were drawn on (a downscaled record, records of a resized copy); a different aspect
    ratio means another picture, and its boxes are rejected."""
    boxes, rejects, rescaled = [], list(truth.rejects), set()
    for box in truth.boxes:
        stored, seen = truth.sizes.get(box.image), detected.get(box.image)
        if stored is None or seen is None or stored == seen:
            boxes.append(box)
            continue
        if not same_picture(stored, seen):
            rejects.append(Reject(truth.description, box.location or box.image,
                                  f"{box.image}: the boxes are for a {stored[0]}x{stored[1]} image but detection "
                                  f"saw {seen[0]}x{seen[1]} (different aspect ratio)", image=box.image))
            continue
        sx, sy = seen[0] / stored[0], seen[1] / stored[1]
        boxes.append(replace(box, xmin=box.xmin * sx, ymin=box.ymin * sy, xmax=box.xmax * sx, ymax=box.ymax * sy))
        rescaled.add(box.image)
    if rescaled:
        log.info("boxes of %d images rescaled to the image size detection saw", len(rescaled))
    return replace(truth, boxes=boxes, rejects=rejects)


def fit_to_detected(truth: GroundTruth, detected: Mapping[str, tuple[int, int]], labels: LabelMap) -> GroundTruth:
    """The boxes in the pixels of the image detection saw (`detected`: image key -> its width, height).

    Records' boxes are those the records step accepted: only rescaled. An NIH CSV's or labelImg XML's go
    through the records step's rules: exact duplicates dropped (dataset.combine_sources), then
    records.fit_boxes on the detected image (the label in the map, NIH's 1024x1024 boxes scaled to it, a
    box crossing the border a little clipped, one further out rejected). An image with no box left is
    rejected and left out of the evaluation, as the records step writes no such image.
    """
    if truth.images is not None:
        return rescale_to_detected_sizes(truth, detected)
    merged, _ = combine_sources([AnnotationSet(list(truth.boxes))])
    options = RecordOptions(class_ids=labels.class_ids)
    boxes, rejects, dropped, notes = [], list(truth.rejects), set(), Counter()
    for image, own in merged.items():
        kept, refused, fitted = _fit_image(image, own, detected.get(image_key(image)), truth.sizes.get(image), options)
        boxes += kept
        rejects += refused
        notes.update(fitted)
        if not kept:
            rejects.append(Reject(own[0].file, "image", f"{image}: all {len(own)} boxes rejected; image not evaluated",
                                  RejectKind.NO_USABLE_BOXES, image))
            dropped.add(image_key(image))
    for note, count in sorted(notes.items()):
        log.info("ground truth: %s: %d", note, count)
    return replace(truth, boxes=boxes, rejects=rejects, dropped=dropped)


def _fit_image(image: str, boxes: list[Box], seen: tuple[int, int] | None, drawn: tuple[int, int] | None,
               options: RecordOptions) -> tuple[tuple[Box, ...], list[Reject], Counter]:
    """One image's boxes fitted to the size detection saw (`seen`), else to the size they were drawn on;
    boxes of neither size known (labelImg XML without its image) are taken as they are."""
    real = seen or drawn
    if real is None:
        return tuple(boxes), [], Counter()
    if boxes[0].source != SOURCE_NIH_CSV and drawn is not None and drawn != real:  # NIH's: fit_boxes scales them
        try:
            boxes, _ = fit_boxes_to_image(boxes, drawn, real)
        except BoxError as error:
            return (), [Reject(boxes[0].file, boxes[0].location or image, f"{image}: {error}", error.kind, image)], \
                Counter()
    return fit_boxes(image, Path(boxes[0].file), boxes, real, options)


def ground_truth_frame(boxes: Iterable[Box]) -> pd.DataFrame:
    """The metrics' ground-truth table, with each box's difficult flag."""
    rows = [
        {"image": image_key(b.image), "label": b.label, "xmin": b.xmin, "ymin": b.ymin, "xmax": b.xmax, "ymax": b.ymax,
         DIFFICULT: bool(b.difficult)}
        for b in boxes
    ]
    frame = pd.DataFrame(rows, columns=[*GROUND_TRUTH_COLUMNS, DIFFICULT])
    return frame.astype({**{c: float for c in ("xmin", "ymin", "xmax", "ymax")}, DIFFICULT: bool})
