"""Every workaround this project needs to run the OD API on its pinned stack, in one place.

Quiet consoles (`quiet`): TensorFlow 2.15 logs "Unable to register cuDNN/cuFFT/cuBLAS factory" at
ERROR level on every import, GPU or not (tensorflow/tensorflow#62075), so its C++ log level is set
to 3 before TensorFlow is imported; OpenCV's warnings (a truncated PNG's "[ WARN:0@...]") are set to
errors only; and the known third-party warnings below are filtered here and nowhere else, in this
process and (through PYTHONWARNINGS) in the processes it starts. Some output no setting reaches:
the TFLite converter's op summary and the TFLite interpreter's "Created TensorFlow Lite XNNPACK
delegate" (C++ writing straight to file descriptor 2), and what Beam's worker processes log while
importing (GCSFileSystem, crcmod) before their logging is set up. `native_output_filtered` passes
file descriptor 2 through a filter that drops those lines (NATIVE_NOISE) and keeps every other one.
`-v` shows everything again (`quiet(verbose=True)`).

tf_slim's TfExampleDecoder (used by the OD API to parse records) calls
`control_flow_ops.case` and `control_flow_ops.cond`, which TensorFlow 2.15 removed from
`tensorflow.python.ops.control_flow_ops`: the first training step dies with AttributeError.
Upstream: https://github.com/google-research/tf-slim/issues (tf_slim/data/tfexample_decoder.py),
tensorflow/models#11165. Remove once tf-slim calls tf.case / tf.cond itself;
tests/core/test_compat.py fails when that day comes.

model_lib_v2.train_loop goes on training, and saving checkpoints of NaN weights, when the loss becomes
NaN or infinite; and it reports the loss only every 100 steps. `patch_train_step` wraps the
`eager_train_step` it calls by name: the step fails on a non-finite total loss, and can print each
step's number and total loss for the training supervisor's progress line. tests/core/test_train_step.py
fails when the OD API stops on a non-finite loss itself or no longer calls `eager_train_step`.

The two halves of an SSD's `predict` (`ssd_feature_maps`, `ssd_box_predictions`): Grad-CAM of N
boxes runs the box predictor on N copies of one image's feature maps, and `predict` runs only both
halves together. They are SSDMetaArch's private `_feature_extractor` and `_box_predictor`;
tests/core/test_compat.py checks that the two composed still give what `predict` gives.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

_applied = False
_verbose = False

TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
# 3: errors too, which hides the import-time factory lines; a real failure still raises in Python.
QUIET_TF_LOG_LEVEL = "3"
# (category, start of the message, module that warns): what the pinned stack says on every command.
KNOWN_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    # google-api-core (pulled in by tensorflow-datasets and apache-beam) about Python 3.11's end of life.
    (FutureWarning, "You are using a Python version", r"google\.api_core\..*"),
)


OPENCV_LOG_LEVEL = "OPENCV_LOG_LEVEL"
OPENCV_LEVELS = {"SILENT": 0, "FATAL": 1, "ERROR": 2, "WARNING": 3, "INFO": 4, "DEBUG": 5, "VERBOSE": 6}
PYTHON_WARNINGS = "PYTHONWARNINGS"
# KNOWN_WARNINGS as a PYTHONWARNINGS entry, for the child processes (Beam's workers, training's children).
CHILD_WARNING_FILTERS = ("ignore:You are using a Python version:FutureWarning",)
# What native code and Beam's workers write straight to file descriptor 2 (see native_output_filtered).
NATIVE_NOISE = re.compile("|".join((
    r"Created TensorFlow Lite XNNPACK delegate",  # the TFLite interpreter, once a process
    r"^Summary on the non-converted ops:$", r"^-+$",  # the TFLite converter's op summary ...
    r"^ \* (Accepted dialects|Non-Converted Ops|\d+ \w+ ops)", r"^- [\w.]+: +\d+ occurrences",
    r"^\s*\(\w+: \d+(, \w+: \d+)*\)$",  # ... down to its bare "(f32: 12)" lines
    r"Failed to import GCSFileSystem", r"crcmod package not found",  # Beam's workers, importing
    r"^\[ ?WARN:\d+@",  # OpenCV, in a process that started before quiet()
)))


def quiet(verbose: bool = False) -> None:
    """Set TensorFlow's C++ log level (before its import) and OpenCV's, filter KNOWN_WARNINGS here and in child
    processes, and make native_output_filtered filter; verbose undoes all of it.

    An explicit TF_CPP_MIN_LOG_LEVEL or OPENCV_LOG_LEVEL in the environment is left as it is unless verbose.
    """
    global _verbose
    _verbose = verbose
    action = "default" if verbose else "ignore"
    for category, message, module in KNOWN_WARNINGS:
        warnings.filterwarnings(action, message=message, category=category, module=module)
    inherited = [entry for entry in os.environ.get(PYTHON_WARNINGS, "").split(",")
                 if entry and entry not in CHILD_WARNING_FILTERS]
    os.environ[PYTHON_WARNINGS] = ",".join(inherited + ([] if verbose else list(CHILD_WARNING_FILTERS)))
    if verbose:
        os.environ[TF_LOG_LEVEL] = "0"
        os.environ[OPENCV_LOG_LEVEL] = "INFO"
    else:
        os.environ.setdefault(TF_LOG_LEVEL, QUIET_TF_LOG_LEVEL)
        os.environ.setdefault(OPENCV_LOG_LEVEL, "ERROR")
    if "cv2" in sys.modules:  # OpenCV reads the variable once; an imported one is told directly
        level = os.environ[OPENCV_LOG_LEVEL].upper()
        sys.modules["cv2"].setLogLevel(OPENCV_LEVELS.get(level, OPENCV_LEVELS["WARNING"]))


class _StderrFilter:
    """File descriptor 2 through a pipe whose reader drops NATIVE_NOISE lines; one for all threads, while
    any of them is inside native_output_filtered. Processes started meanwhile inherit the pipe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved = -1
        self._relay: threading.Thread | None = None

    def enter(self) -> None:
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
            sys.stderr.flush()
            self._saved = os.dup(2)
            read_end, write_end = os.pipe()
            os.dup2(write_end, 2)
            os.close(write_end)
            self._relay = threading.Thread(target=_relay, args=(read_end, os.dup(self._saved)), daemon=True,
                                           name="chestdet-stderr-filter")
            self._relay.start()

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users:
                return
            sys.stderr.flush()
            os.dup2(self._saved, 2)  # the pipe ends once no process holds it: the relay then stops by itself
            os.close(self._saved)
            self._relay.join(timeout=5)


