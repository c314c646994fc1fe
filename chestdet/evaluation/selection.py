"""Which images an evaluation counts: those detection processed, narrowed to a split of split.csv
(read through its owner, chestdet.data.split), with every choice said in a note; and each image's
patient for the bootstrap."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from chestdet.core.contracts import DETECTIONS_CSV, IMAGES_CSV
from chestdet.core.errors import EvaluationError
from chestdet.core.labels import LabelMap, default_label_map
from chestdet.data.annotations import Reject
from chestdet.data.split import TEST, SplitFileError, SplitRow, patient_of, read_split, split_images, split_patients
from chestdet.evaluation.boxes import image_key
from chestdet.evaluation.detection_set import DetectionSet, read_detections
from chestdet.evaluation.ground_truth import (
    GroundTruth,
    fit_to_detected,
    ground_truth_frame,
    ground_truth_labels,
    read_ground_truth,
)


def read_split_rows(path: str | Path) -> list[SplitRow]:
    """Every row of the dataset step's split.csv."""
    try:
        return read_split(path)
    except SplitFileError as error:
        raise EvaluationError(str(error)) from None


def split_keys(rows: Sequence[SplitRow], split: str, path: str | Path) -> list[str]:
    """Image keys of one split of split.csv's rows."""
    try:
        return [image_key(name) for name in split_images(rows, split, path)]
    except SplitFileError as error:
        raise EvaluationError(str(error)) from None



def _duplicate_keys(names: Iterable[str]) -> list[str]:
    seen, duplicates = set(), set()
    for name in names:
        (duplicates if name in seen else seen).add(name)
    return sorted(duplicates)


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
    split_rows: list[SplitRow] | None = None  # every row of split.csv, when one was given
    truth: GroundTruth | None = None  # the whole ground-truth source as read (boxes in its `sizes`' pixels)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # (width, height) detection saw, per image
    labels: LabelMap = field(default_factory=default_label_map)  # the classes of the detections and the boxes


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
    split: str = TEST,
    labels: LabelMap | None = None,
) -> EvaluationInputs:
    """The evaluated images, their boxes and detections; `labels` defaults to the ground-truth records' own
    map, else the shipped one (ground_truth.ground_truth_labels)."""
    labels = ground_truth_labels(ground_truth_spec, labels)
    detection_set = read_detections(detections_path, labels)
    source = read_ground_truth(ground_truth_spec, split, labels)
    truth = fit_to_detected(source, detection_set.sizes, labels)
    split_rows = read_split_rows(split_file) if split_file else None
    split_images = split_keys(split_rows, split, split_file) if split_rows is not None else None
    images, notes = select_images(detection_set, split_images)
    unusable = [image for image in images if image in truth.dropped]
    if unusable:
        images = [image for image in images if image not in truth.dropped]
        notes.append(f"{len(unusable)} images whose every ground-truth box was rejected are not evaluated (the "
                     "records step writes no such image)")
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
        split_rows=split_rows,
        truth=source,
        sizes=detection_set.sizes,
        labels=labels,
        sources={
            "detections": str(detection_set.source),
            "ground_truth": truth.description,
            "split": f"{split_file} ({split})" if split_file else "none",
        },
    )


def image_patients(images: Sequence[str], split_rows: Sequence[SplitRow] | None = None) -> tuple[list[str], str]:
    """The patient of each image, from split.csv's patient column when there is one, else from the NIH
    file name (`00000001_000.png` -> `00000001`); an image with neither is its own patient (the note
    says how many)."""
    known = ({image_key(image): patient for image, patient in split_patients(split_rows).items()}
             if split_rows is not None else {})
    patients = [known.get(image) or patient_of(image) for image in images]
    alone = sum(1 for image, patient in zip(images, patients, strict=True) if patient == image)
    note = (f"bootstrap: {alone} images have no patient id (no split.csv patient, not an NIH file name) and are "
            "resampled as their own patient") if alone else ""
    return patients, note


