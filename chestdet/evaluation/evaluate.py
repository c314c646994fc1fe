"""The evaluation stage: read detections and ground truth, decide which images count, compute, write.

`evaluate_detections` is the library entry point (for training's checkpoint choice, for instance);
`run_evaluation` adds the files: it reads a detections folder, NIH CSV / labelImg XML / TFRecord
ground truth and an optional split, and writes metrics.json, report.md, report.html, plots and
rejects.csv. Images are matched by file name, so `sub/00000001_000.png` in detections.csv meets
`00000001_000.png` in BBox_List_2017.csv.
"""

from __future__ import annotations

import glob
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from chestdet.core import atomic
from chestdet.core.contracts import DETECTIONS_CSV, IMAGES_CSV, METRICS_JSON
from chestdet.core.csvfiles import read_frame
from chestdet.core.errors import EvaluationError
from chestdet.core.labels import UnknownLabelError, canonical_label, class_name
from chestdet.core.logs import progress_logging
from chestdet.core.rejects import write_rejects
from chestdet.data.annotations import NIH_IMAGE_SIZE, Box, Reject, read_nih_csv, same_picture
from chestdet.data.split import SplitFileError, patient_of, read_split, split_images, split_patients
from chestdet.data.voc_xml import read_voc_dir, read_voc_xml
from chestdet.evaluation import bootstrap, gallery
from chestdet.evaluation.metrics import DIFFICULT, GROUND_TRUTH_COLUMNS, EvaluationSettings, Metrics, compute_metrics

log = logging.getLogger("chestdet.evaluation.evaluate")

SOURCE_TFRECORD = "tfrecord"
NOT_RECORD_SUFFIXES = {".json", ".csv", ".txt", ".md", ".pbtxt", ".config"}
OUTPUT_FILES = (METRICS_JSON, "report.md", "report.html", "pr_curves.png", "froc.png", "confusion_matrix.png")


def image_key(name: str) -> str:
    """The file name an image is matched by: the last part of a relative path, / or \\ separated."""
    return PurePosixPath(str(name).strip().replace("\\", "/")).name


# ---------------------------------------------------------------------------------------------
# Detections


@dataclass
class DetectionSet:
    """Detections keyed by image file name, the images detection processed, and the rejected rows."""

    table: pd.DataFrame  # columns image (key), label, score, xmin, ymin, xmax, ymax
    processed: list[str] | None  # image keys from images.csv; None when it is absent
    rejects: list[Reject] = field(default_factory=list)
    source: Path | None = None
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # (width, height) detection saw
    paths: dict[str, list[str]] = field(default_factory=dict)  # image key -> images.csv's image and path


def detections_frame(frame: pd.DataFrame, source: str = "detections") -> tuple[pd.DataFrame, list[Reject]]:
    """Validate a detections.csv-shaped table; returns the usable rows as the metrics' table and
    a Reject per unusable row (row numbers count the header as row 1)."""
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
    labels = _row_labels(frame)
    good = (
        np.isfinite(numbers).all(axis=1)
        & (numbers[:, 3] >= numbers[:, 1])  # xmax >= xmin
        & (numbers[:, 4] >= numbers[:, 2])  # ymax >= ymin
        & np.array([bool(key) for key in keys])
        & np.array([label is not None for label in labels])
    )
    table = pd.DataFrame(numbers[good], columns=list(NUMBER_COLUMNS))
    table.insert(0, "label", [label for label, ok in zip(labels, good, strict=True) if ok])
    table.insert(0, "image", [key for key, ok in zip(keys, good, strict=True) if ok])
    # Rows the fast path doubts are read one by one: that gives the exact reason, or keeps a row that
    # only pandas could not parse.
    rejects: list[Reject] = []
    rescued = []
    for position in np.flatnonzero(~good):
        try:
            rescued.append(_detection_row(frame.iloc[position].to_dict()))
        except ValueError as error:
            rejects.append(Reject(source, f"row {lines[position]}", str(error), image=_row_image(frame, position)))
    if rescued:
        table = pd.concat([table, pd.DataFrame(rescued)], ignore_index=True)
    return table[["image", "label", *NUMBER_COLUMNS]].astype({c: float for c in NUMBER_COLUMNS}), rejects


NUMBER_COLUMNS = ("score", "xmin", "ymin", "xmax", "ymax")


