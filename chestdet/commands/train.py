"""train: the OD API's training (model_lib_v2.train_loop) on a pipelines/*.config, in a run folder.

    scripts/train.sh --records workspace/records --steps 5000 --eval --tensorboard
    scripts/train.sh --name smoke --records workspace/records --from-scratch --steps 200 \\
        --set image_size=128 --set batch_size=2

Running the same command again resumes the run from its last checkpoint; with a higher --steps it
continues a finished run. Relative paths on the command line are relative to the current directory;
relative paths inside a pipeline config are relative to the repository.
"""

from __future__ import annotations

import argparse
import ast
import logging
from pathlib import Path
from typing import Any

from chestdet.commands.cli import ExitStatus, UserError, exit_with, setup_logging
from chestdet.training import checkpoints, pipeline_config, pretrained
from chestdet.training import train as training

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
                        help="folder with train-* and val-* TFRecords (default: the config's input paths)")
    parser.add_argument("--label-map", type=Path, help="label map (default: the config's label_map_path)")
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
    parser.add_argument("--tensorboard-port", type=int, default=6006, help="(default: %(default)s, or a free one)")
    parser.add_argument("--gpus", metavar="LIST",
                        help="GPUs to train on, e.g. 0,1 (sets CUDA_VISIBLE_DEVICES; default: all visible)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and every TensorFlow and library message")
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


def config_paths(config: dict) -> tuple[list[str], list[str], Path, Path | None]:
    train = [str(training.resolve_path(p)) for p in config["train_input_config"].tf_record_input_reader.input_path]
    val = [str(training.resolve_path(p)) for reader in config["eval_input_configs"]
           for p in reader.tf_record_input_reader.input_path]
    label_map = training.resolve_path(config["train_input_config"].label_map_path)
    checkpoint = config["train_config"].fine_tune_checkpoint
    return train, val, label_map, training.resolve_path(checkpoint) if checkpoint else None


def start_checkpoint(args: argparse.Namespace, configured: Path | None) -> Path | None:
    if args.from_scratch:
        return None
    chosen = training.user_path(args.fine_tune_checkpoint) if args.fine_tune_checkpoint else configured
    if chosen is None:
        raise UserError(f"{args.config} names no fine_tune_checkpoint: pass --fine-tune-checkpoint or --from-scratch")
    model_dir = training.user_path(args.model_dir) if args.model_dir else None
    if model_dir is not None and chosen.parent.resolve() == model_dir.resolve():
        raise UserError(f"the fine-tune checkpoint {chosen} is inside the run folder; the OD API refuses that")
    if not checkpoints.checkpoint_exists(chosen):
        hint = ""
        if pretrained.PRETRAINED_DIR in chosen.parents:
            hint = f" (fetch it with: python scripts/fetch_checkpoint.py {chosen.parent.parent.name})"
        raise UserError(f"fine-tune checkpoint not found: {chosen}.index{hint}; or train with --from-scratch")
    verification = pretrained.verify_checkpoint(chosen)
    if not verification["verified"]:
        if not args.allow_unverified:
            raise UserError(f"start checkpoint {chosen}: {verification['reason']}; refusing it (pass "
                            "--allow-unverified to train from a checkpoint you trust)")
        log.warning("start checkpoint %s is not verified (%s): training from it as --allow-unverified asks",
                    chosen, verification["reason"])
    return chosen


def _patterns(value: Any) -> list[str]:
    """Record globs the user gave, absolute against the current directory."""
    values = [value] if isinstance(value, (str, Path)) else list(value)
    return [str(training.user_path(v)) for v in values]


def record_patterns(args: argparse.Namespace, overrides: dict, train: list[str], val: list[str]
                    ) -> tuple[list[str], list[str]]:
    """The train and val record globs: --set train_records=/val_records= win over --records, which wins
    over the config; checked to match files."""
    if args.records is not None:
        train = [str(training.user_path(args.records) / "train-*")]
        val = [str(training.user_path(args.records) / "val-*")]
    train = _patterns(overrides.pop("train_records", train))
    val = _patterns(overrides.pop("val_records", val))
    if not training.files_matching(train):
        raise UserError(f"no training records match {', '.join(train)} "
                        "(make them with scripts/generate_tfrecords.py, or pass --records)")
    if args.eval and not training.files_matching(val):
        raise UserError(f"--eval: no validation records match {', '.join(val)}")
    return train, val


