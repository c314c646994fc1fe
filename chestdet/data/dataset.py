"""Assemble a dataset before any image is decoded: read every annotation source, combine the boxes of
each image, match images to files, check the boxes against each image's real size, plan one job per image;
and, after the records, the reports.

The sources, earliest first: NIH's CSV, each labelImg XML folder, each Label Studio JSON export.

An annotation source is a reader returning an `AnnotationSet` (boxes plus rejects). Sources are
listed in order and a later one is taken as the correction of an earlier one: an image annotated in
several keeps one box where a later source's box has the same class and IoU >= `MERGE_IOU` with an
earlier one (the later corners win), or, with `Corrections.REPLACE`, only the latest source's boxes.

    inputs = read_inputs(DatasetSpec(nih_csv=Path("BBox_List_2017.csv"), image_dirs=(Path("images"),)))
    check_boxes(inputs, RecordOptions(class_ids))
    jobs = plan_jobs(inputs, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from object_detection.utils import np_box_ops

from chestdet.core import atomic
from chestdet.core.contracts import LABEL_MAP_FILE, REJECTS_CSV, SPLIT_CSV, SUMMARY_JSON
from chestdet.core.imaging import ImageReadError, probe_image
from chestdet.core.labels import LabelMap, default_label_map
from chestdet.core.rejects import Reject, RejectKind, count_by_kind, write_rejects
from chestdet.data.annotations import (
    NIH_IMAGE_SIZE,
    SOURCE_NIH_CSV,
    AnnotationSet,
    Box,
    image_error_kind,
    read_nih_csv,
    same_picture,
)
from chestdet.data.image_index import ImageIndex
from chestdet.data.labelstudio import read_export
from chestdet.data.records import ImageJob, PreparedImage, RecordOptions, WrittenShards, fit_boxes, no_usable_boxes
from chestdet.data.split import (
    SPLITS,
    DataEntry,
    SplitItem,
    SplitRow,
    patient_of,
    read_data_entry,
    split_by_patient,
    write_split,
)
from chestdet.data.voc_xml import load_voc_dir

# Two boxes of one class from different sources are one corrected box at this IoU or more
# (a labelImg re-save of an NIH box, rounded to whole pixels, is well above it).
MERGE_IOU = 0.9

NOTE_DUPLICATES = "duplicate boxes removed"
NOTE_MERGED = f"boxes merged with a later source's corrected copy (same class, IoU >= {MERGE_IOU}; its corners kept)"
NOTE_REPLACED = "boxes replaced by a later source's annotation of their image"
NOTE_NAMES_TWICE = "image names found twice in the folders (first one used)"
NOTE_UNLABELED_WITH_BOXES = "images in --unlabeled-dir that have boxes (boxes kept)"
NOTE_UNANNOTATED = "images in --image-dir without boxes (not written; use --unlabeled-dir for negatives)"


class Corrections(enum.Enum):
    """What a later source does to an image an earlier source annotated too."""

    MERGE = "merge"  # the union of the boxes; a near-identical pair is one box, the later one's
    REPLACE = "replace"  # the later source's boxes only


@dataclass(frozen=True)
class DatasetSpec:
    """Where the annotations and images are, and how sources combine."""

    nih_csv: Path | None = None
    xml_dirs: tuple[Path, ...] = ()
    image_dirs: tuple[Path, ...] = ()
    unlabeled_dirs: tuple[Path, ...] = ()
    data_entry: Path | None = None
    corrections: Corrections = Corrections.MERGE
    label_studio: tuple[Path, ...] = ()  # Label Studio JSON exports, read after the XML folders
    labels: LabelMap | None = None  # the classes boxes may name; None: the shipped NIH map

    def to_dict(self) -> dict:
        return {
            "nih_csv": str(self.nih_csv) if self.nih_csv else None,
            "xml_dirs": [str(path) for path in self.xml_dirs],
            "image_dirs": [str(path) for path in self.image_dirs],
            "unlabeled_dirs": [str(path) for path in self.unlabeled_dirs],
            "data_entry": str(self.data_entry) if self.data_entry else None,
            "corrections": self.corrections.value,
            "label_studio": [str(path) for path in self.label_studio],
            "classes": list((self.labels or default_label_map()).names),
        }


@dataclass(frozen=True)
class AnnotationSource:
    """One source of boxes: a name for the summary (its file or folder) and a reader given the index of
    the images in the allowed folders."""

    name: str
    read: Callable[[ImageIndex], AnnotationSet]


def nih_csv_source(path: Path, labels: LabelMap | None = None) -> AnnotationSource:
    def read(_index: ImageIndex) -> AnnotationSet:
        boxes, rejects = read_nih_csv(path, labels)
        return AnnotationSet(boxes, rejects)

    return AnnotationSource(str(path), read)


def voc_xml_source(xml_dir: Path, image_dirs: Sequence[Path], labels: LabelMap | None = None) -> AnnotationSource:
    return AnnotationSource(str(xml_dir), lambda index: load_voc_dir(xml_dir, image_dirs, index=index, labels=labels))


def label_studio_source(export: Path, labels: LabelMap | None = None) -> AnnotationSource:
    return AnnotationSource(str(export), lambda index: read_export(export, index, labels))


def sources_for(spec: DatasetSpec) -> list[AnnotationSource]:
    """The spec's sources, earliest first: NIH's CSV, then each XML folder, then each Label Studio export."""
    sources = [nih_csv_source(spec.nih_csv, spec.labels)] if spec.nih_csv is not None else []
    sources += [voc_xml_source(xml_dir, spec.image_dirs, spec.labels) for xml_dir in spec.xml_dirs]
    return sources + [label_studio_source(export, spec.labels) for export in spec.label_studio]


@dataclass
class Inputs:
    """Everything read before any image is opened."""

    boxes_by_image: dict[str, list[Box]] = field(default_factory=dict)
    image_paths: dict[str, Path] = field(default_factory=dict)
    unlabeled: dict[str, Path] = field(default_factory=dict)
    data_entry: dict[str, DataEntry] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)
    notes: Counter = field(default_factory=Counter)
    source_boxes: dict[str, int] = field(default_factory=dict)  # boxes each source gave, before combining
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # the real size each image's boxes fit


def read_inputs(spec: DatasetSpec, sources: Sequence[AnnotationSource] | None = None) -> Inputs:
    """Read the annotations, find their images, list the negatives, read patient ids; nothing is decoded."""
    inputs = Inputs()
    index = ImageIndex([*spec.image_dirs, *spec.xml_dirs])
    if index.duplicates:
        inputs.notes[NOTE_NAMES_TWICE] += len(index.duplicates)
    sources = sources_for(spec) if sources is None else sources
    sets = [source.read(index) for source in sources]
    for source, annotation_set in zip(sources, sets, strict=True):
        inputs.rejects.extend(annotation_set.rejects)
        inputs.notes.update(annotation_set.notes)
        inputs.source_boxes[source.name] = inputs.source_boxes.get(source.name, 0) + len(annotation_set.boxes)
    merged, notes = combine_sources(sets, spec.corrections)
    inputs.notes.update(notes)
    found = {name: path for annotation_set in reversed(sets) for name, path in annotation_set.image_paths.items()}
    _match_images(inputs, merged, found, index)
    _list_negatives(inputs, spec.unlabeled_dirs, index)
    if spec.data_entry is not None:
        inputs.data_entry, rejects = read_data_entry(spec.data_entry)
        inputs.rejects.extend(rejects)
    return inputs


def _match_images(inputs: Inputs, merged: Mapping[str, list[Box]], found: Mapping[str, Path],
                  index: ImageIndex) -> None:
    for image, boxes in merged.items():
        path = found.get(image) or index.find(image)
        if path is None:
            inputs.rejects.extend(
                Reject(box.file, box.location, f"image {image} not found in the --image-dir folders",
                       RejectKind.IMAGE_NOT_FOUND, image)
                for box in boxes
            )
            continue
        inputs.boxes_by_image[image] = boxes
        inputs.image_paths[image] = path


def _list_negatives(inputs: Inputs, unlabeled_dirs: Sequence[Path], index: ImageIndex) -> None:
    for name, path in sorted(ImageIndex(unlabeled_dirs).by_name.items()):
        if name in inputs.boxes_by_image:
            inputs.notes[NOTE_UNLABELED_WITH_BOXES] += 1
            continue
        inputs.unlabeled[name] = path
    unannotated = set(index.by_name) - set(inputs.boxes_by_image) - set(inputs.unlabeled)
    if unannotated:
        inputs.notes[NOTE_UNANNOTATED] += len(unannotated)


# --------------------------------------------------------------------------------------------------
# Combining sources


@dataclass
class _Kept:
    rank: int  # the position of the box's source; higher is later
    box: Box
    corners: np.ndarray  # (ymin, xmin, ymax, xmax) in the pixels of the real image, where known


def combine_sources(
    sets: Sequence[AnnotationSet], corrections: Corrections = Corrections.MERGE, min_iou: float = MERGE_IOU
) -> tuple[dict[str, list[Box]], Counter]:
    """{image: boxes} from sources given earliest first, and the counted duplicates, merges, replacements.

    Exact duplicates (same class and corners) are kept once. A box with the same class as a box of an
    earlier source and IoU >= `min_iou` with it takes that box's place: one box, the later corners.
    With `Corrections.REPLACE`, a source's images lose the boxes of earlier sources first.
    Boxes of different sources are compared in the pixels of the real image: NIH's CSV is in pixels
    of its 1024x1024 PNGs, an XML's boxes were fitted to the image it names.
    """
    sizes = {name: size for annotation_set in reversed(sets) for name, size in annotation_set.sizes.items()}
    by_image: dict[str, list[_Kept]] = {}
    notes: Counter = Counter()
    for rank, annotation_set in enumerate(sets):
        if corrections is Corrections.REPLACE:
            for image in sorted(annotation_set.covered):
                earlier = by_image.pop(image, [])
                if earlier:
                    notes[NOTE_REPLACED] += len(earlier)
        for box in annotation_set.boxes:
            kept = by_image.setdefault(box.image, [])
            note = _add_box(kept, _Kept(rank, box, _real_corners(box, sizes.get(box.image))), min_iou)
            if note:
                notes[note] += 1
    return {image: [item.box for item in kept] for image, kept in by_image.items() if kept}, notes


def _add_box(kept: list[_Kept], new: _Kept, min_iou: float) -> str | None:
    """Add one box to its image's list; the note it earns, if it was a duplicate or a merge."""
    same_class = [index for index, item in enumerate(kept) if item.box.label == new.box.label]
    for index in same_class:
        if np.array_equal(np.round(kept[index].corners, 6), np.round(new.corners, 6)):
            if kept[index].rank < new.rank:
                kept[index] = new  # the later source's flags (difficult) win
            return NOTE_DUPLICATES
    earlier = [index for index in same_class if kept[index].rank < new.rank]
    if earlier:
        overlaps = np_box_ops.iou(new.corners[None], np.stack([kept[index].corners for index in earlier]))[0]
        best = int(np.argmax(overlaps))
        if overlaps[best] >= min_iou:
            kept[earlier[best]] = new
            return NOTE_MERGED
    kept.append(new)
    return None


