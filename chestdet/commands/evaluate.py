"""Score detect.py's detections against ground truth: COCO AP, FROC, ChestX-ray8 T(IoBB), report."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from chestdet.commands.cli import ExitStatus, UserError, exit_with, setup_logging
from chestdet.core.contracts import LABEL_MAP_FILE, OPERATING_POINTS_JSON, REJECTS_CSV, REPORT_MD
from chestdet.core.labels import LabelMap
from chestdet.data.split import TEST
from chestdet.evaluation.evaluate import OUTPUT_FILES, ReportOptions, run_evaluation
from chestdet.evaluation.gallery import DEFAULT_PER_CLASS
from chestdet.evaluation.metrics import EvaluationSettings
from chestdet.evaluation.report import summary_text

log = logging.getLogger("chestdet.evaluation.evaluate")

EXAMPLES = """examples:
  python scripts/evaluate.py --detections workspace/detections/detections.csv \\
      --ground-truth workspace/sample/nih/BBox_List_2017.csv --output-dir workspace/eval
  python scripts/evaluate.py --detections workspace/detections --ground-truth workspace/records \\
      --split-file workspace/records/split.csv --split test --output-dir workspace/eval-test \\
      --bootstrap 1000 --seed 0
  python scripts/evaluate.py --cv workspace/runs/crossval-folds --output-dir workspace/eval-cv
