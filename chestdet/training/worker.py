"""The training session's child processes: `python -m chestdet.training.worker train|eval --model-dir RUN ...`.

train runs what `model_main_tf2` runs for training (a MirroredStrategy over the visible GPUs, then
model_lib_v2.train_loop) on the run folder's pipeline.config; eval runs the OD API's continuous
evaluation of each new checkpoint. The supervisor (chestdet.training.supervisor) starts them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from chestdet.core import compat
from chestdet.core.contracts import PIPELINE_FILE
from chestdet.training.checkpoints import latest_step
from chestdet.training.run_folder import StepPlan

log = logging.getLogger(__name__)

# The training child's exit status when the loss became NaN or infinite.
NON_FINITE_EXIT = 3


def train_worker(model_dir: Path, plan: StepPlan, keep_checkpoints: int, report_steps: bool = False) -> None:
    """What `model_main_tf2` does for training: a MirroredStrategy over the visible GPUs, then train_loop.

    Each step fails on a NaN or infinite loss (compat.patch_train_step) and, with `report_steps`, prints
    its number and total loss for the supervisor's progress line.
    """
    compat.apply()
    import tensorflow as tf
    from object_detection import model_lib_v2

    tf.config.set_soft_device_placement(True)
    compat.patch_train_step(model_lib_v2, report_steps=report_steps)
    strategy = tf.distribute.MirroredStrategy()
    with strategy.scope():
        model_lib_v2.train_loop(
            pipeline_config_path=str(model_dir / PIPELINE_FILE),
            model_dir=str(model_dir),
            train_steps=plan.num_steps,
            checkpoint_every_n=plan.checkpoint_every,
            checkpoint_max_to_keep=keep_checkpoints or None,
            num_steps_per_iteration=plan.steps_per_iteration,
        )


def eval_worker(model_dir: Path, interval: int, timeout: int) -> None:
    """The OD API's continuous evaluation of each new checkpoint; it returns after the last step's."""
    compat.apply()
    import tensorflow as tf
    from object_detection import model_lib_v2

    tf.config.set_soft_device_placement(True)
    model_lib_v2.eval_continuously(
        pipeline_config_path=str(model_dir / PIPELINE_FILE),
        model_dir=str(model_dir),
        checkpoint_dir=str(model_dir),
        wait_interval=interval,
        timeout=timeout,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chestdet.training.worker",
                                     description="a training or evaluation child of a training session")
    sub = parser.add_subparsers(dest="role", required=True)
    train = sub.add_parser("train", help="train the run folder's pipeline.config to --steps")
    train.add_argument("--model-dir", type=Path, required=True, help="the run folder")
    train.add_argument("--steps", type=int, required=True, help="the last step")
    train.add_argument("--checkpoint-every", type=int, required=True, help="steps between checkpoints")
    train.add_argument("--steps-per-iteration", type=int, required=True, help="steps per tf.function call")
    train.add_argument("--keep-checkpoints", type=int, default=7, help="checkpoints kept (0: all)")
    train.add_argument("--report-steps", action="store_true", help="print each step's number and total loss")
    evaluate = sub.add_parser("eval", help="evaluate each new checkpoint of the run folder")
    evaluate.add_argument("--model-dir", type=Path, required=True, help="the run folder")
    evaluate.add_argument("--interval", type=int, default=60, help="at least this many seconds between evaluations")
    evaluate.add_argument("--timeout", type=int, default=3600, help="stop after this many seconds without one")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # The OD API reports its per-step time and losses at INFO through absl: they go to the child's log file.
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    if args.role == "eval":
        eval_worker(args.model_dir, args.interval, args.timeout)
        return 0
    import tensorflow as tf

    plan = StepPlan(latest_step(args.model_dir), args.steps, args.checkpoint_every, args.steps_per_iteration)
    try:
        train_worker(args.model_dir, plan, args.keep_checkpoints, args.report_steps)
    except tf.errors.InvalidArgumentError as error:
        if compat.NON_FINITE_MESSAGE not in str(error):
            raise
        log.error("error: %s", compat.NON_FINITE_MESSAGE)
        return NON_FINITE_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