def _relay(read_end: int, out: int) -> None:
    """Copy the pipe to `out` piece by piece (a piece ends at a newline or a carriage return), without noise."""
    pending = b""
    with open(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(1 << 16):
            *pieces, pending = re.split(rb"(?<=[\r\n])", pending + chunk)
            for piece in pieces:
                _forward(piece, out)
    _forward(pending, out)
    os.close(out)


def _forward(piece: bytes, out: int) -> None:
    text = piece.decode("utf-8", "replace").rstrip("\r\n")
    if not piece or NATIVE_NOISE.search(text) or (piece.endswith(b"\n") and not text.strip()):
        return
    os.write(out, piece)


_STDERR_FILTER = _StderrFilter()


@contextlib.contextmanager
def native_output_filtered() -> Iterator[None]:
    """Inside, lines written to file descriptor 2 (by C++ code and child processes too) that match
    NATIVE_NOISE, and blank ones, are dropped; all others, errors included, still reach the console.
    Does nothing after quiet(verbose=True)."""
    if _verbose:
        yield
        return
    _STDERR_FILTER.enter()
    try:
        yield
    finally:
        _STDERR_FILTER.leave()


@contextlib.contextmanager
def beam_workers_start_from_any_path() -> Iterator[None]:
    """Beam's multi_processing runner starts each worker with `shell=True` and the command string
    f"{sys.executable} -m ...", unquoted: from an interpreter whose path holds a space (a clone in
    "My Projects/") the shell runs a path that does not exist and the pipeline waits forever. While a
    pipeline starts and runs here, sys.executable is the shell-quoted path (used by nothing else then)."""
    import shlex

    executable = sys.executable
    if executable == shlex.quote(executable):
        yield
        return
    sys.executable = shlex.quote(executable)
    try:
        yield
    finally:
        sys.executable = executable


def tf_slim_needs_control_flow_shim() -> bool:
    """True while TF lacks the names tf_slim's decoder uses."""
    from tensorflow.python.ops import control_flow_ops

    return not (hasattr(control_flow_ops, "case") and hasattr(control_flow_ops, "cond"))


def apply() -> None:
    """Install the shim; idempotent. Call before the OD API builds an input pipeline."""
    global _applied
    if _applied:
        return
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_ops

    if not hasattr(control_flow_ops, "case"):
        control_flow_ops.case = tf.case
    if not hasattr(control_flow_ops, "cond"):
        control_flow_ops.cond = tf.cond
    _applied = True


NON_FINITE_MESSAGE = "the training loss became NaN or infinite"
# A training child prints "<STEP_REPORT> <step> <total loss>" on stderr after each step (patch_train_step).
STEP_REPORT = "chestdet-step"


def patch_train_step(model_lib_v2: Any, report_steps: bool = False) -> None:
    """Wrap model_lib_v2.eager_train_step: fail on a NaN or infinite total loss; with `report_steps`,
    print each step's number and total loss (STEP_REPORT) on stderr. Idempotent.

    The failure (tf.errors.InvalidArgumentError naming NON_FINITE_MESSAGE) ends train_loop's chunk
    before its next save, so the last checkpoint on disk stays the last good one. The report is one
    small op per step inside train_loop's tf.function, printed by the first replica only.
    """
    import tensorflow as tf

    original = model_lib_v2.eager_train_step
    if getattr(original, "patched_by_chestdet", False):
        return

    def train_step(*args: Any, **kwargs: Any) -> dict:
        losses = original(*args, **kwargs)
        total = tf.debugging.check_numerics(losses["Loss/total_loss"], NON_FINITE_MESSAGE)
        losses["Loss/total_loss"] = total
        step = kwargs.get("training_step")  # train_loop's global step, which it counts up after this returns
        if report_steps and step is not None and _first_replica():
            tf.print(STEP_REPORT, step + 1, total, output_stream=sys.stderr)
        return losses

    train_step.patched_by_chestdet = True
    model_lib_v2.eager_train_step = train_step


def _first_replica() -> bool:
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    replica = tf.get_static_value(context.replica_id_in_sync_group) if context is not None else 0
    return replica in (0, None)


def ssd_feature_maps(model, images):  # noqa: ANN001, ANN201 - an OD API SSDMetaArch (Keras), tensors
    """The feature maps an SSD's `predict` hands its box predictor, for preprocessed `images`."""
    return model._feature_extractor(images)


def ssd_box_predictions(model, feature_maps):  # noqa: ANN001, ANN201 - an OD API SSDMetaArch (Keras), tensors
    """The SSD's box predictor on `feature_maps`: per output, one tensor per level, which `predict`
    concatenates along the anchors (class_predictions_with_background, box_encodings)."""
    return model._box_predictor(feature_maps)
