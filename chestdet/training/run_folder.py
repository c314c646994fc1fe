"""The run folder: how many steps and how often to save, whether a folder holds this run (new, resume,
continue), run.json's record of what the run started from and of each session.

A run folder (workspace/runs/<name>/ by default) holds:
    pipeline.config    the as-run config (every override applied)
    run.json           what the run started from (config, checkpoint and records with SHA-256,
                       versions) and one entry per session (steps, time, how it ended)
    ckpt-N.*, checkpoint, train/   the OD API's checkpoints and TensorBoard events
    eval/              the OD API's evaluation events (with evaluation)
    best/, best.json   a copy of the checkpoint with the best val mAP@0.5, and its metrics
    export/            export.sh's default output folder
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
import logging
import math
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chestdet.core import atomic
from chestdet.core.contracts import BEST_RECORD, PIPELINE_FILE, RUN_JSON
from chestdet.core.errors import ChestdetError
from chestdet.training import pipeline_config
from chestdet.training.checkpoints import (
    checkpoint_sha256,
    checkpoint_step,
    latest_checkpoint,
    latest_step,
    now,
    read_json,
    sha256_file,
)

log = logging.getLogger(__name__)

# model_lib_v2.train_loop runs its steps in tf.function chunks of this many (NUM_STEPS_PER_ITERATION)
# and only checks whether to save between chunks.
MAX_STEPS_PER_ITERATION = 100
# Without a checkpoint interval, about ten checkpoints a run, never further apart than this.
MAX_DEFAULT_CHECKPOINT_EVERY = 500


class TrainError(ChestdetError):
    """The training cannot run as asked; the message says why and what to do."""


class RunFolderError(TrainError, ValueError):
    """The run folder cannot be used as asked (holds another run, or something else)."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run, resolved and checked (chestdet.training.train.resolve builds it from TrainOptions):
    absolute paths, the record globs, the label map whose classes the model predicts."""

    config: Path
    model_dir: Path
    train_records: list[str]
    val_records: list[str] | None
    label_map: Path
    fine_tune_checkpoint: Path | None
    num_steps: int
    checkpoint_every: int | None = None
    keep_checkpoints: int | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    evaluate: bool = False
    eval_on_gpu: bool = False
    eval_interval: int = 60
    eval_timeout: int = 3600
    tensorboard: bool = False
    tensorboard_port: int = 6006
    tensorboard_host: str = "localhost"
    keep_tensorboard: bool = False
    gpus: str | None = None
    progress: bool = True
    poll_seconds: float = 5.0


# --- how many steps, how often to save -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StepPlan:
    start_step: int
    num_steps: int
    checkpoint_every: int
    steps_per_iteration: int


def default_checkpoint_every(num_steps: int) -> int:
    """About ten checkpoints a run: the largest divisor of num_steps from 100 up to a tenth of it (at most 500)."""
    if num_steps <= MAX_STEPS_PER_ITERATION:
        return num_steps
    limit = min(MAX_DEFAULT_CHECKPOINT_EVERY, max(MAX_STEPS_PER_ITERATION, num_steps // 10))
    for every in range(limit, MAX_STEPS_PER_ITERATION - 1, -1):
        if num_steps % every == 0:
            return every
    return MAX_STEPS_PER_ITERATION  # the steps are then rounded up to whole hundreds


def plan_steps(num_steps: int, checkpoint_every: int | None, start_step: int = 0) -> StepPlan:
    """Fit the step count, the save interval and the OD API's chunk size together.

    train_loop saves only when a whole interval has passed since the last save, so the last step
    is saved only when the interval divides the steps left; num_steps is rounded up to make it so
    (and the chunk size divides the interval, so no chunk overshoots a save).
    """
    if num_steps < 1:
        raise ValueError(f"the number of steps must be positive, not {num_steps}")
    every = checkpoint_every or default_checkpoint_every(num_steps)
    if every < 1:
        raise ValueError(f"the checkpoint interval must be positive, not {every}")
    left = max(0, num_steps - start_step)
    if left and left % every:
        rounded = start_step + math.ceil(left / every) * every
        log.warning(
            "training to step %d rather than %d so that the last step is saved (a checkpoint every %d steps)",
            rounded, num_steps, every,
        )
        num_steps, left = rounded, rounded - start_step
    per_iteration = math.gcd(every, MAX_STEPS_PER_ITERATION)
    return StepPlan(start_step, num_steps, every, per_iteration)


# --- what run.json records ----------------------------------------------------------------------------


def files_matching(patterns: Sequence[str]) -> list[Path]:
    return sorted({Path(p) for pattern in patterns for p in glob.glob(pattern)})


def describe_records(patterns: Sequence[str]) -> dict:
    files = files_matching(patterns)
    return {
        "patterns": list(patterns),
        "files": [{"path": str(f), "bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in files],
    }


def describe_checkpoint(prefix: Path | None, kind: str) -> dict | None:
    """Path, type and SHA-256 of every file, whether they match the pinned zoo digests, and the zoo
    archive's record when fetch_checkpoint left one."""
    if prefix is None:
        return None
    from chestdet.training import pretrained

    record = {"path": str(prefix), "type": kind, "sha256": checkpoint_sha256(prefix),
              "verification": pretrained.verify_checkpoint(prefix)}
    source = pretrained.source_record(prefix)
    if source:
        record["source"] = source
    return record


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {"python": platform.python_version()}
    for package in ("tensorflow", "tf-models-research-object-detection", "tf-slim", "protobuf", "chestdet"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


# --- new run, resume or continuation --------------------------------------------------------------------


def config_difference(saved: str, wanted: str, limit: int = 12) -> str:
    diff = difflib.unified_diff(saved.splitlines(), wanted.splitlines(), n=0, lineterm="")
    lines = [line for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return "\n".join(lines[:limit] + (["..."] if len(lines) > limit else []))


def continuation(model_dir: Path, configs: dict) -> dict | None:
    """The configs to run when they continue the run in `model_dir` to more steps, else None.

    Everything but the length must be the same; the warm-up stays as the run had it (it is over).
    """
    saved_path = model_dir / PIPELINE_FILE
    if not saved_path.is_file() or latest_checkpoint(model_dir) is None:
        return None
    saved = pipeline_config.load_configs(saved_path)
    if configs["train_config"].num_steps <= saved["train_config"].num_steps:
        return None
    if pipeline_config.length_free_text(saved) != pipeline_config.length_free_text(configs):
        return None
    warmup = pipeline_config.warmup_steps(saved)
    return configs if warmup is None else pipeline_config.apply_overrides(configs, warmup_steps=warmup)


def check_run_folder(model_dir: Path, configs: dict) -> bool:
    """True when `model_dir` holds this same run (resume or continue), False when it is new or empty.

    A run folder without any checkpoint (a start that failed) is taken over by the new config.
    """
    saved = model_dir / PIPELINE_FILE
    if not model_dir.exists() or not any(model_dir.iterdir()):
        return False
    if not saved.is_file():
        raise RunFolderError(f"{model_dir} exists and is not a run folder (no pipeline.config); choose another --name")
    saved_configs = pipeline_config.load_configs(saved)
    saved_text = pipeline_config.config_text(saved_configs)
    wanted_text = pipeline_config.config_text(configs)
    if saved_text == wanted_text:
        return True
    if latest_checkpoint(model_dir) is None:
        log.warning("%s holds a run that saved no checkpoint (a start that failed): starting it anew", model_dir)
        return False
    if saved_configs["train_config"].num_steps < configs["train_config"].num_steps and (
            pipeline_config.length_free_text(saved_configs) == pipeline_config.length_free_text(configs)):
        return True
    raise RunFolderError(
        f"{model_dir} holds a run with another config; resume it with the same options (or a higher --steps to "
        f"continue it), or start a new run with another --name. Differences (saved -> requested):\n"
        + config_difference(saved_text, wanted_text)
    )


@dataclasses.dataclass
class PreparedRun:
    configs: dict
    plan: StepPlan
    resumed: bool


def build_configs(spec: RunSpec, num_steps: int) -> dict:
    configs = pipeline_config.load_configs(spec.config)
    overrides = dict(spec.overrides)
    overrides.update(
        train_records=spec.train_records,
        label_map=str(spec.label_map),
        fine_tune_checkpoint=str(spec.fine_tune_checkpoint) if spec.fine_tune_checkpoint else None,
        num_steps=num_steps,
    )
    if spec.val_records:
        overrides["val_records"] = spec.val_records
    try:
        return pipeline_config.apply_overrides(configs, **overrides)
    except ValueError as error:
        raise TrainError(str(error)) from error


def prepare_run(spec: RunSpec) -> PreparedRun:
    """Build the as-run config, decide between a new run, a resume and a continuation, and write the run folder."""
    num_steps = plan_steps(spec.num_steps, spec.checkpoint_every).num_steps
    configs = build_configs(spec, num_steps)
    continued = continuation(spec.model_dir, configs)
    if continued is not None:
        configs = continued
    resumed = check_run_folder(spec.model_dir, configs)
    start = latest_step(spec.model_dir) if resumed else 0
    if continued is not None:
        log.info("continuing %s from step %d to %d: the cosine learning rate now decays over %d steps, so at "
                 "step %d it rises to that schedule's value", spec.model_dir, start, num_steps, num_steps, start)
    every = spec.checkpoint_every or default_checkpoint_every(num_steps)
    if (num_steps - start) % every:
        every = math.gcd(every, num_steps - start)
        log.warning("resuming at step %d: saving every %d steps so that the last step is saved", start, every)
    plan = plan_steps(num_steps, every, start)
    spec.model_dir.mkdir(parents=True, exist_ok=True)
    pipeline_config.save_config(configs, spec.model_dir)
    record_path = spec.model_dir / RUN_JSON
    if resumed and record_path.is_file():
        record = read_json(record_path)
        record["num_steps"] = configs["train_config"].num_steps
    else:
        record = new_run_record(spec, configs)
    record.setdefault("sessions", []).append(
        {"started": now(), "from_step": start, "to_step": plan.num_steps, "checkpoint_every": plan.checkpoint_every,
         "steps_per_iteration": plan.steps_per_iteration, "evaluate": spec.evaluate, "status": "running"}
    )
    atomic.write_json(record_path, record)
    return PreparedRun(configs, plan, resumed)


def new_run_record(spec: RunSpec, configs: dict) -> dict:
    train = configs["train_config"]
    height, width = pipeline_config.image_size(configs)
    start = spec.fine_tune_checkpoint
    return {
        "created": now(),
        "config": {"source": str(spec.config), "source_sha256": sha256_file(spec.config),
                   "as_run": PIPELINE_FILE},
        "start_checkpoint": describe_checkpoint(start, train.fine_tune_checkpoint_type) if start else None,
        "records": {
            "train": describe_records(spec.train_records),
            "val": describe_records(spec.val_records) if spec.val_records else None,
        },
        "label_map": {"path": str(spec.label_map), "sha256": sha256_file(spec.label_map)},
        "num_steps": train.num_steps,
        "batch_size": train.batch_size,
        "image_size": [height, width],
        "gpus": spec.gpus,
        "versions": versions(),
    }


def finish_session(model_dir: Path, status: str, started: float) -> dict:
    """Close run.json's last session: how it ended, its time, the checkpoint it reached; returns that session."""
    record_path = model_dir / RUN_JSON
    record = read_json(record_path)
    session = record["sessions"][-1]
    session.update(status=status, finished=now(), seconds=round(time.monotonic() - started, 1))
    latest = latest_checkpoint(model_dir)
    session["last_checkpoint"] = latest.name if latest else None
    session["reached_step"] = checkpoint_step(latest) if latest else 0
    best = model_dir / BEST_RECORD
    if best.is_file():
        record["best"] = {k: v for k, v in read_json(best).items() if k in ("checkpoint", "step", "value", "metric")}
    atomic.write_json(record_path, record)
    return session