def _real_corners(box: Box, real_size: tuple[int, int] | None) -> np.ndarray:
    corners = np.array([box.ymin, box.xmin, box.ymax, box.xmax], dtype=np.float64)
    if box.source == SOURCE_NIH_CSV and real_size is not None and same_picture(NIH_IMAGE_SIZE, real_size):
        scale = np.array([real_size[1] / NIH_IMAGE_SIZE[1], real_size[0] / NIH_IMAGE_SIZE[0]] * 2)
        corners = corners * scale
    return corners


# --------------------------------------------------------------------------------------------------
# Jobs


def check_boxes(inputs: Inputs, options: RecordOptions) -> None:
    """Fit every image's boxes to its real size (read from the file's header) as the records keep them,
    before any split is planned: a rejected box never steers the split, and an image left without boxes,
    or unreadable, is rejected here and placed nowhere."""
    for image, boxes in list(inputs.boxes_by_image.items()):
        path = inputs.image_paths[image]
        try:
            info = probe_image(path, options.max_pixels)
        except ImageReadError as error:
            inputs.rejects.append(Reject(str(path), "image", f"{error.reason} ({len(boxes)} boxes not written)",
                                         image_error_kind(error), image))
            del inputs.boxes_by_image[image]
            continue
        size = (info.width, info.height)
        kept, rejects, notes = fit_boxes(image, path, boxes, size, options)
        inputs.rejects += rejects
        inputs.notes.update(notes)
        if not kept:
            inputs.rejects.append(no_usable_boxes(image, path, len(boxes)))
            del inputs.boxes_by_image[image]
            continue
        inputs.boxes_by_image[image], inputs.sizes[image] = list(kept), size


