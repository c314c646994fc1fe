"""crossval: k-fold cross-validated training over generate_tfrecords --folds records.

    scripts/crossval.sh --folds workspace/records/folds --steps 5000
    scripts/crossval.sh --folds workspace/records/folds --name cv-scratch --from-scratch --steps 2000

Every option it does not know is a train.sh option, given to each fold's training. Running the same
command again resumes: finished folds are skipped, an interrupted one continues.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from chestdet.commands.cli import ExitStatus, UserError, exit_with, setup_logging
from chestdet.evaluation import crossval
from chestdet.training.train import RUNS_DIR

log = logging.getLogger("chestdet.evaluation.crossval")

EXAMPLES = """examples:
  scripts/crossval.sh --folds workspace/records/folds --steps 5000
  scripts/crossval.sh --folds workspace/records/folds --name cv-small --from-scratch --set batch_norm_decay=0.9
  python scripts/evaluate.py --cv workspace/runs/crossval-folds --output-dir workspace/eval-cv
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossval.sh",
        description="Cross-validated training: for each fold of generate_tfrecords.py --folds, train (with its val "
        "evaluation, keeping the best checkpoint), export the best checkpoint and detect on the fold's test images. "
        "Other options are train.sh options, used for every fold.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # a train.sh option must never be taken for an abbreviation of one of these
    )
    parser.add_argument("--folds", type=Path, required=True, help="records folder of generate_tfrecords.py --folds")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--name", help="folder name under workspace/runs/ (default: crossval-<folds folder name>)")
    where.add_argument("--runs-dir", type=Path, help="where the folds' runs go (default: workspace/runs/<name>)")
    parser.add_argument("--tflite", action="store_true",
                        help="export model.tflite too (about 2.5 minutes a fold); detection then uses it on a CPU")
    parser.add_argument("--detect-option", action="append", default=[], metavar="OPTION", dest="detect_args",
                        help="an option for detect.py, e.g. --detect-option=--keep-score=0.05 (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, train_args = build_parser().parse_known_args(argv)
    setup_logging(args.verbose)
    if not args.folds.is_dir():
        raise UserError(f"--folds {args.folds}: not a folder")
    runs_dir = args.runs_dir or RUNS_DIR / (args.name or f"crossval-{args.folds.resolve().name}")
    if args.verbose:
        train_args.append("-v")
    options = crossval.CrossvalOptions(folds_dir=args.folds, runs_dir=runs_dir.absolute(),
                                       train_args=tuple(train_args), tflite=args.tflite,
                                       detect_args=tuple(args.detect_args))
    crossval.run_crossval(options, default_steps())
    return ExitStatus.SUCCESS


def default_steps() -> crossval.Steps:
    from chestdet.commands import detect, export, train

    return crossval.Steps(train=train.main, export=export.main, detect=detect.main)


def entry() -> None:
    exit_with(main)


if __name__ == "__main__":
    entry()