def _cached_map(values: Iterable, function) -> list:  # noqa: ANN001
    cache: dict = {}
    result = []
    for value in values:
        key = value if isinstance(value, str) else repr(value)
        if key not in cache:
            cache[key] = function(value)
        result.append(cache[key])
    return result


def _row_labels(frame: pd.DataFrame) -> list[str | None]:
    """The canonical label of every row, None where it has no usable class."""
    names = frame["class_name"] if "class_name" in frame.columns else [""] * len(frame)
    ids = frame["class_id"] if "class_id" in frame.columns else [""] * len(frame)

    def label(pair: tuple) -> str | None:
        try:
            return _detection_label({"class_name": pair[0], "class_id": pair[1]})
        except ValueError:
            return None

    return _cached_map(zip(names, ids, strict=True), label)


def _detection_row(row: dict) -> dict:
    image = "" if _blank(row.get("image")) else image_key(str(row["image"]))
    if not image:
        raise ValueError("empty image name")
    label = _detection_label(row)
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


def _detection_label(row: dict) -> str:
    if not _blank(row.get("class_name")):
        try:
            return canonical_label(str(row["class_name"]))
        except UnknownLabelError as error:
            raise ValueError(str(error)) from None
    try:
        return class_name(int(float(row.get("class_id"))))
    except (TypeError, ValueError) as error:
        raise ValueError(f"no usable class_name or class_id ({error})") from None


def read_detections(path: str | Path) -> DetectionSet:
    """Read detect.py's detections.csv (or the folder holding it) and the images.csv beside it."""
    path = Path(path)
    csv_path = path / DETECTIONS_CSV if path.is_dir() else path
    if not csv_path.is_file():
        raise EvaluationError(f"{csv_path}: detections file not found")
    frame = _read_csv(csv_path)
    table, rejects = detections_frame(frame, str(csv_path))
    sizes = image_sizes(frame)
    images_path = csv_path.parent / IMAGES_CSV
    processed = None
    if images_path.is_file():
        images = _read_csv(images_path)
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


def _read_csv(path: Path) -> pd.DataFrame:
    return read_frame(path)


# ---------------------------------------------------------------------------------------------
# Ground truth


@dataclass
class GroundTruth:
    boxes: list[Box]
    rejects: list[Reject]
    images: list[str] | None  # every image the source lists, boxed or not (TFRecords); else None
    description: str
    # (width, height) of the image the boxes' pixels belong to, where known: a TFRecord's stored image
    # (the dataset step may have downscaled it), NIH's 1024x1024 for its CSV. Detections are in the
    # pixels of the image detection saw; rescale_to_detected_sizes brings the boxes there.
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)


def read_ground_truth(spec: str | Path, split: str = "test") -> GroundTruth:
    """NIH CSV, a labelImg XML file or folder, or TFRecords (a file, a glob, or a folder of
    `<split>-*` shards)."""
    text = str(spec)
    path = Path(text)
    if not path.exists() and any(char in text for char in "*?["):
        files = sorted(Path(name) for name in glob.glob(text) if Path(name).is_file())
        if not files:
            raise EvaluationError(f"{text}: no TFRecord files match this pattern")
        return read_tfrecords(files)
    if path.is_file():
        if path.suffix.lower() == ".csv":
            boxes, rejects = read_nih_csv(path)
            # NIH's boxes are in pixels of its 1024x1024 PNGs, whatever copy detection ran on
            sizes = {box.image: NIH_IMAGE_SIZE for box in boxes}
            return GroundTruth(boxes, rejects, None, f"NIH CSV {path}", sizes)
        if path.suffix.lower() == ".xml":
            boxes, rejects = read_voc_xml(path, require_image=False)
            return GroundTruth(boxes, rejects, None, f"labelImg XML {path}")
        return read_tfrecords([path])
    if path.is_dir():
        has_xml = any(p.suffix.lower() == ".xml" for p in path.rglob("*"))
        shards = sorted(
            p for p in path.iterdir()
            if p.is_file() and p.name.startswith(f"{split}-") and p.suffix.lower() not in NOT_RECORD_SUFFIXES
        )
        if has_xml and shards:
            raise EvaluationError(f"{path}: holds both labelImg .xml files and {split}-* TFRecord shards; name one")
        if has_xml:
            boxes, rejects = read_voc_dir(path, require_image=False)
            return GroundTruth(boxes, rejects, None, f"labelImg XML folder {path}")
        if shards:
            return read_tfrecords(shards)
        raise EvaluationError(f"{path}: holds neither labelImg .xml files nor {split}-* TFRecord shards")
    raise EvaluationError(f"{path}: ground truth not found")