def plan_jobs(inputs: Inputs, fractions: Mapping[str, float], seed: int = 0) -> list[ImageJob]:
    """One job per image, with its patient and split, in split order and then by name."""
    items = split_items(inputs)
    splits = split_by_patient(items, fractions, seed)
    return [
        image_job(inputs, item, splits[item.image])
        for item in sorted(items, key=lambda item: (SPLITS.index(splits[item.image]), item.image))
    ]


def split_items(inputs: Inputs) -> list[SplitItem]:
    """What the split needs of every image: its patient and the classes of its boxes."""
    return [
        SplitItem(image, patient_of(image, inputs.data_entry), frozenset(box.label for box in boxes))
        for image, boxes in inputs.boxes_by_image.items()
    ] + [SplitItem(image, patient_of(image, inputs.data_entry)) for image in inputs.unlabeled]


def image_job(inputs: Inputs, item: SplitItem, split: str) -> ImageJob:
    return ImageJob(item.image, inputs.image_paths.get(item.image) or inputs.unlabeled[item.image], item.patient,
                    split, tuple(inputs.boxes_by_image.get(item.image, [])), inputs.sizes.get(item.image))


# --------------------------------------------------------------------------------------------------
# Reports


def all_rejects(inputs: Inputs, results: Sequence[PreparedImage]) -> list[Reject]:
    return inputs.rejects + [reject for result in results for reject in result.rejects]


