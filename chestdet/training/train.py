"""Training with the OD API's model_lib_v2.train_loop, evaluation beside it, in a run folder.

    from chestdet.training.train import TrainOptions, train
    result = train(TrainOptions(records=Path("workspace/records"), steps=5000, evaluate=True))

`TrainOptions` is what a caller asks for (scripts/train.sh builds it from its flags); `resolve` checks it
and works out the run (paths, record globs, start checkpoint, the classes of the label map), and `train`
runs it: a new run, a resume of an interrupted one from its last checkpoint, or the continuation of a
finished one to more steps. The run folder is chestdet.training.run_folder's; the processes are
chestdet.training.supervisor's.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chestdet.core.contracts import LABEL_MAP_FILE
from chestdet.core.labels import LabelMap
from chestdet.core.resources import DEFAULT_PIPELINE, shipped_or_relative, workspace
from chestdet.core.shell import command
from chestdet.data.records import shard_glob
from chestdet.training import checkpoints, pipeline_config, pretrained
from chestdet.training.run_folder import (
    RunSpec,
    StepPlan,
    TrainError,
    files_matching,
    finish_session,
    prepare_run,
)
from chestdet.training.supervisor import Children, Supervisor, stopping_children

log = logging.getLogger(__name__)

RUNS_DIR = workspace() / "runs"
DEFAULT_CONFIG = DEFAULT_PIPELINE
# Settings with their own option, refused as overrides: {override name: the option to use}.
OWN_OPTIONS = {"num_steps": "--steps", "batch_size": "--batch-size", "label_map": "--label-map",
               "fine_tune_checkpoint": "--fine-tune-checkpoint"}


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """What to train. Relative paths are relative to the working directory; None takes the config's value
    (records, label map, steps, batch size, start checkpoint) or the default (run folder, checkpoint
    interval); the label map is first the records folder's own label_map.pbtxt. `overrides` are
    pipeline_config.OVERRIDES by name, e.g. {"image_size": 256}."""

    records: Path | None = None  # a records folder: its train and val shards
    config: Path = DEFAULT_CONFIG
    name: str | None = None  # the run folder workspace/runs/<name> (default: the config's name)
    model_dir: Path | None = None  # or the run folder itself
    label_map: Path | None = None
    steps: int | None = None
    batch_size: int | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int | None = None  # default: 7, or all with evaluate (so the best can be copied)
    fine_tune_checkpoint: Path | None = None
    from_scratch: bool = False
    allow_unverified: bool = False  # a start checkpoint whose files match no pinned zoo digest
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    evaluate: bool = False
    eval_on_gpu: bool = False
    eval_interval: int = 60
    eval_timeout: int = 3600
    tensorboard: bool = False
    tensorboard_port: int = 6006
    tensorboard_host: str = "localhost"
    keep_tensorboard: bool = False  # TensorBoard keeps serving the run after it ends, until Ctrl-C
    gpus: str | None = None  # CUDA_VISIBLE_DEVICES of the training (default: every GPU)
    progress: bool = True  # the live progress line on a terminal


@dataclasses.dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    start_step: int
    num_steps: int
    resumed: bool
    last_checkpoint: Path | None
    best_checkpoint: Path | None  # best/ of an evaluated run, once an evaluated checkpoint has model variables


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the training; every child process has stopped and run.json says so."""

    def __init__(self, model_dir: Path, step: int, saved_step: int, num_steps: int) -> None:
        super().__init__(f"interrupted at step {step} of {num_steps}")
        self.model_dir, self.step, self.saved_step, self.num_steps = model_dir, step, saved_step, num_steps


# --- paths ---------------------------------------------------------------------------------------------


def resolve_path(value: str | Path) -> Path:
    """Config paths are relative to the working directory, so configs hold no machine-specific paths; a
    bare label_map.pbtxt not found there is the shipped one."""
    return Path(os.path.abspath(shipped_or_relative(value)))


def user_path(value: str | Path) -> Path:
    """A path the user gave: relative to the directory the command runs in, made absolute so that the
    as-run config and the child processes see the same file."""
    return Path(os.path.abspath(Path(value).expanduser()))


def default_run_name(config: Path) -> str:
    return config.stem


# --- options -> run -------------------------------------------------------------------------------------


