"""generate_tfrecords: NIH BBox_List_2017.csv, labelImg XML and Label Studio exports -> sharded OD API TFRecords.

    python scripts/generate_tfrecords.py --nih-csv BBox_List_2017.csv --image-dir images \\
        --output-dir workspace/records

The command parses, calls `chestdet.data.dataset` and `chestdet.data.records`, and logs.
"""

from __future__ import annotations

import argparse
import gc
import logging
import time
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from chestdet.commands.cli import ExitStatus, UserError, available_cpus, exit_with, setup_logging
from chestdet.core.contracts import REJECTS_CSV
from chestdet.core.labels import LabelMap
from chestdet.core.resources import DEFAULT_LABEL_MAP
from chestdet.data import dataset, folds
from chestdet.data.records import DEFAULT_SHARDS, IMAGES_PER_SHARD, RecordOptions, write_records
from chestdet.data.split import SPLITS, parse_fractions

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
    parser.add_argument("--label-studio", type=Path, action="append", default=[], metavar="EXPORT.json",
                        help="Label Studio JSON export of annotated tasks (repeatable; read after the XML, a later "
                        "export correcting an earlier one)")
    parser.add_argument("--image-dir", type=Path, action="append", default=[],
                        help="folder searched (recursively) for the annotated images (repeatable)")
    parser.add_argument("--output-dir", type=Path, required=True, help="where records and reports go")
    parser.add_argument("--data-entry", type=Path,
                        help="NIH Data_Entry_2017.csv (or a subset): patient ids for the split")
    parser.add_argument("--unlabeled-dir", type=Path, action="append", default=[],
                        help="folder of images without findings, written as negatives (repeatable)")
    parser.add_argument("--xml-replaces-csv", action="store_true",
                        help="an image with an XML file (or a Label Studio annotation) keeps its boxes only (default: "
                        "merge them with the earlier sources'; a pair of the same class with IoU >= "
                        f"{dataset.MERGE_IOU} is one box, the later one's)")
    parser.add_argument("--split", default="0.7,0.15,0.15", help="train,val,test fractions (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default %(default)s)")
    parser.add_argument("--folds", type=int, metavar="K",
                        help="k-fold cross-validation: K folds by patient, OUTPUT/folds.csv and per fold "
                        "OUTPUT/fold-k/ with train/val/test records (val: --split's val:train share of the "
                        "other folds' patients)")
    parser.add_argument("--shards", type=int,
                        help=f"TFRecord files per split (default: up to {DEFAULT_SHARDS}, with at least "
                        f"{IMAGES_PER_SHARD} images each)")
    parser.add_argument("--max-size", type=int, metavar="N",
                        help="store images downscaled so the longer side is N pixels (boxes stay right)")
    parser.add_argument("--label-map", type=Path, default=DEFAULT_LABEL_MAP,
                        help="label map giving class ids (default: the repository's label_map.pbtxt)")
    parser.add_argument("--workers", type=int, default=available_cpus(),
                        help="processes writing shards, this one included (default: the CPUs available, %(default)s)")
    parser.add_argument("--beam", action="store_true",
                        help="write the shards with an Apache Beam pipeline (default runner: in-process, one "
                        "worker per CPU; a shard is one worker's task, so --shards bounds the parallelism)")
    parser.add_argument("--beam-options", metavar="OPTIONS",
                        help="with --beam: Beam pipeline options as one quoted string after an =, "
                        "e.g. --beam-options=\"--direct_num_workers=2\"")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when anything was rejected")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    fractions = _check_args(args)
    started = time.perf_counter()
    labels = LabelMap.load(args.label_map)
    spec = dataset.DatasetSpec(
        nih_csv=args.nih_csv, xml_dirs=tuple(args.xml_dir), image_dirs=tuple(args.image_dir),
        unlabeled_dirs=tuple(args.unlabeled_dir), data_entry=args.data_entry,
        corrections=dataset.Corrections.REPLACE if args.xml_replaces_csv else dataset.Corrections.MERGE,
        label_studio=tuple(args.label_studio), labels=labels,
    )
    options = {"split": args.split, "seed": args.seed, "shards": args.shards, "max_size": args.max_size,
               "workers": args.workers}
    record_options = RecordOptions(class_ids=labels.class_ids, max_size=args.max_size)
    inputs = dataset.read_inputs(spec)
    dataset.check_boxes(inputs, record_options)
    if args.folds is not None:
        return _write_folds(args, spec, inputs, fractions, record_options, started)
    jobs = dataset.plan_jobs(inputs, fractions, args.seed)
    if not jobs:
        summary = dataset.summarise(spec, inputs, [], None, args.output_dir, options, time.perf_counter() - started)
        dataset.write_reports(args.output_dir, [], inputs.rejects, summary, args.label_map)
        raise UserError(f"no image to write: {len(inputs.rejects)} rejects, see {args.output_dir / REJECTS_CSV}")
    # The OD API import leaves about a million objects that every full garbage collection would scan
    # again (and, in forked workers, copy): freeze them, they live as long as the process anyway.
    gc.freeze()
    if args.beam:
        from chestdet.detection.beam_pipelines import write_records_with_beam

        written, results = write_records_with_beam(jobs, args.output_dir, args.shards, record_options,
                                                   args.beam_options)
    else:
        with logging_redirect_tqdm(), tqdm(total=len(jobs), unit="img", desc="records", disable=None) as bar:
            written, results = write_records(jobs, args.output_dir, args.shards, record_options, args.workers,
                                             bar.update)
    results.sort(key=lambda result: (SPLITS.index(result.job.split), result.job.image))
    rejects = dataset.all_rejects(inputs, results)
    summary = dataset.summarise(spec, inputs, results, written, args.output_dir, options,
                                time.perf_counter() - started)
    dataset.write_reports(args.output_dir, results, rejects, summary, args.label_map)
    log.info("%s", dataset.format_summary(summary))
    if rejects and args.strict:
        return ExitStatus.REJECTS
    return ExitStatus.SUCCESS


