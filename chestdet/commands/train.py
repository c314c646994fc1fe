"""train: the OD API's training (model_lib_v2.train_loop) on a pipelines/*.config, in a run folder.

    scripts/train.sh --records workspace/records --steps 5000 --eval --tensorboard
    scripts/train.sh --name smoke --records workspace/records --from-scratch --steps 200 \\
        --set image_size=128 --set batch_size=2

Running the same command again resumes the run from its last checkpoint; with a higher --steps it
continues a finished run. Relative paths on the command line are relative to the current directory.
The command parses its flags into chestdet.training.train.TrainOptions, calls train() and logs.
"""

from __future__ import annotations

import argparse
import ast
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from chestdet.commands.cli import ExitStatus, UserError, exit_with, setup_logging
from chestdet.core.contracts import BEST_RECORD, RUN_EXPORT_DIR
from chestdet.core.shell import command, shown
from chestdet.training import pipeline_config
from chestdet.training import train as training
from chestdet.training.checkpoints import checkpoint_step

log = logging.getLogger("chestdet.training.train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.sh",
        description="Train an SSD detector with the TensorFlow Object Detection API (model_lib_v2.train_loop, "
        "as model_main_tf2 does) in a run folder; re-running the same command resumes it.",
        epilog="Config overrides for --set: " + ", ".join(pipeline_config.OVERRIDES),
    )
    parser.add_argument("--config", type=Path, default=training.DEFAULT_CONFIG,
                        help="pipeline config (default: %(default)s)")
    run = parser.add_mutually_exclusive_group()
    run.add_argument("--name", help="run folder name under workspace/runs/ (default: the config's name)")
    run.add_argument("--model-dir", type=Path, help="run folder (default: workspace/runs/<name>)")
    parser.add_argument("--records", type=Path,
                        help="records folder: its train-* and val-* shards (default: the config's input paths)")
    parser.add_argument("--label-map", type=Path, help="label map (default: the --records folder's label_map.pbtxt, "
                        "else the config's label_map_path)")
    parser.add_argument("--steps", type=int, help="training steps (default: the config's num_steps)")
    parser.add_argument("--batch-size", type=int, help="global batch size, split over the GPUs (default: the config's)")
    parser.add_argument("--checkpoint-every", type=int, metavar="N",
                        help="save every N steps (default: about ten checkpoints a run, at most 500 steps apart)")
    parser.add_argument("--keep-checkpoints", type=int, metavar="N",
                        help="checkpoints kept on disk (default: 7, or all with --eval so the best can be copied)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--fine-tune-checkpoint", type=Path, metavar="PREFIX",
                       help="checkpoint to start from, e.g. .../checkpoint/ckpt-0 (default: the config's)")
    start.add_argument("--from-scratch", action="store_true",
                       help="start from random weights (no fine_tune_checkpoint)")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="train from a start checkpoint whose files match no digest pinned for the TF2 "
                        "Detection Zoo (your own checkpoint); run.json records that it was not verified")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="overrides",
                        help="a named config override, e.g. image_size=256, augment=False (repeatable)")
    parser.add_argument("--eval", action="store_true",
                        help="evaluate each new checkpoint on the val records in a separate process and keep the "
                        "best one (best/, best.json)")
    parser.add_argument("--eval-on-gpu", action="store_true",
                        help="let the evaluation use the GPUs too (default: it runs on the CPU)")
    parser.add_argument("--eval-interval", type=int, default=60, metavar="S",
                        help="at least S seconds between evaluations (default: %(default)s)")
    parser.add_argument("--tensorboard", action="store_true", help="start TensorBoard on the run folder")
    parser.add_argument("--keep-tensorboard", action="store_true",
                        help="start TensorBoard and keep it serving after the run ends, until Ctrl-C")
    parser.add_argument("--tensorboard-port", type=int, default=6006, help="(default: %(default)s, or a free one)")
    parser.add_argument("--gpus", metavar="LIST",
                        help="GPUs to train on, e.g. 0,1 (sets CUDA_VISIBLE_DEVICES; default: all visible)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no live progress line (without a terminal the progress is logged once a minute)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, the training processes' own output, and every TensorFlow and "
                        "library message")
    return parser


def parse_override(text: str) -> tuple[str, Any]:
    """NAME=VALUE with VALUE a Python literal (256, 0.9, False, (256, 320)) or else a plain string."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise UserError(f"--set {text!r}: expected NAME=VALUE")
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        parsed = value.strip()
    return name.strip(), parsed


def options_from_args(args: argparse.Namespace) -> training.TrainOptions:
    """The flags as TrainOptions; the library checks them (training.resolve)."""
    return training.TrainOptions(
        records=args.records, config=args.config, name=args.name, model_dir=args.model_dir,
        label_map=args.label_map, steps=args.steps, batch_size=args.batch_size,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
        fine_tune_checkpoint=args.fine_tune_checkpoint, from_scratch=args.from_scratch,
        allow_unverified=args.allow_unverified, overrides=dict(parse_override(text) for text in args.overrides),
        evaluate=args.eval, eval_on_gpu=args.eval_on_gpu, eval_interval=args.eval_interval,
        tensorboard=args.tensorboard, keep_tensorboard=args.keep_tensorboard,
        tensorboard_port=args.tensorboard_port, gpus=args.gpus, progress=not args.no_progress,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    options = options_from_args(args)
    try:
        result = training.train(options)
    except training.TrainingInterrupted as stopped:
        again = f"{command('train')} {shlex.join(sys.argv[1:] if argv is None else argv)}"
        log.error("interrupted at step %d of %d; the last checkpoint is step %d. To continue from it, run the "
                  "same command again: %s", stopped.step, stopped.num_steps, stopped.saved_step, again)
        return ExitStatus.INTERRUPTED
    for line in closing_lines(result, options.evaluate):
        log.info("%s", line)
    return ExitStatus.SUCCESS


def closing_lines(result: training.TrainResult, evaluated: bool) -> list[str]:
    """Where the run is, how far it got, and the export command for it, as typed from here."""
    latest, folder = result.last_checkpoint, shown(result.model_dir)
    lines = [f"run folder: {folder}",
             f"last checkpoint: {latest.name if latest else 'none'} (step {checkpoint_step(latest) if latest else 0} "
             f"of {result.num_steps})"]
    export = f"{command('export')} --checkpoint"
    into = f"(into {shown(result.model_dir / RUN_EXPORT_DIR)})"
    if result.best_checkpoint is not None:
        lines.append(f"best checkpoint: {shown(result.best_checkpoint)}; export it with: {export} "
                     f"{shown(result.model_dir / BEST_RECORD)} {into}")
    elif latest is not None:
        if evaluated:
            lines.append(f"no evaluated checkpoint holds model variables yet, so there is no {BEST_RECORD}")
        lines.append(f"export the last checkpoint with: {export} {folder} {into}")
    return lines


def entry() -> None:
    exit_with(main)


if __name__ == "__main__":
    entry()
