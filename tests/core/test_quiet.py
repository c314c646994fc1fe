"""The console at the default verbosity, and with -v: what native code, OpenCV and child processes print.

Each probe runs in a fresh interpreter, because quiet() sets process-wide state (environment, warning
filters, OpenCV's log level, file descriptor 2).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SAMPLE_IMAGES

NOISE_PROBE = r"""
import os, subprocess, sys
from chestdet.core import compat
compat.quiet(verbose="-v" in sys.argv)
print("before", file=sys.stderr, flush=True)
with compat.native_output_filtered():
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n\n  (f32: 12)\nnative error\n")
    subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write("
                    "'Failed to import GCSFileSystem; loading of this filesystem will be skipped.\\n"
                    "WARNING:root:crcmod package not found. This package is required\\nchild error\\n')"])
    print("python line", file=sys.stderr)
    sys.stderr.write("\rbar 1/2\rbar 2/2")
print("\nafter", file=sys.stderr, flush=True)
"""

OPENCV_PROBE = r"""
import sys
from chestdet.core import compat
compat.quiet(verbose="-v" in sys.argv)
import cv2, numpy as np
assert cv2.imdecode(np.fromfile(sys.argv[1], np.uint8), cv2.IMREAD_UNCHANGED) is None
"""

CHILD_PROBE = r"""
import subprocess, sys
from chestdet.core import compat
compat.quiet(verbose="-v" in sys.argv)
subprocess.run([sys.executable, "-c", "import google.api_core"], check=True)
"""

CONVERTER_PROBE = r"""
import sys
from chestdet.core import compat
compat.quiet(verbose="-v" in sys.argv)
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.layers.Conv2D(4, 3, input_shape=(32, 32, 3)), tf.keras.layers.ReLU()])
tf.saved_model.save(model, sys.argv[1])
with compat.native_output_filtered():
    converted = tf.lite.TFLiteConverter.from_saved_model(sys.argv[1]).convert()
    interpreter = tf.lite.Interpreter(model_content=converted)
    interpreter.allocate_tensors()
print("converted", file=sys.stderr)
"""


def probe(code: str, *args: str) -> str:
    """The probe's stderr; the environment as a user's shell has it (no log levels set)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "OPENCV_LOG_LEVEL",
                                                             "PYTHONWARNINGS")}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, env=env, timeout=300,
                            check=True)
    return result.stderr.decode()  # as bytes first: text mode would turn the progress bar's \r into \n


def test_native_and_child_process_noise_is_dropped_and_every_other_line_kept():
    assert probe(NOISE_PROBE) == "before\nnative error\nchild error\npython line\n\rbar 1/2\rbar 2/2\nafter\n"
    loud = probe(NOISE_PROBE, "-v")
    for line in ("Created TensorFlow Lite XNNPACK delegate", "(f32: 12)", "Failed to import GCSFileSystem",
                 "crcmod package not found", "native error", "child error"):
        assert line in loud


def test_opencv_warnings_are_quiet_and_shown_with_v(tmp_path: Path):
    truncated = tmp_path / "cut short.png"
    truncated.write_bytes((SAMPLE_IMAGES / "00000032_037.png").read_bytes()[:3000])
    assert probe(OPENCV_PROBE, str(truncated)) == ""
    assert "PNG input buffer is incomplete" in probe(OPENCV_PROBE, str(truncated), "-v")


def test_child_processes_get_the_same_warning_filters():
    assert "FutureWarning" not in probe(CHILD_PROBE)
    assert "FutureWarning: You are using a Python version" in probe(CHILD_PROBE, "-v")


@pytest.mark.slow
def test_the_tflite_converter_and_interpreter_are_quiet_and_shown_with_v(tmp_path: Path):
    quiet = probe(CONVERTER_PROBE, str(tmp_path / "quiet"))
    assert quiet.splitlines() == ["converted"], quiet
    loud = probe(CONVERTER_PROBE, str(tmp_path / "loud"), "-v")
    for line in ("Summary on the non-converted ops:", "(f32: ", "Created TensorFlow Lite XNNPACK delegate"):
        assert line in loud, loud
