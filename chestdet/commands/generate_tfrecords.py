"""generate_tfrecords: NIH BBox_List_2017.csv and labelImg XML -> sharded OD API TFRecords.

    python scripts/generate_tfrecords.py --nih-csv BBox_List_2017.csv --image-dir images \\
        --output-dir workspace/records
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from chestdet import atomic
from chestdet.annotations import (
    AnnotationSet,
    Box,
    ImageIndex,
    Reject,
    load_voc_dir,
    merge_boxes,
    read_nih_csv,
)
from chestdet.cli import ExitStatus, UserError, available_cpus, exit_with, setup_logging
from chestdet.labels import DEFAULT_LABEL_MAP, load_label_map
from chestdet.records import (
    DEFAULT_SHARDS,
    IMAGES_PER_SHARD,
    ImageJob,
    PreparedImage,
    RecordOptions,
    WrittenShards,
    write_records,
)
from chestdet.split import SPLITS, SplitItem, parse_fractions, patient_of, read_data_entry, split_by_patient

log = logging.getLogger("chestdet.generate_tfrecords")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="generate_tfrecords.py",
        description="Turn NIH's BBox_List_2017.csv and labelImg Pascal VOC XML into sharded TFRecords "
        "for the TensorFlow Object Detection API, split by patient into train/val/test.",
    )
    parser.add_argument("--nih-csv", type=Path, help="NIH's BBox_List_2017.csv (x, y, w, h in pixels)")
    parser.add_argument("--xml-dir", type=Path, action="append", default=[],
                        help="folder of labelImg Pascal VOC .xml files (repeatable)")
    parser.add_argument("--image-dir", type=Path, action="append", default=[],
                        help="folder searched (recursively) for the annotated images (repeatable)")
    parser.add_argument("--output-dir", type=Path, required=True, help="where records and reports go")
    parser.add_argument("--data-entry", type=Path,
                        help="NIH Data_Entry_2017.csv (or a subset): patient ids for the split")
    parser.add_argument("--unlabeled-dir", type=Path, action="append", default=[],
                        help="folder of images without findings, written as negatives (repeatable)")
    parser.add_argument("--split", default="0.7,0.15,0.15", help="train,val,test fractions (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default %(default)s)")
    parser.add_argument("--shards", type=int,
                        help=f"TFRecord files per split (default: up to {DEFAULT_SHARDS}, with at least "
                        f"{IMAGES_PER_SHARD} images each)")
    parser.add_argument("--max-size", type=int, metavar="N",
                        help="store images downscaled so the longer side is N pixels (boxes stay right)")
    parser.add_argument("--label-map", type=Path, default=DEFAULT_LABEL_MAP,
                        help="label map giving class ids (default: the repository's label_map.pbtxt)")
    parser.add_argument("--workers", type=int, default=available_cpus(),
                        help="processes writing shards, this one included (default: the CPUs available, %(default)s)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when anything was rejected")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


@dataclass
class Inputs:
    """Everything read before any image is opened."""

    boxes_by_image: dict[str, list[Box]] = field(default_factory=dict)
    box_files: dict[str, list[str]] = field(default_factory=dict)
    image_paths: dict[str, Path] = field(default_factory=dict)
    unlabeled: dict[str, Path] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)
    notes: Counter = field(default_factory=Counter)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    fractions = _check_args(args)
    started = time.perf_counter()
    class_ids = {name: id_ for id_, name in load_label_map(args.label_map).items()}
    inputs = read_inputs(args)
    jobs = plan_jobs(inputs, args, fractions)
    if not jobs:
        _write_reports(args.output_dir, [], inputs.rejects, _summary(args, [], inputs, None, started), args)
        raise UserError(f"no image to write: {len(inputs.rejects)} rejects, see {args.output_dir / 'rejects.csv'}")
    options = RecordOptions(class_ids=class_ids, max_size=args.max_size)
    # The OD API import leaves about a million objects that every full garbage collection would scan
    # again (and, in forked workers, copy): freeze them, they live as long as the process anyway.
    gc.freeze()
    with logging_redirect_tqdm(), tqdm(total=len(jobs), unit="img", desc="records", disable=None) as bar:
        written, results = write_records(jobs, args.output_dir, args.shards, options, args.workers, bar.update)
    results.sort(key=lambda result: (SPLITS.index(result.job.split), result.job.image))
    rejects = inputs.rejects + [reject for result in results for reject in result.rejects]
    summary = _summary(args, results, inputs, written, started)
    _write_reports(args.output_dir, results, rejects, summary, args)
    log.info("%s", format_summary(summary))
    if rejects and args.strict:
        return ExitStatus.REJECTS
    return ExitStatus.SUCCESS


def _check_args(args: argparse.Namespace) -> dict[str, float]:
    if args.nih_csv is None and not args.xml_dir and not args.unlabeled_dir:
        raise UserError("nothing to read: give --nih-csv, --xml-dir or --unlabeled-dir")
    if args.nih_csv is not None and not args.nih_csv.is_file():
        raise UserError(f"--nih-csv: file not found: {args.nih_csv}")
    if args.nih_csv is not None and not args.image_dir:
        raise UserError("--nih-csv needs at least one --image-dir holding its images")
    if args.data_entry is not None and not args.data_entry.is_file():
        raise UserError(f"--data-entry: file not found: {args.data_entry}")
    if not args.label_map.is_file():
        raise UserError(f"--label-map: file not found: {args.label_map}")
    for flag, folders in (("--xml-dir", args.xml_dir), ("--image-dir", args.image_dir),
                          ("--unlabeled-dir", args.unlabeled_dir)):
        for folder in folders:
            if not folder.is_dir():
                raise UserError(f"{flag}: folder not found: {folder}")
    if args.shards is not None and args.shards < 1:
        raise UserError(f"--shards must be at least 1, got {args.shards}")
    if args.max_size is not None and args.max_size < 32:
        raise UserError(f"--max-size must be at least 32 pixels, got {args.max_size}")
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise UserError(f"--output-dir: not a folder: {args.output_dir}")
    try:
        return parse_fractions(args.split)
    except ValueError as error:
        raise UserError(str(error)) from None


def read_inputs(args: argparse.Namespace) -> Inputs:
    """Read the annotations, find their images, and list the negatives; nothing is decoded yet."""
    inputs = Inputs()
    index = ImageIndex([*args.image_dir, *args.xml_dir])
    if index.duplicates:
        inputs.notes["image names found twice in the folders (first one used)"] += len(index.duplicates)
    annotations = AnnotationSet()
    if args.nih_csv is not None:
        boxes, rejects = read_nih_csv(args.nih_csv)
        annotations.add(AnnotationSet(boxes, rejects, box_files=[str(args.nih_csv)] * len(boxes)))
    for xml_dir in args.xml_dir:
        annotations.add(load_voc_dir(xml_dir, args.image_dir, index=index))
    box_file = {id(box): file for box, file in zip(annotations.boxes, annotations.box_files, strict=True)}
    inputs.rejects.extend(annotations.rejects)
    inputs.notes.update(annotations.notes)
    merged, duplicates = merge_boxes(annotations.boxes)
    if duplicates:
        inputs.notes["duplicate boxes removed"] += duplicates
    for image, boxes in merged.items():
        path = annotations.image_paths.get(image) or index.find(image)
        if path is None:
            inputs.rejects.extend(
                Reject(box_file[id(box)], box.location, f"image {image} not found in the --image-dir folders")
                for box in boxes
            )
            continue
        inputs.boxes_by_image[image] = boxes
        inputs.box_files[image] = [box_file[id(box)] for box in boxes]
        inputs.image_paths[image] = path
    unlabeled_index = ImageIndex(args.unlabeled_dir)
    for name, path in sorted(unlabeled_index.by_name.items()):
        if name in inputs.boxes_by_image:
            inputs.notes["images in --unlabeled-dir that have boxes (boxes kept)"] += 1
            continue
        inputs.unlabeled[name] = path
    unannotated = set(index.by_name) - set(inputs.boxes_by_image) - set(inputs.unlabeled)
    if unannotated:
        inputs.notes["images in --image-dir without boxes (not written; use --unlabeled-dir for negatives)"] += len(
            unannotated
        )
    return inputs


def plan_jobs(inputs: Inputs, args: argparse.Namespace, fractions: dict[str, float]) -> list[ImageJob]:
    """One job per image, with its patient and split."""
    data_entry = {}
    if args.data_entry is not None:
        data_entry, rejects = read_data_entry(args.data_entry)
        inputs.rejects.extend(rejects)
    items = [
        SplitItem(image, patient_of(image, data_entry), frozenset(box.label for box in boxes))
        for image, boxes in inputs.boxes_by_image.items()
    ] + [SplitItem(image, patient_of(image, data_entry)) for image in inputs.unlabeled]
    splits = split_by_patient(items, fractions, args.seed)
    jobs = []
    for item in sorted(items, key=lambda item: (SPLITS.index(splits[item.image]), item.image)):
        boxes = inputs.boxes_by_image.get(item.image, [])
        path = inputs.image_paths.get(item.image) or inputs.unlabeled[item.image]
        jobs.append(ImageJob(item.image, path, item.patient, splits[item.image], tuple(boxes),
                             tuple(inputs.box_files.get(item.image, []))))
    return jobs


# --------------------------------------------------------------------------------------------------
# Reports


def _write_reports(output_dir: Path, results: Sequence[PreparedImage], rejects: Sequence[Reject],
                   summary: dict, args: argparse.Namespace) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(output_dir / "label_map.pbtxt", args.label_map.read_bytes())
    atomic.write_text(output_dir / "split.csv", _csv_text(
        ["image", "patient", "split", "boxes"],
        [[r.job.image, r.job.patient, r.job.split, len(r.boxes)] for r in results if r.example is not None],
    ))
    atomic.write_text(output_dir / "rejects.csv", _csv_text(
        ["source", "location", "reason"], [[r.source, r.location, r.reason] for r in rejects]
    ))
    atomic.write_json(output_dir / "summary.json", summary)


def _csv_text(header: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _summary(args: argparse.Namespace, results: Sequence[PreparedImage], inputs: Inputs,
             written: WrittenShards | None, started: float) -> dict:
    splits: dict[str, dict] = {}
    notes = Counter(inputs.notes)
    for result in results:
        notes.update(result.notes)
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
    rejects = inputs.rejects + [reject for result in results for reject in result.rejects]
    record_bytes = sum(result.size for result in results)
    seconds = time.perf_counter() - started
    images = sum(split["images"] for split in splits.values())
    return {
        "output_dir": str(args.output_dir),
        "inputs": {
            "nih_csv": str(args.nih_csv) if args.nih_csv else None,
            "xml_dirs": [str(path) for path in args.xml_dir],
            "image_dirs": [str(path) for path in args.image_dir],
            "unlabeled_dirs": [str(path) for path in args.unlabeled_dir],
            "data_entry": str(args.data_entry) if args.data_entry else None,
        },
        "options": {"split": args.split, "seed": args.seed, "shards": args.shards, "max_size": args.max_size,
                    "workers": args.workers},
        "splits": {name: splits[name] for name in SPLITS if name in splits},
        "totals": {"images": images, "boxes": sum(split["boxes"] for split in splits.values()),
                   "record_bytes": record_bytes, "seconds": round(seconds, 2),
                   "images_per_second": round(images / seconds, 1) if seconds else None},
        "rejects": {"count": len(rejects),
                    "by_kind": dict(Counter(reject_kind(r.reason) for r in rejects).most_common())},
        "conversions": dict(sorted(notes.items())),
    }


def reject_kind(reason: str) -> str:
    """A short category for a reject reason, for the summary."""
    kinds = (
        ("not found", "image not found"), ("unknown label", "unknown label"),
        ("not in the label map", "label not in label map"),
        ("not a number", "not a number"), ("not a finite", "not a number"), ("zero or negative size", "empty box"),
        ("resolves outside", "path outside the allowed folders"), ("outside the", "box outside the image"),
        ("entities", "unsafe XML refused"), ("malformed XML", "malformed XML"), ("bomb", "decompression bomb"),
        ("truncated", "unreadable image"), ("corrupt", "unreadable image"), ("not a readable", "unreadable image"),
        ("empty file", "unreadable image"), ("different aspect ratio", "size mismatch"), ("columns", "malformed row"),
        ("all ", "image without usable boxes"),
    )
    for needle, kind in kinds:
        if needle in reason:
            return kind
    return "other"


def format_summary(summary: dict) -> str:
    """The one-screen report logged at the end of a run."""
    lines = [f"wrote {summary['totals']['images']} images, {summary['totals']['boxes']} boxes to "
             f"{summary['output_dir']} in {summary['totals']['seconds']} s"]
    classes = sorted({label for split in summary["splits"].values() for label in split["classes"]})
    header = f"{'':14}" + "".join(f"{name:>16}" for name in summary["splits"])
    lines.append(header)
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
    lines.append(f"rejects: {rejects['count']}" + (f" ({kinds}; see rejects.csv)" if rejects["count"] else ""))
    for note, count in summary["conversions"].items():
        lines.append(f"  {note}: {count}")
    return "\n".join(lines)


def entry() -> None:
    exit_with(main)


if __name__ == "__main__":
    entry()