def read_tfrecords(files: Sequence[Path]) -> GroundTruth:
    """Decode records with the OD API's TfExampleDecoder; boxes from normalised to pixels."""
    from object_detection.data_decoders.tf_example_decoder import TfExampleDecoder
    from tqdm import tqdm

    from chestdet.core import compat

    compat.apply()
    decoder = TfExampleDecoder()
    names = ", ".join(str(p) for p in files[:3]) + (" ..." if len(files) > 3 else "")
    truth = GroundTruth([], [], [], f"TFRecords {names}")
    with progress_logging(), tqdm(desc="ground-truth records", unit="record", disable=None, leave=False) as bar:
        for path in files:
            _read_record_file(path, decoder, truth, bar)
    return truth


def _read_record_file(path: Path, decoder: object, truth: GroundTruth, bar: object) -> None:
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
            image, boxes, rejects = _record_boxes(decoded, fields, str(path), number)
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


def _record_boxes(decoded: dict, fields: type, source: str, number: int) -> tuple[str, list[Box], list[Reject]]:
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
            label = class_name(int(label_id))
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
    """Bring boxes to the pixels of the image detection saw when that is another resolution of the
    picture they were drawn on (a downscaled record, a resized copy of an NIH PNG); a different
    aspect ratio means another picture, and its boxes are rejected."""
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


# ---------------------------------------------------------------------------------------------
# Split


def read_split_images(path: str | Path, split: str) -> list[str]:
    """Image keys of one split of the dataset step's split.csv."""
    try:
        return [image_key(name) for name in split_images(read_split(path), split, path)]
    except SplitFileError as error:
        raise EvaluationError(str(error)) from None


# ---------------------------------------------------------------------------------------------
# Putting it together


def ground_truth_frame(boxes: Iterable[Box]) -> pd.DataFrame:
    """The metrics' ground-truth table, with each box's difficult flag."""
    rows = [
        {"image": image_key(b.image), "label": b.label, "xmin": b.xmin, "ymin": b.ymin, "xmax": b.xmax, "ymax": b.ymax,
         DIFFICULT: bool(b.difficult)}
        for b in boxes
    ]
    frame = pd.DataFrame(rows, columns=[*GROUND_TRUTH_COLUMNS, DIFFICULT])
    return frame.astype({**{c: float for c in ("xmin", "ymin", "xmax", "ymax")}, DIFFICULT: bool})


def _duplicate_keys(names: Iterable[str]) -> list[str]:
    seen, duplicates = set(), set()
    for name in names:
        (duplicates if name in seen else seen).add(name)
    return sorted(duplicates)


def evaluate_detections(
    detections: pd.DataFrame,
    ground_truth: Sequence[Box],
    images: Iterable[str] | None = None,
    settings: EvaluationSettings | None = None,
) -> Metrics:
    """Score detections (detections.csv's columns) against ground-truth Boxes.

    `images` names every image detection ran on (paths or file names), so images without
    detections and without boxes count; boxes of other images are left out. Without it, the images
    named by the detections or the boxes are evaluated.
    """
    table, rejects = detections_frame(detections.astype(object), "detections")
    if rejects:
        raise ValueError(f"unusable detections: {rejects[0].location}: {rejects[0].reason} ({len(rejects)} rows)")
    gt = ground_truth_frame(ground_truth)
    if images is None:
        keys = sorted(set(table["image"]) | set(gt["image"]))
    else:
        keys = list(dict.fromkeys(image_key(name) for name in images))
    metrics = compute_metrics(
        gt[gt["image"].isin(keys)], table[table["image"].isin(keys)], keys, settings or EvaluationSettings()
    )
    left_out = gt[~gt["image"].isin(keys)]
    if len(left_out):
        metrics.notes.append(f"{len(left_out)} ground-truth boxes on images not evaluated were left out")
    return metrics


@dataclass
class EvaluationInputs:
    """What run_evaluation decided to evaluate, with everything it left out said in `notes`."""

    ground_truth: pd.DataFrame
    detections: pd.DataFrame
    images: list[str]
    rejects: list[Reject]
    notes: list[str]
    sources: dict[str, str]
    image_paths: dict[str, list[str]] = field(default_factory=dict)  # from images.csv: key -> [image, path]


