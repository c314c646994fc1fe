"""A short real training through scripts/train.sh's CLI: fine-tune from a checkpoint the test makes,
interrupt it (every child stops), resume it with evaluation, and check what the run folder holds."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.train import main
from chestdet.core.shell import command
from chestdet.training import checkpoints, supervisor
from chestdet.training import train as training
from tests.conftest import REPO
from tests.support import training_data
from tests.support.model_fixtures import OVERFIT_OVERRIDES, OVERFIT_STEPS

pytestmark = pytest.mark.slow

STEPS = 30
EVERY = 10


class RecordingChildren(supervisor.Children):
    """Children that remember themselves, so the test can see every process was stopped."""

    instances: list[supervisor.Children] = []

    def __init__(self) -> None:
        super().__init__()
        RecordingChildren.instances.append(self)


def interrupt_when(condition, timeout: float = 600.0) -> threading.Thread:
    """SIGTERM this process (what `kill` or a closing terminal sends) once `condition()` holds."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.5)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train") / "a folder with spaces"
    boxes = training_data.sample_boxes()
    images = sorted({box.image for box in boxes})
    training_data.write_records(root / "train records", [b for b in boxes if b.image in images[:6]])
    training_data.write_records(root / "val records", [b for b in boxes if b.image in images[6:9]])
    return root


@pytest.fixture(scope="module")
def start_checkpoint(workspace: Path) -> Path:
    """A detection checkpoint of the project's model at 128x128, standing in for the zoo's."""
    from chestdet.training import pipeline_config

    configs = pipeline_config.apply_overrides(pipeline_config.load_configs(training.DEFAULT_CONFIG), image_size=128)
    pipeline_config.save_config(configs, workspace / "start")
    return training_data.make_start_checkpoint(workspace / "start" / "pipeline.config", workspace / "start")


