"""chestdet.training.checkpoints: the best checkpoint by val mAP@0.5, and a run folder told apart from an export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.training import checkpoints, pipeline_config
from tests.support.run_folders import CheckpointWriter, make_configs, save_checkpoint, write_eval


def test_best_checkpoint_follows_val_map50(tmp_path: Path):
    import tensorflow as tf

    run = tmp_path / "run with spaces"
    writer = CheckpointWriter(run)
    assert checkpoints.update_best(run) is None
    for step in (100, 200):
        writer.save(step)
    write_eval(run, {100: 0.30, 200: 0.20})
    best = checkpoints.update_best(run)
    assert (best["step"], best["value"], best["checkpoint"]) == (100, pytest.approx(0.30), "best/ckpt-1")
    prefix = checkpoints.best_checkpoint(run)
    assert prefix == run / "best" / "ckpt-1"
    assert tf.train.load_variable(str(prefix), "model/w/.ATTRIBUTES/VARIABLE_VALUE").tolist() == [100.0, 1.0]
    assert tf.train.latest_checkpoint(str(run / "best")) == str(prefix)
    assert best["metrics"]["DetectionBoxes_Precision/mAP"] == pytest.approx(0.15)
    assert json.loads((run / "best.json").read_text())["sha256"] == checkpoints.checkpoint_sha256(prefix)

    # ckpt-1 leaves the manager's window; the copy in best/ stays the best until beaten.
    writer.save(300)
    write_eval(run, {300: 0.25})
    assert not checkpoints.checkpoint_exists(run / "ckpt-1")
    assert checkpoints.update_best(run)["step"] == 100
    assert checkpoints.checkpoint_exists(run / "best" / "ckpt-1")

    writer.save(400)
    write_eval(run, {400: 0.50})
    best = checkpoints.update_best(run)
    assert (best["step"], best["checkpoint"]) == (400, "best/ckpt-4")
    assert not checkpoints.checkpoint_exists(run / "best" / "ckpt-1")
    assert [e["step"] for e in best["evaluated"]] == [100, 200, 300, 400]


def save_bookkeeping_checkpoint(model_dir: Path, step: int) -> Path:
    """What the OD API saves as ckpt-1 of a from-scratch run: the step, no model variables."""
    import tensorflow as tf

    checkpoint = tf.train.Checkpoint(step=tf.Variable(step, dtype=tf.int64))
    return Path(tf.train.CheckpointManager(checkpoint, str(model_dir), max_to_keep=None).save())


def test_a_checkpoint_without_model_variables_is_never_the_best(tmp_path: Path):
    run = tmp_path / "run"
    empty = save_bookkeeping_checkpoint(run, 0)
    assert not checkpoints.has_model_variables(empty)
    write_eval(run, {0: 0.9})
    assert checkpoints.update_best(run) is None
    assert not (run / "best.json").exists()
    # A stale best.json naming such a checkpoint is replaced by the first usable one.
    checkpoints.copy_checkpoint(empty, run / "best")
    (run / "best.json").write_text(json.dumps({"value": 0.9, "step": 0, "checkpoint": "best/ckpt-1"}))
    writer = CheckpointWriter(run)
    for step in (10, 20):
        writer.save(step)
    write_eval(run, {10: 0.1, 20: 0.05})
    best = checkpoints.update_best(run)
    assert best["step"] == 10
    assert checkpoints.has_model_variables(checkpoints.best_checkpoint(run))


def test_run_folder_hint_names_the_export_command_as_typed_from_here(tmp_path: Path, monkeypatch):
    from chestdet.core.shell import command

    run = tmp_path / "study" / "run"
    pipeline_config.save_config(make_configs(), run)
    save_checkpoint(run, 10)
    monkeypatch.chdir(tmp_path / "study")
    assert checkpoints.run_folder_hint(run) == (
        f"{run} is a training run folder, not an export: export it first with {command('export')} --checkpoint "
        "run, then pass the export folder (run/export by default) to --model"
    )
    (run / "best.json").write_text("{}")
    assert "--checkpoint run/best.json," in checkpoints.run_folder_hint(run / "best")
    assert checkpoints.run_folder_hint(tmp_path) is None
    (run / "export").mkdir()
    (run / "export" / "export.json").write_text("{}")
    assert checkpoints.run_folder_hint(run) == (
        f"{run} is a training run folder, not an export; its export is run/export: pass that")


def test_detect_given_a_run_folder_says_how_to_export_it(tmp_path: Path, caplog):
    from chestdet.commands import detect

    run = tmp_path / "run"
    pipeline_config.save_config(make_configs(), run)
    save_checkpoint(run, 10)
    status = run_main(detect.main, ["--model", str(run), "--input", str(tmp_path), "--output-dir", str(tmp_path / "o")])
    assert status == ExitStatus.ERROR
    assert error_line(caplog) == f"error: --model {checkpoints.run_folder_hint(run)}"
    assert re.search(r"export\.sh'? --checkpoint", error_line(caplog))  # the script's path is quoted if it must be


def error_line(caplog) -> str:  # noqa: ANN001
    return caplog.records[-1].getMessage()
