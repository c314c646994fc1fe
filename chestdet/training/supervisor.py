"""The training session's processes: training, evaluation and TensorBoard as children, watched from here.

The children (`python -m chestdet.training.worker train|eval ...`, `python -m tensorboard.main`) run
apart so that Ctrl-C stops all of them at once: a child busy in a 100-step tf.function would notice
SIGINT only minutes later, SIGTERM ends it now. Their output goes to <run>/train.log, eval.log and
tensorboard.log (and to the debug log with -v); the training child's per-step reports feed the live
progress line instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from chestdet.core.logs import progress_logging
from chestdet.training.checkpoints import MAP50, checkpoint_step, latest_checkpoint, update_best
from chestdet.training.progress import TrainingProgress, parse_step_line
from chestdet.training.run_folder import RunSpec, StepPlan, TrainError
from chestdet.training.worker import NON_FINITE_EXIT

log = logging.getLogger(__name__)

PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the child processes import this same chestdet
STOP_GRACE_SECONDS = 10.0


class ChildFailed(TrainError):
    """A training or evaluation process ended with an error."""


class NonFiniteLoss(ChildFailed):
    """Training stopped because the loss became NaN or infinite."""


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
        sys.executable, "-m", "chestdet.training.worker", "train", "--model-dir", str(model_dir),
        "--steps", str(plan.num_steps), "--checkpoint-every", str(plan.checkpoint_every),
        "--steps-per-iteration", str(plan.steps_per_iteration), "--keep-checkpoints", str(keep_checkpoints),
        "--report-steps",
    ]


def eval_command(model_dir: Path, interval: int, timeout: int) -> list[str]:
    return [
        sys.executable, "-m", "chestdet.training.worker", "eval", "--model-dir", str(model_dir),
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


LineHandler = Callable[[str], bool]  # True when the line was taken (and is not written to the log file)


class Children:
    """The processes a training session started; `stop_all` ends every one (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.processes: dict[str, subprocess.Popen] = {}
        self.pumps: list[threading.Thread] = []

    def start(self, name: str, command: list[str], env: dict[str, str], log_path: Path,
              on_line: LineHandler | None = None) -> None:
        """Start `command`; its output goes to `log_path` (and the debug log), each line first to `on_line`."""
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self.processes[name] = process
        pump = threading.Thread(target=_pump, args=(process.stdout, log_path, name, on_line), daemon=True)
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


def _pump(stream: IO[bytes], log_path: Path, name: str, on_line: LineHandler | None) -> None:
    with open(log_path, "ab") as sink:
        for line in iter(stream.readline, b""):
            text = line.decode("utf-8", "replace").rstrip()
            if on_line is not None and on_line(text):
                continue
            sink.write(line)
            sink.flush()
            log.debug("%s: %s", name, text)
    stream.close()


def last_line(log_path: Path) -> str:
    text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no output"


@contextlib.contextmanager
def stopping_children(children: Children) -> Iterator[None]:
    """SIGTERM becomes KeyboardInterrupt inside; on the way out every child is stopped, and a second
    Ctrl-C meanwhile cannot cut that short and orphan one."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt) if in_main_thread else None
    try:
        yield
    finally:
        if in_main_thread:
            previous_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        children.stop_all()
        if in_main_thread:
            signal.signal(signal.SIGINT, previous_sigint)
            signal.signal(signal.SIGTERM, previous_sigterm)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


# --- one session --------------------------------------------------------------------------------------------


class Supervisor:
    """Starts one session's children for `plan` and waits for them, drawing the progress line."""

    def __init__(self, spec: RunSpec, plan: StepPlan, children: Children) -> None:
        self.spec, self.plan, self.children = spec, plan, children
        self.progress: TrainingProgress | None = None
        self.tensorboard_url: str | None = None
        self._evaluated: int | None = None

    def start_tensorboard(self) -> None:
        spec = self.spec
        port = free_port(spec.tensorboard_port)
        self.children.start("tensorboard", tensorboard_command(spec.model_dir, port, spec.tensorboard_host),
                            child_environment(""), spec.model_dir / "tensorboard.log")
        self.tensorboard_url = f"http://{spec.tensorboard_host}:{port}/"
        log.info("TensorBoard: %s", self.tensorboard_url)

    def train(self) -> None:
        """Train (with evaluation when asked) to the plan's last step; returns once both children are done."""
        spec, plan = self.spec, self.plan
        keep = spec.keep_checkpoints or (0 if spec.evaluate else 7)
        self.progress = TrainingProgress(plan.start_step, plan.num_steps, enabled=spec.progress)
        try:
            with progress_logging():
                self.children.start("train", train_command(spec.model_dir, plan, keep), child_environment(spec.gpus),
                                    spec.model_dir / "train.log", on_line=self._step_line)
                if spec.evaluate:
                    eval_devices = spec.gpus if spec.eval_on_gpu else ""
                    self.children.start("eval", eval_command(spec.model_dir, spec.eval_interval, spec.eval_timeout),
                                        child_environment(eval_devices), spec.model_dir / "eval.log")
                self._wait()
        finally:
            self.progress.close()

    def _step_line(self, text: str) -> bool:
        report = parse_step_line(text)
        if report is not None and self.progress is not None:
            self.progress.report(*report)
        return report is not None

    def _wait(self) -> None:
        """Wait for training, then for the evaluation of its last checkpoint, tracking the best one."""
        train, evaluation = self.children.processes["train"], self.children.processes.get("eval")
        reported: set[str] = set()
        while _still_running(train, self.spec.poll_seconds):
            self._report_failed_helpers(reported)
            self._check_evaluation()
        if train.returncode == NON_FINITE_EXIT:
            raise NonFiniteLoss(non_finite_message(self.spec.model_dir))
        if train.returncode != 0:
            log_path = self.spec.model_dir / "train.log"
            raise ChildFailed(f"training stopped with exit status {train.returncode}: {last_line(log_path)} "
                              f"(see {log_path})")
        if evaluation is not None:
            log.info("waiting for the evaluation of the last checkpoint")
            while _still_running(evaluation, self.spec.poll_seconds):
                self._check_evaluation()
            self._check_evaluation()
            if evaluation.returncode != 0:
                log_path = self.spec.model_dir / "eval.log"
                raise ChildFailed(f"evaluation stopped with exit status {evaluation.returncode}: "
                                  f"{last_line(log_path)} (see {log_path})")

    def _check_evaluation(self) -> None:
        """Keep best/ up to date and show an evaluation once it arrives."""
        if not self.spec.evaluate:
            return
        best = update_best(self.spec.model_dir)
        latest = best["evaluated"][-1] if best and best.get("evaluated") else None
        if latest is not None and latest["step"] != self._evaluated and self.progress is not None:
            self._evaluated = latest["step"]
            self.progress.evaluated(latest["step"], latest[MAP50])

    def _report_failed_helpers(self, reported: set[str]) -> None:
        """Say once when TensorBoard or the evaluation dies while training goes on."""
        for name in ("tensorboard", "eval"):
            process = self.children.processes.get(name)
            if process is None or name in reported or process.poll() in (None, 0):
                continue
            reported.add(name)
            log_path = self.spec.model_dir / f"{name}.log"
            log.error("%s stopped with exit status %d: %s (see %s); training goes on",
                      name, process.returncode, last_line(log_path), log_path)

    def serve_tensorboard(self) -> None:
        """Keep TensorBoard serving the finished run until Ctrl-C (or until it stops by itself)."""
        process = self.children.processes.get("tensorboard")
        if process is None or process.poll() is not None:
            return
        log.info("TensorBoard keeps serving %s at %s; press Ctrl-C to stop it", self.spec.model_dir,
                 self.tensorboard_url)
        try:
            process.wait()
        except KeyboardInterrupt:
            log.info("TensorBoard stopped")


def _still_running(process: subprocess.Popen, seconds: float) -> bool:
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return True
    return False


def non_finite_message(model_dir: Path) -> str:
    from chestdet.core.compat import NON_FINITE_MESSAGE

    latest = latest_checkpoint(model_dir)
    kept = (f"the last good checkpoint, {latest.name} (step {checkpoint_step(latest)}), is kept" if latest
            else "no checkpoint was saved")
    return (f"training stopped: {NON_FINITE_MESSAGE} ({model_dir / 'train.log'}); {kept}; try a lower "
            f"--set learning_rate=... in a new run (--name), or check the records")