"""


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside 0..1")
    return value


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Score detections against ground-truth boxes: per-class COCO AP (pycocotools), FROC, "
        "the ChestX-ray8 T(IoBB) localisation accuracy beside the paper's, image-level sensitivity and "
        "specificity, and a confusion matrix, each class beside a trivial baseline; writes metrics.json, "
        "report.md/.html, PNG plots and operating_points.json (per-class thresholds for detect).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--detections", type=Path,
                        help="detect.py's detections.csv, or its folder; images.csv beside it lists the "
                        "images without detections (required unless --cv)")
    parser.add_argument("--ground-truth",
                        help="NIH BBox_List_2017.csv, a labelImg XML file or folder, or TFRecords (a file, "
                        "a quoted glob, or a folder of SPLIT-* shards); required unless --cv, where it "
                        "defaults to the folds' test records")
    parser.add_argument("--cv", type=Path, metavar="RUNS_DIR",
                        help="evaluate a cross-validation (the folder of scripts/crossval.sh): each fold, "
                        "mean ± sd across folds, and all test folds pooled")
    parser.add_argument("--label-map", type=Path, metavar="FILE",
                        help="the classes of the detections and the ground truth: the label map of the model that "
                        f"made the detections (default: the {LABEL_MAP_FILE} of a records folder given as ground "
                        "truth, else the shipped NIH map); every class in detections.csv must be in it")
    parser.add_argument("--output-dir", type=Path, required=True, help="where the report goes")
    parser.add_argument("--split-file", type=Path, help="split.csv of the dataset step: evaluate one split only")
    parser.add_argument("--split", default=TEST,
                        help="which split of --split-file (and which shards of a TFRecord folder); default test")
    parser.add_argument("--score-threshold", type=fraction, default=0.3,
                        help="detections scoring above this count for T(IoBB), image-level metrics and the "
                        "confusion matrix (default 0.3; AP and FROC use every detection)")
    parser.add_argument("--hit-iou", type=fraction, default=0.5,
                        help="FROC: a detection hits a box at IoU >= this (default 0.5)")
    parser.add_argument("--bootstrap", type=count, default=0, metavar="N",
                        help="add 95%% bootstrap intervals from N replicates that resample patients "
                        "(1000 is usual; default 0: none)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed: the same seed gives the same "
                        "intervals (default 0)")
    parser.add_argument("--gallery", type=count, default=DEFAULT_PER_CLASS, metavar="N",
                        help=f"error gallery: per class, the N highest-scoring false positives and N missed "
                        f"boxes drawn in OUTPUT/gallery/ (default {DEFAULT_PER_CLASS}; 0: none)")
    parser.add_argument("--image-dir", type=Path,
                        help="where the gallery finds the images (by their images.csv name or file name); "
                        "default: the paths in images.csv")
    parser.add_argument("--baseline-from", type=Path, metavar="SOURCE",
                        help="take the trivial baseline's boxes from this ground truth (a records folder's train "
                        "shards, an NIH CSV, labelImg XML); default: the boxes of --split-file's train rows")
    parser.add_argument("--no-baseline", action="store_true",
                        help="leave out the trivial baseline (each class's median training box on every image, "
                        "scored by the class frequency) that the report puts beside each class")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--overwrite", action="store_true", help="replace a report already in --output-dir")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when any input row was rejected")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cv is not None and (args.detections is not None or args.split_file is not None):
        parser.error("--cv takes each fold's detections and split.csv from its folder; drop --detections/--split-file")
    if args.cv is not None and args.split != TEST:
        parser.error("--cv evaluates each fold's test images; drop --split")
    if args.cv is None and (args.detections is None or args.ground_truth is None):
        parser.error("the following arguments are required: --detections, --ground-truth (or --cv RUNS_DIR)")
    setup_logging(args.verbose)
    existing = [name for name in OUTPUT_FILES if (args.output_dir / name).exists()]
    if existing and not args.overwrite:
        raise UserError(f"{args.output_dir} already holds a report ({existing[0]}); pass --overwrite to replace it")
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise UserError(f"{args.output_dir}: exists and is not a folder")
    labels = LabelMap.load(args.label_map) if args.label_map is not None else None
    settings = EvaluationSettings(score_threshold=args.score_threshold, hit_iou=args.hit_iou)
    if args.no_baseline and args.baseline_from is not None:
        parser.error("--no-baseline and --baseline-from contradict each other; drop one")
    options = ReportOptions(plots=not args.no_plots, bootstrap=args.bootstrap, seed=args.seed,
                            gallery=args.gallery, image_dir=args.image_dir, baseline=not args.no_baseline,
                            baseline_from=args.baseline_from)
    if args.cv is not None:
        return _cross_validation(args, settings, options, labels)
    run = run_evaluation(
        args.detections, args.ground_truth, args.output_dir, args.split_file, args.split, settings, options=options,
        labels=labels,
    )
    log.info("%s", summary_text(run.metrics, run.baseline))
    log.info("operating points: %s%s", run.output_dir / OPERATING_POINTS_JSON,
             "" if args.split_file is not None and args.split != TEST else
             " (choose detect's from a validation split's evaluation, --split val, never the test split's)")
    log.info("report: %s", run.output_dir / REPORT_MD)
    if run.inputs.rejects:
        log.warning("%d input rows rejected, listed in %s", len(run.inputs.rejects), run.output_dir / REJECTS_CSV)
        if args.strict:
            return ExitStatus.REJECTS
    return ExitStatus.SUCCESS


def _cross_validation(args: argparse.Namespace, settings: EvaluationSettings, options: ReportOptions,
                      labels: LabelMap | None) -> int:
    from chestdet.evaluation.cv_evaluation import evaluate_crossval, overall_table
    from chestdet.evaluation.report_tables import text_table

    result = evaluate_crossval(args.cv, args.output_dir, args.ground_truth, settings, options, labels)
    log.info("cross-validation, %d folds\n%s", len(result.folds), text_table(*overall_table(result.summary)))
    log.info("report: %s", result.output_dir / REPORT_MD)
    rejects = sum(len(run.inputs.rejects) for run in [*result.folds.values(), result.pooled])
    if rejects:
        log.warning("%d input rows rejected, listed in the folds' and pooled %s", rejects, REJECTS_CSV)
        if args.strict:
            return ExitStatus.REJECTS
    return ExitStatus.SUCCESS


def entry() -> None:
    exit_with(main)


if __name__ == "__main__":
    entry()