def select_images(detection_set: DetectionSet, split_images: list[str] | None) -> tuple[list[str], list[str]]:
    """The evaluated images and what was said about the choice."""
    notes: list[str] = []
    if detection_set.processed is not None:
        processed = list(dict.fromkeys(detection_set.processed))
    else:
        processed = list(dict.fromkeys(detection_set.table["image"]))
        if split_images is not None:
            processed = list(dict.fromkeys([*processed, *split_images]))
            notes.append(
                f"{IMAGES_CSV} not found beside the detections: evaluating the images with detections "
                "plus every image of the split (a split image without detections counts as processed)"
            )
        else:
            notes.append(
                f"{IMAGES_CSV} not found beside the detections: evaluating only the images that have "
                "detections, so images without any detection are not counted"
            )
    duplicates = _duplicate_keys(detection_set.processed or [])
    if duplicates:
        raise EvaluationError(
            f"{detection_set.source}: {len(duplicates)} processed images share a file name (e.g. "
            f"{duplicates[0]}); ground truth is matched by file name, so they cannot be told apart"
        )
    if split_images is None:
        return processed, notes
    in_split = set(split_images)
    chosen = [image for image in processed if image in in_split]
    not_run = len(in_split - set(processed))
    if not_run:
        notes.append(f"{not_run} images of the split were not run through detection and are not evaluated")
    outside = len(processed) - len(chosen)
    if outside:
        notes.append(f"{outside} processed images are outside the split and are not evaluated")
    return chosen, notes


def prepare_inputs(
    detections_path: str | Path,
    ground_truth_spec: str | Path,
    split_file: str | Path | None = None,
    split: str = "test",
) -> EvaluationInputs:
    detection_set = read_detections(detections_path)
    truth = read_ground_truth(ground_truth_spec, split)
    if truth.sizes:
        truth = rescale_to_detected_sizes(truth, detection_set.sizes)
    split_images = read_split_images(split_file, split) if split_file else None
    images, notes = select_images(detection_set, split_images)
    if not images:
        raise EvaluationError("no image to evaluate: the detections and the split have no image in common")
    chosen = set(images)
    gt = ground_truth_frame(truth.boxes)
    if gt.empty and not truth.images:
        raise EvaluationError(f"{ground_truth_spec}: no usable ground-truth box ({len(truth.rejects)} rejected)")
    left_out = gt[~gt["image"].isin(chosen)]
    if len(left_out):
        notes.append(
            f"{left_out['image'].nunique()} ground-truth images ({len(left_out)} boxes) were not among the "
            "evaluated images and are left out"
        )
    if truth.images is not None:
        unlisted = len(set(truth.images) - chosen)
        if unlisted and split_images is None:
            notes.append(f"{unlisted} images of the ground-truth records have no detection result")
    stray = ~detection_set.table["image"].isin(chosen)
    if detection_set.processed is not None:
        unlisted = set(detection_set.table.loc[stray, "image"]) - set(detection_set.processed)
        if unlisted:
            notes.append(f"{len(unlisted)} images in {DETECTIONS_CSV} are missing from {IMAGES_CSV}; left out")
    return EvaluationInputs(
        ground_truth=gt[gt["image"].isin(chosen)].reset_index(drop=True),
        detections=detection_set.table[~stray].reset_index(drop=True),
        images=images,
        rejects=[*truth.rejects, *detection_set.rejects],
        notes=notes,
        image_paths=detection_set.paths,
        sources={
            "detections": str(detection_set.source),
            "ground_truth": truth.description,
            "split": f"{split_file} ({split})" if split_file else "none",
        },
    )


@dataclass
class EvaluationRun:
    metrics: Metrics
    inputs: EvaluationInputs
    output_dir: Path
    files: list[Path]


@dataclass(frozen=True)
class ReportOptions:
    """What run_evaluation adds beyond the metrics: plots, bootstrap intervals, the error gallery."""

    plots: bool = True
    bootstrap: int = 0  # replicates; 0: no intervals
    seed: int = 0
    gallery: int = gallery.DEFAULT_PER_CLASS  # cases per class and kind; 0: no gallery
    image_dir: Path | None = None  # where the gallery finds the images (else images.csv's paths)


