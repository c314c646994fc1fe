"""crossval: k-fold cross-validated training over generate_tfrecords --folds records.

    scripts/crossval.sh --folds workspace/records/folds --steps 5000
    scripts/crossval.sh --folds workspace/records/folds --name cv-scratch --from-scratch --steps 2000

Every option it does not know is a train.sh option, given to each fold's training. Running the same
command again resumes: finished folds are skipped, an interrupted one continues.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from chestdet.commands import train
from chestdet.commands.cli import ExitStatus, UserError, exit_with, setup_logging
from chestdet.core.errors import StageError
from chestdet.core.shell import command
from chestdet.evaluation import crossval
from chestdet.training.train import RUNS_DIR, TrainOptions

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
    options = crossval.CrossvalOptions(folds_dir=args.folds, runs_dir=runs_dir.absolute(),
                                       train=train_options(train_args), tflite=args.tflite,
                                       detect_args=tuple(args.detect_args))
    try:
        crossval.run_crossval(options, crossval.Steps(detect=detect_fold))
    except KeyboardInterrupt:
        again = f"{command('crossval')} {shlex.join(sys.argv[1:] if argv is None else argv)}"
        log.error("interrupted; finished folds and steps are kept. To continue, run the same command again: %s", again)
        return ExitStatus.INTERRUPTED
    return ExitStatus.SUCCESS


def train_options(train_args: list[str]) -> TrainOptions:
    """The options crossval.sh does not know, read as train.sh reads them."""
    parser = train.build_parser()
    parser.prog = "crossval.sh (train.sh options)"
    return train.options_from_args(parser.parse_args(train_args))


def detect_fold(model: Path, images: Path, output_dir: Path, detect_args: tuple[str, ...]) -> None:
    """Detection of one fold's test images, as detect.py does it (with --resume)."""
    from chestdet.commands import detect

    status = detect.main(["--model", str(model), "--input", str(images), "--output-dir", str(output_dir), "--resume",
                          *detect_args])
    if status != ExitStatus.SUCCESS:
        raise StageError(f"detect exited with status {status}")


def entry() -> None:
    exit_with(main)


if __name__ == "__main__":
    entry()