def resolve(options: TrainOptions) -> RunSpec:
    """Check `options` against the config and the files they name and work out the run; raises TrainError."""
    config_path = user_path(options.config)
    try:
        configs = pipeline_config.load_configs(config_path)
        pipeline_config.check_override_names(list(options.overrides))
    except (FileNotFoundError, ValueError) as error:
        raise TrainError(str(error)) from error
    overrides = dict(options.overrides)
    for name in ("num_steps", "batch_size"):
        if name in overrides:
            raise TrainError(f"--set {name}=...: use {OWN_OPTIONS[name]}")
    if options.batch_size is not None:
        overrides["batch_size"] = options.batch_size
    train_records, val_records = record_patterns(options, overrides, configs)
    for name in ("label_map", "fine_tune_checkpoint"):
        if overrides.get(name):
            raise TrainError(f"--set {name}=...: use {OWN_OPTIONS[name]}")
    label_map = run_label_map(options, configs)
    overrides["num_classes"] = label_map_classes(label_map, overrides.get("num_classes"))
    if options.model_dir is not None and options.name is not None:
        raise TrainError("give a run folder (--model-dir) or a run name (--name), not both")
    model_dir = user_path(options.model_dir) if options.model_dir else (
        RUNS_DIR / (options.name or default_run_name(config_path)))
    steps = options.steps if options.steps is not None else configs["train_config"].num_steps
    check_counts(steps, options)
    return RunSpec(
        config=config_path, model_dir=model_dir, train_records=train_records, val_records=val_records or None,
        label_map=label_map, fine_tune_checkpoint=start_checkpoint(options, configs, model_dir), num_steps=steps,
        checkpoint_every=options.checkpoint_every, keep_checkpoints=options.keep_checkpoints, overrides=overrides,
        evaluate=options.evaluate, eval_on_gpu=options.eval_on_gpu, eval_interval=options.eval_interval,
        eval_timeout=options.eval_timeout, tensorboard=options.tensorboard or options.keep_tensorboard,
        tensorboard_port=options.tensorboard_port, tensorboard_host=options.tensorboard_host,
        keep_tensorboard=options.keep_tensorboard, gpus=options.gpus, progress=options.progress,
    )


def _patterns(value: Any) -> list[str]:
    """Record globs, absolute against the working directory."""
    values = [value] if isinstance(value, (str, Path)) else list(value)
    return [str(user_path(v)) for v in values]


def record_patterns(options: TrainOptions, overrides: dict, configs: dict) -> tuple[list[str], list[str]]:
    """The train and val record globs (removed from `overrides`): the train_records / val_records overrides
    win over the records folder, which wins over the config's input paths; checked to match files."""
    if options.records is not None:
        folder = user_path(options.records)
        train, val = [shard_glob(folder, "train")], [shard_glob(folder, "val")]
    else:
        train = [str(resolve_path(p)) for p in configs["train_input_config"].tf_record_input_reader.input_path]
        val = [str(resolve_path(p)) for reader in configs["eval_input_configs"]
               for p in reader.tf_record_input_reader.input_path]
    train = _patterns(overrides.pop("train_records", train))
    val = _patterns(overrides.pop("val_records", val))
    if not files_matching(train):
        raise TrainError(f"no training records match {', '.join(train)} "
                         f"(make them with {command('generate_tfrecords')}, or pass --records)")
    if options.evaluate and not files_matching(val):
        raise TrainError(f"--eval: no validation records match {', '.join(val)}")
    return train, val


def run_label_map(options: TrainOptions, configs: dict) -> Path:
    """--label-map, else the records folder's own copy (generate_tfrecords writes the map its records were
    made with), else the config's."""
    if options.label_map:
        return user_path(options.label_map)
    if options.records is not None and (user_path(options.records) / LABEL_MAP_FILE).is_file():
        return user_path(options.records) / LABEL_MAP_FILE
    return resolve_path(configs["train_input_config"].label_map_path)


def label_map_classes(label_map: Path, num_classes: Any = None) -> int:
    """How many classes the model predicts: those of the label map (ids 1..N; LabelMapError otherwise)."""
    if not label_map.is_file():
        raise TrainError(f"label map not found: {label_map}")
    count = len(LabelMap.load(label_map).names)
    if num_classes is not None and num_classes != count:
        raise TrainError(f"--set num_classes={num_classes}: the label map {label_map} has {count} classes, and "
                         "the model predicts the label map's classes; drop --set num_classes or pass --label-map")
    return count