def check_label_map(label_map: Path, num_classes: int) -> None:
    if not label_map.is_file():
        raise UserError(f"label map not found: {label_map}")
    try:
        training.check_label_map(label_map, num_classes)
    except training.TrainError as error:
        raise UserError(str(error)) from error


def options_from_args(args: argparse.Namespace) -> training.TrainOptions:
    config_path = training.user_path(args.config)
    try:
        configs = pipeline_config.load_configs(config_path)
        overrides = dict(parse_override(text) for text in args.overrides)
        pipeline_config.check_override_names(list(overrides))
    except (FileNotFoundError, ValueError) as error:
        raise UserError(str(error)) from error
    for flag, name in (("--steps", "num_steps"), ("--batch-size", "batch_size")):
        if name in overrides:
            raise UserError(f"--set {name}=...: use {flag}")
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    train_records, val_records, label_map, configured_checkpoint = config_paths(configs)
    train_records, val_records = record_patterns(args, overrides, train_records, val_records)
    for name in ("label_map", "fine_tune_checkpoint"):
        if overrides.get(name):
            raise UserError(f"--set {name}=...: use --{name.replace('_', '-')}")
    label_map = training.user_path(args.label_map) if args.label_map else label_map
    check_label_map(label_map, overrides.get("num_classes", configs["model"].ssd.num_classes))
    model_dir = training.user_path(args.model_dir) if args.model_dir else (
        training.RUNS_DIR / (args.name or training.default_run_name(config_path)))
    steps = args.steps if args.steps is not None else configs["train_config"].num_steps
    for flag, value in (("--steps", steps), ("--checkpoint-every", args.checkpoint_every),
                        ("--keep-checkpoints", args.keep_checkpoints)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, not {value}")
    return training.TrainOptions(
        config=config_path,
        model_dir=model_dir,
        train_records=train_records,
        val_records=val_records or None,
        label_map=label_map,
        fine_tune_checkpoint=start_checkpoint(args, configured_checkpoint),
        num_steps=steps,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        overrides=overrides,
        evaluate=args.eval,
        eval_on_gpu=args.eval_on_gpu,
        eval_interval=args.eval_interval,
        tensorboard=args.tensorboard,
        tensorboard_port=args.tensorboard_port,
        gpus=args.gpus,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    options = options_from_args(args)
    try:
        prepared = training.run_training(options)
    except (training.RunFolderError, ValueError) as error:
        raise UserError(str(error)) from error
    except training.ChildFailed as error:
        log.error("error: %s", error)
        return ExitStatus.ERROR
    model_dir = options.model_dir
    latest = checkpoints.latest_checkpoint(model_dir)
    log.info("run folder: %s", _shown(model_dir))
    log.info("last checkpoint: %s (step %d of %d)", latest.name if latest else "none",
             checkpoints.checkpoint_step(latest) if latest else 0, prepared.plan.num_steps)
    best = checkpoints.best_checkpoint(model_dir)
    if best is not None:
        log.info("best checkpoint: %s (export it with: scripts/export.sh --checkpoint %s)",
                 _shown(best), _shown(model_dir / checkpoints.BEST_RECORD))
    elif options.evaluate and latest is not None:
        log.warning("no evaluated checkpoint holds model variables yet, so there is no %s: export the last "
                    "checkpoint with: scripts/export.sh --checkpoint %s", checkpoints.BEST_RECORD, _shown(model_dir))
    return ExitStatus.SUCCESS


def _shown(path: Path) -> str:
    """The path as the user can type it from the current directory."""
    cwd = Path.cwd()
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) and path != cwd else str(path)


def entry() -> None:
    exit_with(main)


if __name__ == "__main__":
    entry()