def run_evaluation(
    detections_path: str | Path,
    ground_truth_spec: str | Path,
    output_dir: str | Path,
    split_file: str | Path | None = None,
    split: str = "test",
    settings: EvaluationSettings | None = None,
    plots: bool = True,
    options: ReportOptions | None = None,
) -> EvaluationRun:
    """Evaluate and write metrics.json, report.md, report.html, the plots, the error gallery and
    rejects.csv; `options` (if given) overrides `plots`."""
    from chestdet.evaluation import report

    options = options or ReportOptions(plots=plots, gallery=0)
    output_dir = Path(output_dir)
    inputs = prepare_inputs(detections_path, ground_truth_spec, split_file, split)
    for note in inputs.notes:
        log.info("%s", note)
    if inputs.rejects:
        log.warning("%d input rows rejected; see %s", len(inputs.rejects), output_dir / "rejects.csv")
    metrics = compute_metrics(inputs.ground_truth, inputs.detections, inputs.images, settings)
    metrics.notes.extend(inputs.notes)
    if options.bootstrap:
        metrics.bootstrap = _bootstrap(metrics, inputs, split_file, options)
    output_dir.mkdir(parents=True, exist_ok=True)
    document = {"sources": inputs.sources, "rejects": len(inputs.rejects), **metrics.to_dict()}
    atomic.write_json(output_dir / METRICS_JSON, _json_ready(document))
    files = [output_dir / METRICS_JSON]
    if options.plots:
        files += report.write_plots(metrics, output_dir)
    pictures = _gallery(metrics, inputs, output_dir, options)
    files += [path for kinds in pictures.values() for paths in kinds.values() for path in paths]
    files += report.write_reports(metrics, output_dir, inputs.sources, len(inputs.rejects), plots=options.plots,
                                  gallery=pictures)
    files.append(write_rejects(inputs.rejects, output_dir / "rejects.csv"))
    return EvaluationRun(metrics=metrics, inputs=inputs, output_dir=output_dir, files=files)


def _bootstrap(metrics: Metrics, inputs: EvaluationInputs, split_file: str | Path | None,
               options: ReportOptions) -> bootstrap.BootstrapResult:
    patients, note = image_patients(inputs.images, split_file)
    if note:
        metrics.notes.append(note)
    log.info("bootstrap: %d replicates over %d patients (seed %d)", options.bootstrap, len(set(patients)),
             options.seed)
    return bootstrap.bootstrap_metrics(metrics, inputs.ground_truth, inputs.detections, inputs.images, patients,
                             options.bootstrap, options.seed)


def _gallery(metrics: Metrics, inputs: EvaluationInputs, output_dir: Path,
             options: ReportOptions) -> dict[str, dict[str, list[Path]]]:
    gallery.clear_gallery(output_dir)
    if not options.gallery:
        return {}
    finder = image_finder(inputs.image_paths, options.image_dir, Path(inputs.sources["detections"]).parent)
    written, notes = gallery.write_gallery(inputs.ground_truth, inputs.detections, metrics.settings, output_dir, finder,
                                   options.gallery)
    for note in notes:
        log.warning("%s", note)
    metrics.notes.extend(notes)
    return written


def image_patients(images: Sequence[str], split_file: str | Path | None = None) -> tuple[list[str], str]:
    """The patient of each image, from split.csv's patient column when there is one, else from the NIH
    file name (`00000001_000.png` -> `00000001`); an image with neither is its own patient (the note
    says how many)."""
    known = ({image_key(image): patient for image, patient in split_patients(read_split(split_file)).items()}
             if split_file is not None else {})
    patients = [known.get(image) or patient_of(image) for image in images]
    alone = sum(1 for image, patient in zip(images, patients, strict=True) if patient == image)
    note = (f"bootstrap: {alone} images have no patient id (no split.csv patient, not an NIH file name) and are "
            "resampled as their own patient") if alone else ""
    return patients, note


def image_finder(paths: dict[str, list[str]], image_dir: Path | None,
                 detections_dir: Path) -> Callable[[str], Path | None]:
    """key -> the image file: under --image-dir by its images.csv name or file name, else images.csv's
    path as written (absolute, or relative to the working folder or to the detections folder)."""

    def find(key: str) -> Path | None:
        name, path = paths.get(key, [key, ""])
        candidates = [image_dir / name, image_dir / key] if image_dir is not None else []
        if path:
            candidates += [Path(path), detections_dir / path]
        return next((candidate for candidate in candidates if candidate.is_file()), None)

    return find


def _json_ready(value: object) -> object:
    """NaN and infinity are not JSON: they become null."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return _json_ready(float(value))
    return value

