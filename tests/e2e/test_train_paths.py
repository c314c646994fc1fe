"""train.sh and export.sh as a user runs them from their own folder with relative paths, continuing a
finished run, and a run whose loss becomes NaN. Tiny runs: from scratch at 128x128, batch 2, 10 steps."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

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


def test_train_and_export_from_another_folder_with_relative_paths(user_folder: Path):
    result = run_script("train.sh", ["--records", "rec", "--set", "val_records=rec/train-*", "--model-dir", "run",
                                     "--eval", "--eval-interval", "1", *TINY], user_folder)
    assert result.returncode == 0, result.stderr[-3000:]
    run = user_folder / "run"
    as_run = pipeline_config.load_configs(run / "pipeline.config")
    assert list(as_run["train_input_config"].tf_record_input_reader.input_path) == [str(user_folder / "rec/train-*")]
    assert list(as_run["eval_input_configs"][0].tf_record_input_reader.input_path) == [
        str(user_folder / "rec/train-*")]
    assert Path(as_run["train_input_config"].label_map_path).is_absolute()
    # The printed paths work from where the user stands.
    assert "run folder: run\n" in result.stderr
    assert "scripts/export.sh --checkpoint run/best.json" in result.stderr
    # The best checkpoint is never the step-0 one, which holds no model variables.
    best = json.loads((run / "best.json").read_text())
    assert best["step"] == 10
    assert checkpoints.has_model_variables(checkpoints.best_checkpoint(run))
    assert json.loads((run / "run.json").read_text())["start_checkpoint"] is None
    # The export command train.sh printed works, relative paths and all.
    exported = run_script("export.sh", ["--checkpoint", "run/best.json", "--output-dir", "exp", "--no-tflite"],
                          user_folder)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (user_folder / "exp" / "saved_model" / "saved_model.pb").is_file()
    assert not (REPO / "run").exists() and not (REPO / "exp").exists()
    # A higher --steps continues the finished run from its last checkpoint.
    continued = run_script("train.sh", ["--records", "rec", "--set", "val_records=rec/train-*", "--model-dir", "run",
                                        *TINY[:1], "--steps", "20", *TINY[3:]], user_folder)
    assert continued.returncode == 0, continued.stderr[-3000:]
    assert "continuing" in continued.stderr and "from step 10 to 20" in continued.stderr
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
