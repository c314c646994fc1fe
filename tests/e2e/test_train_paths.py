"""train.sh and export.sh as a user runs them from their own folder with relative paths: the printed commands
work as printed, the progress shows without a terminal and with one, a finished run continues, and a run
whose loss becomes NaN stops. Tiny runs: from scratch at 128x128, batch 2, 10 steps."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shlex
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from chestdet.core.shell import command
from chestdet.data.records import shard_glob
from chestdet.training import checkpoints, pipeline_config
from tests.conftest import REPO
from tests.support import training_data

pytestmark = pytest.mark.slow

TINY = ["--from-scratch", "--steps", "10", "--checkpoint-every", "10", "--batch-size", "2",
        "--set", "image_size=128", "--set", "batch_norm_decay=0.9"]


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Path:
    """A folder outside the repository holding the user's records in rec/."""
    folder = tmp_path_factory.mktemp("a user folder")
    boxes = training_data.sample_boxes()
    images = sorted({box.image for box in boxes})[:6]
    training_data.write_records(folder / "rec", [b for b in boxes if b.image in images])
    return folder


def run_script(script: str, args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "scripts" / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def run_in_a_terminal(argv: list[str], cwd: Path, timeout: float = 900) -> tuple[int, str]:
    """Run argv with a pseudo-terminal as its stdout and stderr (as a user's shell has); its exit status and output."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))  # 40 rows, 150 columns
    process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=child, stderr=child)
    os.close(child)
    output, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(main, 1 << 16)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        output += chunk
    os.close(main)
    return process.wait(timeout=60), output.decode("utf-8", "replace")


def test_train_and_export_from_another_folder_with_relative_paths(user_folder: Path):
    result = run_script("train.sh", ["--records", "rec", "--set", "val_records=rec/train-*", "--model-dir", "run",
                                     "--eval", "--eval-interval", "1", *TINY], user_folder)
    assert result.returncode == 0, result.stderr[-3000:]
    run = user_folder / "run"
    as_run = pipeline_config.load_configs(run / "pipeline.config")
    assert list(as_run["train_input_config"].tf_record_input_reader.input_path) == [
        shard_glob(user_folder / "rec", "train")]
    assert list(as_run["eval_input_configs"][0].tf_record_input_reader.input_path) == [
        str(user_folder / "rec/train-*")]
    assert Path(as_run["train_input_config"].label_map_path).is_absolute()
    assert as_run["model"].ssd.num_classes == 8  # the bundled label map's
    # Without a terminal, the progress is logged (at the end at the latest), and the OD API's loss dict is not.
    assert re.search(r"^step 10/10, loss [\d.e+-]+, [\d.]+ steps/s, ETA 00:00", result.stderr, re.M), result.stderr
    assert "'Loss/total_loss'" not in result.stderr
    # The printed paths work from where the user stands, and so does the printed export command.
    assert "run folder: run\n" in result.stderr
    [export_command] = re.findall(r"export it with: (.*) \(into run/export\)$", result.stderr, re.M)
    assert export_command == f"{command('export')} --checkpoint run/best.json"
    # The best checkpoint is never the step-0 one, which holds no model variables.
    best = json.loads((run / "best.json").read_text())
    assert best["step"] == 10
    assert checkpoints.has_model_variables(checkpoints.best_checkpoint(run))
    assert json.loads((run / "run.json").read_text())["start_checkpoint"] is None
    exported = subprocess.run([*shlex.split(export_command), "--no-tflite"], cwd=user_folder, capture_output=True,
                              text=True, timeout=900)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (run / "export" / "saved_model" / "saved_model.pb").is_file()
    assert not (REPO / "run").exists() and not (REPO / "workspace" / "exports" / "run").exists()
    # A higher --steps continues the finished run from its last checkpoint, here with a live progress line.
    status, shown = run_in_a_terminal([str(REPO / "scripts" / "train.sh"), "--records", "rec", "--set",
                                       "val_records=rec/train-*", "--model-dir", "run", *TINY[:1], "--steps", "20",
                                       *TINY[3:]], user_folder)
    assert status == 0, shown[-3000:]
    assert "continuing" in shown and "from step 10 to 20" in shown
    assert re.search(r"\rtrain: +100%\|[^\r\n]*\| 20/20 \[[^\r\n]*step/s, loss=", shown), shown[-3000:]
    assert checkpoints.latest_step(run) == 20
    record = json.loads((run / "run.json").read_text())
    assert [(s["from_step"], s["reached_step"], s["status"]) for s in record["sessions"]] == [
        (0, 10, "finished"), (10, 20, "finished")]


def test_a_non_finite_loss_stops_training_with_a_clear_message(user_folder: Path):
    result = run_script("train.sh", ["--records", "rec", "--model-dir", "nan run", "--set", "learning_rate=1e12",
                                     *TINY], user_folder)
    assert result.returncode == 2, result.stderr[-3000:]
    run = user_folder / "nan run"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training stopped: the training loss became NaN or infinite"), result.stderr[-3000:]
    assert "the last good checkpoint, ckpt-1 (step 0), is kept" in last
    assert checkpoints.latest_step(run) == 0
    assert json.loads((run / "run.json").read_text())["sessions"][-1]["status"] == "failed"