def write_reports(output_dir: Path, results: Sequence[PreparedImage], rejects: Sequence[Reject], summary: dict,
                  label_map: Path) -> None:
    """label_map.pbtxt (a copy), split.csv, rejects.csv and summary.json in `output_dir`."""
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(output_dir / LABEL_MAP_FILE, label_map.read_bytes())
    write_split(output_dir / SPLIT_CSV, [SplitRow(r.job.image, r.job.patient, r.job.split, len(r.boxes))
                                         for r in results if r.example is not None])
    write_rejects(rejects, output_dir / REJECTS_CSV)
    atomic.write_json(output_dir / SUMMARY_JSON, summary)


def summarise(spec: DatasetSpec, inputs: Inputs, results: Sequence[PreparedImage], written: WrittenShards | None,
              output_dir: Path, options: Mapping, seconds: float) -> dict:
    """summary.json: images, negatives, boxes, patients per split and class; rejects by kind; conversions."""
    notes = Counter(inputs.notes)
    for result in results:
        notes.update(result.notes)
    splits = _split_counts(results, written)
    rejects = all_rejects(inputs, results)
    images = sum(split["images"] for split in splits.values())
    return {
        "output_dir": str(output_dir),
        "inputs": {**spec.to_dict(), "boxes_per_source": dict(inputs.source_boxes)},
        "options": dict(options),
        # train, val, test; or, for cross-validation, the test folds in their order
        "splits": {name: splits[name] for name in sorted(splits, key=_split_rank)},
        "totals": {"images": images, "boxes": sum(split["boxes"] for split in splits.values()),
                   "record_bytes": sum(result.size for result in results), "seconds": round(seconds, 2),
                   "images_per_second": round(images / seconds, 1) if seconds else None},
        "rejects": {"count": len(rejects), "by_kind": count_by_kind(rejects)},
        "conversions": dict(sorted(notes.items())),
    }


def _split_rank(name: str) -> int:
    return SPLITS.index(name) if name in SPLITS else len(SPLITS)


def _split_counts(results: Sequence[PreparedImage], written: WrittenShards | None) -> dict[str, dict]:
    splits: dict[str, dict] = {}
    for result in results:
        if result.example is None:
            continue
        split = splits.setdefault(result.job.split, {
            "images": 0, "negatives": 0, "boxes": 0, "patients": set(), "classes": {}, "shards": [], "bytes": 0,
        })
        split["images"] += 1
        split["negatives"] += not result.boxes
        split["boxes"] += len(result.boxes)
        split["patients"].add(result.job.patient)
        for label in sorted({box.label for box in result.boxes}):
            split["classes"].setdefault(label, {"images": 0, "boxes": 0})["images"] += 1
        for box in result.boxes:
            split["classes"][box.label]["boxes"] += 1
    for name, split in splits.items():
        split["patients"] = len(split["patients"])
        split["classes"] = dict(sorted(split["classes"].items()))
        split["shards"] = [path.name for path in (written.paths.get(name, []) if written else [])]
        split["bytes"] = written.bytes.get(name, 0) if written else 0
    return splits


def format_summary(summary: dict) -> str:
    """The one-screen report logged at the end of a run."""
    lines = [f"wrote {summary['totals']['images']} images, {summary['totals']['boxes']} boxes to "
             f"{summary['output_dir']} in {summary['totals']['seconds']} s"]
    classes = sorted({label for split in summary["splits"].values() for label in split["classes"]})
    lines.append(f"{'':14}" + "".join(f"{name:>16}" for name in summary["splits"]))
    for key in ("images", "negatives", "boxes", "patients"):
        lines.append(f"{key:14}" + "".join(f"{split[key]:>16}" for split in summary["splits"].values()))
    for label in classes:
        cells = []
        for split in summary["splits"].values():
            counts = split["classes"].get(label, {"images": 0, "boxes": 0})
            cells.append(f"{counts['images']} img/{counts['boxes']} box")
        lines.append(f"{label:14}" + "".join(f"{cell:>16}" for cell in cells))
    rejects = summary["rejects"]
    kinds = ", ".join(f"{kind} {count}" for kind, count in rejects["by_kind"].items())
    lines.append(f"rejects: {rejects['count']}" + (f" ({kinds}; see {REJECTS_CSV})" if rejects["count"] else ""))
    for note, count in summary["conversions"].items():
        lines.append(f"  {note}: {count}")
    return "\n".join(lines)