def test_fine_tune_interrupt_resume_and_evaluate(workspace: Path, start_checkpoint: Path, monkeypatch, caplog):
    monkeypatch.setattr(training, "Children", RecordingChildren)
    run = workspace / "run"
    argv = [
        "--model-dir", str(run), "--records", str(workspace / "train records"),
        "--set", f"val_records={workspace / 'val records' / 'train-*'}",
        "--fine-tune-checkpoint", str(start_checkpoint), "--allow-unverified", "--steps", str(STEPS),
        "--checkpoint-every", str(EVERY), "--batch-size", "2", "--set", "image_size=128",
    ]

    # Session 1: stopped by a signal once the step-10 checkpoint exists.
    interrupt_when(lambda: checkpoints.latest_checkpoint(run) is not None and checkpoints.latest_step(run) >= EVERY)
    assert run_main(main, argv) == ExitStatus.INTERRUPTED
    children = RecordingChildren.instances[-1]
    assert children.processes and all(p.poll() is not None for p in children.processes.values())
    record = json.loads((run / "run.json").read_text())
    assert record["sessions"][0]["status"] == "interrupted"
    stopped_at = record["sessions"][0]["reached_step"]
    assert EVERY <= stopped_at < STEPS
    said = re.fullmatch(rf"interrupted at step (\d+) of {STEPS}; the last checkpoint is step {stopped_at}\. To "
                        rf"continue from it, run the same command again: (.*)", caplog.records[-1].getMessage())
    assert said and stopped_at <= int(said.group(1)) < STEPS
    assert said.group(2) == f"{command('train')} {shlex.join(argv)}"

    # The fine-tune path: the step-0 checkpoint holds the start checkpoint's feature extractor.
    assert_same_feature_extractor(start_checkpoint, run / "ckpt-1")
    assert record["start_checkpoint"]["type"] == "detection"
    assert record["start_checkpoint"]["sha256"] == checkpoints.checkpoint_sha256(start_checkpoint)
    assert record["start_checkpoint"]["verification"]["verified"] is False
    assert set(record["start_checkpoint"]["verification"]["files"]) == {
        p.name for p in checkpoints.checkpoint_files(start_checkpoint)}

    # Session 2: the same command (plus evaluation) resumes and finishes.
    assert run_main(main, [*argv, "--eval", "--eval-interval", "1"]) == ExitStatus.SUCCESS
    record = json.loads((run / "run.json").read_text())
    assert [s["status"] for s in record["sessions"]] == ["interrupted", "finished"]
    assert record["sessions"][1]["from_step"] == stopped_at
    assert record["sessions"][1]["reached_step"] == STEPS
    assert checkpoints.latest_step(run) == STEPS

    # TensorBoard events hold the loss and learning-rate scalars.
    scalars = checkpoints.read_scalars(run / "train")
    for tag in ("Loss/total_loss", "Loss/localization_loss", "Loss/classification_loss", "learning_rate"):
        assert tag in scalars, sorted(scalars)
        assert max(scalars[tag]) == STEPS
        assert all(np.isfinite(v) for v in scalars[tag].values())

    # The best checkpoint by val mAP@0.5 is recorded and copied, and matches the evaluation events.
    best = json.loads((run / "best.json").read_text())
    metrics = checkpoints.eval_metrics(run)
    assert STEPS in metrics
    assert best["value"] == max(m[checkpoints.MAP50] for m in metrics.values())
    assert best["value"] == metrics[best["step"]][checkpoints.MAP50]
    prefix = checkpoints.best_checkpoint(run)
    assert prefix.parent == run / "best"
    assert checkpoints.checkpoint_step(prefix) == best["step"]
    assert checkpoints.checkpoint_sha256(prefix) == best["sha256"]

    # The as-run config is the one that trained, with the run's paths filled in.
    from chestdet.training import pipeline_config

    as_run = pipeline_config.load_configs(run / "pipeline.config")
    assert pipeline_config.image_size(as_run) == (128, 128)
    assert as_run["train_config"].batch_size == 2
    assert as_run["train_config"].fine_tune_checkpoint == str(start_checkpoint)
    assert list(as_run["train_input_config"].tf_record_input_reader.input_path) == [
        str(workspace / "train records" / "train-?????-of-?????.tfrecord")
    ]
    assert list(as_run["eval_input_configs"][0].tf_record_input_reader.input_path) == [
        str(workspace / "val records" / "train-*")
    ]

    # Running it once more finds the run finished and starts nothing.
    assert run_main(main, argv) == ExitStatus.SUCCESS
    assert not RecordingChildren.instances[-1].processes
    assert checkpoints.latest_step(run) == STEPS


def test_another_config_in_the_same_run_folder_is_refused(overfit_run: Path, caplog):
    before = {path: path.stat().st_mtime_ns for path in overfit_run.rglob("*")}
    same = [arg for name, value in OVERFIT_OVERRIDES.items() for arg in ("--set", f"{name}={value}")]
    argv = ["--model-dir", str(overfit_run), "--records", str(overfit_run.parent / "records"), "--from-scratch",
            "--steps", str(OVERFIT_STEPS), "--checkpoint-every", str(OVERFIT_STEPS), "--batch-size", "2", *same]
    assert run_main(main, argv) == ExitStatus.ERROR
    assert f"error: {overfit_run} holds a run with another config" in caplog.text
    assert "-  batch_size: 4\n+  batch_size: 2" in caplog.text
    assert {path: path.stat().st_mtime_ns for path in overfit_run.rglob("*")} == before


def assert_same_feature_extractor(start: Path, trained: Path) -> None:
    import tensorflow as tf

    names = [n for n, _ in tf.train.list_variables(str(start)) if n.startswith("model/_feature_extractor/")]
    assert len(names) > 50
    trained_names = {n for n, _ in tf.train.list_variables(str(trained))}
    assert set(names) <= trained_names
    for name in names:
        expected, actual = tf.train.load_variable(str(start), name), tf.train.load_variable(str(trained), name)
        np.testing.assert_array_equal(expected, actual)


def test_train_sh_forwards_to_the_cli():
    import subprocess

    result = subprocess.run([str(REPO / "scripts" / "train.sh"), "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0
    assert "usage: train.sh" in result.stdout
    assert "--from-scratch" in result.stdout