def _write_folds(args: argparse.Namespace, spec: dataset.DatasetSpec, inputs: dataset.Inputs,
                 fractions: dict[str, float], record_options: RecordOptions, started: float) -> int:
    val_share = fractions["val"] / (fractions["train"] + fractions["val"])
    options = {"folds": args.folds, "val_share": round(val_share, 6), "seed": args.seed, "shards": args.shards,
               "max_size": args.max_size, "workers": args.workers}
    try:
        plan = folds.plan_folds(inputs, args.folds, val_share, args.seed)
    except folds.FoldError as error:
        summary = dataset.summarise(spec, inputs, [], None, args.output_dir, options, time.perf_counter() - started)
        folds.write_fold_reports(args.output_dir, inputs.rejects, summary, args.label_map)
        raise UserError(f"{error} ({len(inputs.rejects)} rejects, see {args.output_dir / REJECTS_CSV})") from None
    gc.freeze()  # as in main: the OD API's objects need no garbage collection
    with logging_redirect_tqdm(), tqdm(total=len(plan.jobs), unit="img", desc="records", disable=None) as bar:
        done = folds.write_fold_records(plan, args.output_dir, args.shards, record_options, args.workers, bar.update)
    rejects = dataset.all_rejects(inputs, done.results)
    summary = dataset.summarise(spec, inputs, done.results, None, args.output_dir, options,
                                time.perf_counter() - started)
    summary["folds"] = folds.fold_summary(plan, done)
    folds.write_fold_tables(plan, done.results, args.output_dir)
    folds.write_fold_reports(args.output_dir, rejects, summary, args.label_map)
    log.info("%s\n%s", dataset.format_summary(summary), folds.format_folds(summary["folds"]))
    return ExitStatus.REJECTS if rejects and args.strict else ExitStatus.SUCCESS


def _check_args(args: argparse.Namespace) -> dict[str, float]:
    if args.nih_csv is None and not args.xml_dir and not args.label_studio and not args.unlabeled_dir:
        raise UserError("nothing to read: give --nih-csv, --xml-dir, --label-studio or --unlabeled-dir")
    if args.nih_csv is not None and not args.nih_csv.is_file():
        raise UserError(f"--nih-csv: file not found: {args.nih_csv}")
    if args.nih_csv is not None and not args.image_dir:
        raise UserError("--nih-csv needs at least one --image-dir holding its images")
    for export in args.label_studio:
        if not export.is_file():
            raise UserError(f"--label-studio: file not found: {export}")
    if args.label_studio and not args.image_dir:
        raise UserError("--label-studio needs at least one --image-dir holding its images")
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
    if args.folds is not None and args.folds < 2:
        raise UserError(f"--folds must be at least 2, got {args.folds}")
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if args.beam_options is not None and not args.beam:
        raise UserError("--beam-options needs --beam")
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise UserError(f"--output-dir: not a folder: {args.output_dir}")
    try:
        return parse_fractions(args.split)
    except ValueError as error:
        raise UserError(str(error)) from None


def entry() -> None:
    exit_with(main)


if __name__ == "__main__":
    entry()
