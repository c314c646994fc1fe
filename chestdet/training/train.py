"""Training with the OD API's model_lib_v2.train_loop, evaluation beside it, and the run folder.

A run folder (workspace/runs/<name>/ by default) holds:
    pipeline.config    the as-run config (every override applied)
    run.json           what the run started from (config, checkpoint and records with SHA-256,
                       versions) and one entry per session (steps, time, how it ended)
    ckpt-N.*, checkpoint, train/   the OD API's checkpoints and TensorBoard events
    eval/              the OD API's evaluation events (with --eval)
    best/, best.json   a copy of the checkpoint with the best val mAP@0.5, and its metrics

The supervisor (`run_training`) starts training, evaluation and TensorBoard as child processes
(`python -m chestdet.training.train train|eval ...`), so that Ctrl-C stops all of them at once: a child
busy in a 100-step tf.function would notice SIGINT only minutes later, SIGTERM ends it now.
Running the same command again resumes from the run folder's last checkpoint; the same command with a
higher --steps continues a finished run.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import glob
import logging
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from chestdet.core import atomic
from chestdet.core.errors import ChestdetError
from chestdet.core.resources import DEFAULT_PIPELINE, shipped_or_relative, workspace
from chestdet.training import pipeline_config
from chestdet.training.checkpoints import (
    BEST_RECORD,
    checkpoint_sha256,
    checkpoint_step,
    latest_checkpoint,
    latest_step,
    now,
    read_json,
    sha256_file,
    update_best,
)

log = logging.getLogger(__name__)

RUNS_DIR = workspace() / "runs"
PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the child processes import this same chestdet
DEFAULT_CONFIG = DEFAULT_PIPELINE
RUN_RECORD = "run.json"

# model_lib_v2.train_loop runs its steps in tf.function chunks of this many (NUM_STEPS_PER_ITERATION)
# and only checks whether to save between chunks.
MAX_STEPS_PER_ITERATION = 100
# Without --checkpoint-every, about ten checkpoints a run, never further apart than this.
MAX_DEFAULT_CHECKPOINT_EVERY = 500
STOP_GRACE_SECONDS = 10.0
# The training child's exit status when the loss became NaN or infinite, and the message it fails with.
NON_FINITE_EXIT = 3
NON_FINITE_MESSAGE = "the training loss became NaN or infinite"


class TrainError(ChestdetError):
    """The training cannot start as asked; the message says why and what to do."""


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


# --- the run folder -----------------------------------------------------------------------------------


def resolve_path(value: str | Path) -> Path:
    """Config paths are relative to the working directory, so configs hold no machine-specific paths; a
    bare label_map.pbtxt not found there is the shipped one."""
    return Path(os.path.abspath(shipped_or_relative(value)))


def user_path(value: str | Path) -> Path:
    """A path the user typed: relative to the directory the command runs in, made absolute so that the
    as-run config and the child processes (which run in the repository) see the same file."""
    return Path(os.path.abspath(Path(value).expanduser()))


def check_label_map(path: Path, num_classes: int) -> None:
    """The label map must name ids 1..num_classes, the classes the model is built to predict."""
    from object_detection.utils import label_map_util

    try:
        ids = sorted(item.id for item in label_map_util.load_labelmap(str(path)).item)
    except Exception as error:  # text_format.ParseError or label_map_util's ValueError
        raise TrainError(f"{path}: not a valid label map ({error})") from error
    if ids != list(range(1, num_classes + 1)):
        raise TrainError(f"{path}: the label map has {len(ids)} classes (ids {_id_ranges(ids)}) but the config's "
                         f"num_classes is {num_classes}; use a label map with ids 1..{num_classes}, "
                         f"or --set num_classes={len(ids)}")


def _id_ranges(ids: list[int]) -> str:
    if ids and ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}..{ids[-1]}"
    return ", ".join(map(str, ids)) or "none"


def default_run_name(config: Path) -> str:
    return config.stem


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


def config_difference(saved: str, wanted: str, limit: int = 12) -> str:
    diff = difflib.unified_diff(saved.splitlines(), wanted.splitlines(), n=0, lineterm="")
    lines = [line for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return "\n".join(lines[:limit] + (["..."] if len(lines) > limit else []))


class RunFolderError(TrainError, ValueError):
    """The run folder cannot be used as asked (holds another run, or something else)."""


def continuation(model_dir: Path, configs: dict) -> dict | None:
    """The configs to run when they continue the run in `model_dir` to more steps, else None.

    Everything but the length must be the same; the warm-up stays as the run had it (it is over).
    """
    saved_path = model_dir / pipeline_config.PIPELINE_FILE
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
    saved = model_dir / pipeline_config.PIPELINE_FILE
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


# --- the child processes ----------------------------------------------------------------------------------


def child_environment(cuda_visible_devices: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if cuda_visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
    return env


def train_command(model_dir: Path, plan: StepPlan, keep_checkpoints: int) -> list[str]:
    return [
        sys.executable, "-m", "chestdet.training.train", "train", "--model-dir", str(model_dir),
        "--steps", str(plan.num_steps), "--checkpoint-every", str(plan.checkpoint_every),
        "--steps-per-iteration", str(plan.steps_per_iteration), "--keep-checkpoints", str(keep_checkpoints),
    ]


def eval_command(model_dir: Path, interval: int, timeout: int) -> list[str]:
    return [
        sys.executable, "-m", "chestdet.training.train", "eval", "--model-dir", str(model_dir),
        "--interval", str(interval), "--timeout", str(timeout),
    ]


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise OSError("no free TCP port for TensorBoard")


def tensorboard_command(model_dir: Path, port: int, host: str) -> list[str]:
    return [sys.executable, "-m", "tensorboard.main", "--logdir", str(model_dir), "--port", str(port), "--host", host]


class Children:
    """The processes a training session started; `stop_all` ends every one (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.processes: dict[str, subprocess.Popen] = {}
        self.pumps: list[threading.Thread] = []

    def start(self, name: str, command: list[str], env: dict[str, str], log_path: Path, echo: bool = False) -> None:
        """Start `command`; its output goes to `log_path`, and with `echo` its progress lines to our log."""
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self.processes[name] = process
        pump = threading.Thread(target=_pump, args=(process.stdout, log_path, echo), daemon=True)
        pump.start()
        self.pumps.append(pump)
        log.debug("started %s (pid %d): %s", name, process.pid, " ".join(command))

    def stop_all(self) -> None:
        running = [p for p in self.processes.values() if p.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pump in self.pumps:
            pump.join(timeout=STOP_GRACE_SECONDS)


# The OD API's own progress lines (per-step time, the loss dict) and anything that looks like a failure.
PROGRESS_LINE = re.compile(r"Step \d+ per-step time|'Loss/|'learning_rate'|Traceback|Error|error:")


def _pump(stream: IO[bytes], log_path: Path, echo: bool) -> None:
    with open(log_path, "ab") as sink:
        for line in iter(stream.readline, b""):
            sink.write(line)
            sink.flush()
            text = line.decode("utf-8", "replace").rstrip()
            if echo and PROGRESS_LINE.search(text):
                log.info("%s", text.split(" tensorflow INFO: ", 1)[-1])
    stream.close()


# --- the supervisor --------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainOptions:
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
    gpus: str | None = None
    poll_seconds: float = 5.0


@dataclasses.dataclass
class PreparedRun:
    configs: dict
    plan: StepPlan
    resumed: bool


def build_configs(options: TrainOptions, num_steps: int) -> dict:
    configs = pipeline_config.load_configs(options.config)
    overrides = dict(options.overrides)
    overrides.update(
        train_records=options.train_records,
        label_map=str(options.label_map),
        fine_tune_checkpoint=str(options.fine_tune_checkpoint) if options.fine_tune_checkpoint else None,
        num_steps=num_steps,
    )
    if options.val_records:
        overrides["val_records"] = options.val_records
    return pipeline_config.apply_overrides(configs, **overrides)


def prepare_run(options: TrainOptions) -> PreparedRun:
    """Build the as-run config, decide between a new run, a resume and a continuation, and write the run folder."""
    num_steps = plan_steps(options.num_steps, options.checkpoint_every).num_steps
    configs = build_configs(options, num_steps)
    continued = continuation(options.model_dir, configs)
    if continued is not None:
        configs = continued
    resumed = check_run_folder(options.model_dir, configs)
    start = latest_step(options.model_dir) if resumed else 0
    if continued is not None:
        log.info("continuing %s from step %d to %d: the cosine learning rate now decays over %d steps, so at "
                 "step %d it rises to that schedule's value", options.model_dir, start, num_steps, num_steps, start)
    every = options.checkpoint_every or default_checkpoint_every(num_steps)
    if (num_steps - start) % every:
        every = math.gcd(every, num_steps - start)
        log.warning("resuming at step %d: saving every %d steps so that the last step is saved", start, every)
    plan = plan_steps(num_steps, every, start)
    options.model_dir.mkdir(parents=True, exist_ok=True)
    pipeline_config.save_config(configs, options.model_dir)
    record_path = options.model_dir / RUN_RECORD
    if resumed and record_path.is_file():
        record = read_json(record_path)
        record["num_steps"] = configs["train_config"].num_steps
    else:
        record = new_run_record(options, configs)
    record.setdefault("sessions", []).append(
        {"started": now(), "from_step": start, "to_step": plan.num_steps, "checkpoint_every": plan.checkpoint_every,
         "steps_per_iteration": plan.steps_per_iteration, "evaluate": options.evaluate, "status": "running"}
    )
    atomic.write_json(record_path, record)
    return PreparedRun(configs, plan, resumed)


def new_run_record(options: TrainOptions, configs: dict) -> dict:
    train = configs["train_config"]
    height, width = pipeline_config.image_size(configs)
    start = options.fine_tune_checkpoint
    return {
        "created": now(),
        "config": {"source": str(options.config), "source_sha256": sha256_file(options.config),
                   "as_run": pipeline_config.PIPELINE_FILE},
        "start_checkpoint": describe_checkpoint(start, train.fine_tune_checkpoint_type) if start else None,
        "records": {
            "train": describe_records(options.train_records),
            "val": describe_records(options.val_records) if options.val_records else None,
        },
        "label_map": {"path": str(options.label_map), "sha256": sha256_file(options.label_map)},
        "num_steps": train.num_steps,
        "batch_size": train.batch_size,
        "image_size": [height, width],
        "gpus": options.gpus,
        "versions": versions(),
    }


def finish_session(model_dir: Path, status: str, started: float) -> None:
    record_path = model_dir / RUN_RECORD
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


def run_training(options: TrainOptions) -> PreparedRun:
    """Train (resuming when the run folder holds this run), with evaluation and TensorBoard if asked.

    Raises KeyboardInterrupt on Ctrl-C (or SIGTERM) after stopping every child process.
    """
    prepared = prepare_run(options)
    plan, model_dir = prepared.plan, options.model_dir
    log.info("%s %s: steps %d..%d, a checkpoint every %d", "resuming" if prepared.resumed else "training",
             model_dir, plan.start_step, plan.num_steps, plan.checkpoint_every)
    children = Children()
    started = time.monotonic()
    status = "failed"
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt) if in_main_thread else None
    try:
        if options.tensorboard:
            port = free_port(options.tensorboard_port)
            children.start("tensorboard", tensorboard_command(model_dir, port, options.tensorboard_host),
                           child_environment(""), model_dir / "tensorboard.log")
            log.info("TensorBoard: http://%s:%d/", options.tensorboard_host, port)
        done = plan.start_step >= plan.num_steps
        if done:
            log.info("%s is already trained to step %d", model_dir, plan.start_step)
        else:
            keep = options.keep_checkpoints or (0 if options.evaluate else 7)
            children.start("train", train_command(model_dir, plan, keep), child_environment(options.gpus),
                           model_dir / "train.log", echo=True)
        if options.evaluate and not done:
            eval_devices = options.gpus if options.eval_on_gpu else ""
            children.start("eval", eval_command(model_dir, options.eval_interval, options.eval_timeout),
                           child_environment(eval_devices), model_dir / "eval.log")
        supervise(children, model_dir, options)
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if in_main_thread:  # a second Ctrl-C must not cut the clean-up short and orphan a child
            previous_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        children.stop_all()
        if in_main_thread:
            signal.signal(signal.SIGINT, previous_sigint)
            signal.signal(signal.SIGTERM, previous_sigterm)
        if options.evaluate:
            update_best(model_dir)
        finish_session(model_dir, status, started)
    return prepared


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class ChildFailed(RuntimeError):
    """A training or evaluation process ended with an error."""


class NonFiniteLoss(ChildFailed):
    """Training stopped because the loss became NaN or infinite."""


def non_finite_message(model_dir: Path) -> str:
    latest = latest_checkpoint(model_dir)
    kept = (f"the last good checkpoint, {latest.name} (step {checkpoint_step(latest)}), is kept" if latest
            else "no checkpoint was saved")
    return (f"training stopped: {NON_FINITE_MESSAGE} ({model_dir / 'train.log'}); {kept}; try a lower "
            f"--set learning_rate=... in a new run (--name), or check the records")


def supervise(children: Children, model_dir: Path, options: TrainOptions) -> None:
    """Wait for training, then for the evaluation of its last checkpoint, tracking the best one."""
    train = children.processes.get("train")
    evaluation = children.processes.get("eval")
    reported: set[str] = set()
    while train is not None and train.poll() is None:
        time.sleep(options.poll_seconds)
        report_failed_helpers(children, model_dir, reported)
        if options.evaluate:
            update_best(model_dir)
    if train is not None and train.returncode == NON_FINITE_EXIT:
        raise NonFiniteLoss(non_finite_message(model_dir))
    if train is not None and train.returncode != 0:
        raise ChildFailed(f"training stopped with exit status {train.returncode}; see {model_dir / 'train.log'}")
    if evaluation is not None:
        log.info("waiting for the evaluation of the last checkpoint")
        while evaluation.poll() is None:
            time.sleep(options.poll_seconds)
            update_best(model_dir)
        if evaluation.returncode != 0:
            raise ChildFailed(f"evaluation stopped with exit status {evaluation.returncode}; "
                              f"see {model_dir / 'eval.log'}")


def report_failed_helpers(children: Children, model_dir: Path, reported: set[str]) -> None:
    """Say once when TensorBoard or the evaluation dies while training goes on."""
    for name in ("tensorboard", "eval"):
        process = children.processes.get(name)
        if process is None or name in reported or process.poll() in (None, 0):
            continue
        reported.add(name)
        log_path = model_dir / f"{name}.log"
        text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
        lines = text.strip().splitlines()
        log.error("%s stopped with exit status %d: %s (see %s); training goes on",
                  name, process.returncode, lines[-1] if lines else "no output", log_path)


# --- the child processes' own entry point ------------------------------------------------------------------


def train_worker(model_dir: Path, plan: StepPlan, keep_checkpoints: int) -> None:
    """What `model_main_tf2` does for training: a MirroredStrategy over the visible GPUs, then train_loop."""
    from chestdet.core import compat

    compat.apply()
    import tensorflow as tf
    from object_detection import model_lib_v2

    tf.config.set_soft_device_placement(True)
    stop_on_non_finite_loss(model_lib_v2)
    strategy = tf.distribute.MirroredStrategy()
    with strategy.scope():
        model_lib_v2.train_loop(
            pipeline_config_path=str(model_dir / pipeline_config.PIPELINE_FILE),
            model_dir=str(model_dir),
            train_steps=plan.num_steps,
            checkpoint_every_n=plan.checkpoint_every,
            checkpoint_max_to_keep=keep_checkpoints or None,
            num_steps_per_iteration=plan.steps_per_iteration,
        )


def stop_on_non_finite_loss(model_lib_v2: Any) -> None:
    """Make each training step fail on a NaN or infinite total loss.

    train_loop has no such check: it would go on and save checkpoints of NaN weights. The failure
    ends the 100-step chunk before train_loop's next save, so the last checkpoint on disk stays the
    last good one. train_loop calls model_lib_v2.eager_train_step by name, so wrapping it is enough.
    """
    import tensorflow as tf

    original = model_lib_v2.eager_train_step
    if getattr(original, "checks_finite_loss", False):
        return

    def checked_train_step(*args: Any, **kwargs: Any) -> dict:
        losses = original(*args, **kwargs)
        losses["Loss/total_loss"] = tf.debugging.check_numerics(losses["Loss/total_loss"], NON_FINITE_MESSAGE)
        return losses

    checked_train_step.checks_finite_loss = True
    model_lib_v2.eager_train_step = checked_train_step


def eval_worker(model_dir: Path, interval: int, timeout: int) -> None:
    """The OD API's continuous evaluation of each new checkpoint; it returns after the last step's."""
    from chestdet.core import compat

    compat.apply()
    import tensorflow as tf
    from object_detection import model_lib_v2

    tf.config.set_soft_device_placement(True)
    model_lib_v2.eval_continuously(
        pipeline_config_path=str(model_dir / pipeline_config.PIPELINE_FILE),
        model_dir=str(model_dir),
        checkpoint_dir=str(model_dir),
        wait_interval=interval,
        timeout=timeout,
    )


def worker_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chestdet.training.train",
                                     description="a training or evaluation child")
    sub = parser.add_subparsers(dest="role", required=True)
    train = sub.add_parser("train")
    train.add_argument("--model-dir", type=Path, required=True)
    train.add_argument("--steps", type=int, required=True)
    train.add_argument("--checkpoint-every", type=int, required=True)
    train.add_argument("--steps-per-iteration", type=int, required=True)
    train.add_argument("--keep-checkpoints", type=int, default=7)
    evaluate = sub.add_parser("eval")
    evaluate.add_argument("--model-dir", type=Path, required=True)
    evaluate.add_argument("--interval", type=int, default=60)
    evaluate.add_argument("--timeout", type=int, default=3600)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # The OD API reports its per-step time and losses at INFO through absl; the supervisor echoes them.
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    if args.role == "train":
        import tensorflow as tf

        plan = StepPlan(latest_step(args.model_dir), args.steps, args.checkpoint_every, args.steps_per_iteration)
        try:
            train_worker(args.model_dir, plan, args.keep_checkpoints)
        except tf.errors.InvalidArgumentError as error:
            if NON_FINITE_MESSAGE not in str(error):
                raise
            logging.getLogger(__name__).error("error: %s", NON_FINITE_MESSAGE)
            return NON_FINITE_EXIT
    else:
        eval_worker(args.model_dir, args.interval, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