def check_counts(steps: int, options: TrainOptions) -> None:
    for flag, value in (("--steps", steps), ("--checkpoint-every", options.checkpoint_every),
                        ("--keep-checkpoints", options.keep_checkpoints)):
        if value is not None and value < 1:
            raise TrainError(f"{flag} must be at least 1, not {value}")


def start_checkpoint(options: TrainOptions, configs: dict, model_dir: Path) -> Path | None:
    """The checkpoint to fine-tune from (None: from scratch), checked to exist and to be a verified zoo
    checkpoint unless allow_unverified."""
    if options.from_scratch:
        if options.fine_tune_checkpoint is not None:
            raise TrainError("--fine-tune-checkpoint and --from-scratch exclude each other")
        return None
    configured = configs["train_config"].fine_tune_checkpoint
    chosen = user_path(options.fine_tune_checkpoint) if options.fine_tune_checkpoint else (
        resolve_path(configured) if configured else None)
    if chosen is None:
        raise TrainError(f"{options.config} names no fine_tune_checkpoint: pass --fine-tune-checkpoint or "
                         "--from-scratch")
    if chosen.parent.resolve() == model_dir.resolve():
        raise TrainError(f"the fine-tune checkpoint {chosen} is inside the run folder; the OD API refuses that")
    if not checkpoints.checkpoint_exists(chosen):
        hint = ""
        if pretrained.PRETRAINED_DIR in chosen.parents:
            hint = f" (fetch it with: {command('fetch_checkpoint')} {chosen.parent.parent.name})"
        raise TrainError(f"fine-tune checkpoint not found: {chosen}.index{hint}; or train with --from-scratch")
    verification = pretrained.verify_checkpoint(chosen)
    if not verification["verified"]:
        if not options.allow_unverified:
            raise TrainError(f"start checkpoint {chosen}: {verification['reason']}; refusing it (pass "
                             "--allow-unverified to train from a checkpoint you trust)")
        log.warning("start checkpoint %s is not verified (%s): training from it as --allow-unverified asks",
                    chosen, verification["reason"])
    return chosen


# --- the run ------------------------------------------------------------------------------------------------


def train(options: TrainOptions) -> TrainResult:
    """Train as `options` ask: a new run, or the run folder's run resumed or continued to more steps.

    Raises TrainError (or one of its kind: RunFolderError, ChildFailed) when it cannot, and
    TrainingInterrupted on Ctrl-C or SIGTERM, once every child process has stopped. run.json records
    the session however it ends.
    """
    spec = resolve(options)
    prepared = prepare_run(spec)
    plan = prepared.plan
    log.info("%s %s: steps %d..%d, a checkpoint every %d", "resuming" if prepared.resumed else "training",
             spec.model_dir, plan.start_step, plan.num_steps, plan.checkpoint_every)
    children = Children()
    supervisor = Supervisor(spec, plan, children)
    started, status, recorded = time.monotonic(), "failed", False
    try:
        with stopping_children(children):
            run_session(spec, plan, supervisor)
            status = "finished"
            if spec.keep_tensorboard:
                recorded = _record_session(spec, status, started)
                supervisor.serve_tensorboard()
    except KeyboardInterrupt as interrupt:
        status = "interrupted"
        saved = checkpoints.latest_step(spec.model_dir)
        step = max(supervisor.progress.step if supervisor.progress else plan.start_step, saved)
        raise TrainingInterrupted(spec.model_dir, step, saved, plan.num_steps) from interrupt
    finally:
        if not recorded:
            _record_session(spec, status, started)
    latest = checkpoints.latest_checkpoint(spec.model_dir)
    return TrainResult(spec.model_dir, plan.start_step, plan.num_steps, prepared.resumed, latest,
                       checkpoints.best_checkpoint(spec.model_dir))


def run_session(spec: RunSpec, plan: StepPlan, supervisor: Supervisor) -> None:
    if spec.tensorboard:
        supervisor.start_tensorboard()
    if plan.start_step >= plan.num_steps:
        log.info("%s is already trained to step %d", spec.model_dir, plan.start_step)
    else:
        supervisor.train()


def _record_session(spec: RunSpec, status: str, started: float) -> bool:
    """After the children stopped: the best checkpoint brought up to date, the session closed in run.json."""
    if spec.evaluate:
        checkpoints.update_best(spec.model_dir)
    finish_session(spec.model_dir, status, started)
    return True
