"""Cross-validated training's orchestration, with the train, export and detect steps stood in for."""

from __future__ import annotations

import csv
import dataclasses
import json
import shlex
from pathlib import Path

import pytest

from chestdet.commands import crossval as command
from chestdet.commands.cli import ExitStatus, run_main
from chestdet.core.errors import ChestdetError
from chestdet.core.shell import command as typed_command
from chestdet.evaluation import crossval
from chestdet.evaluation.crossval import CrossvalError, CrossvalOptions, Steps, run_crossval
from chestdet.export.options import ExportOptions
from chestdet.training.train import TrainOptions
from tests.support.crossval_steps import FakeSteps


def test_every_fold_trains_exports_its_best_and_detects_its_test_images(folds_dir, tmp_path):
    fake = FakeSteps()
    runs = tmp_path / "runs"
    chosen = TrainOptions(steps=20, from_scratch=True, overrides={"image_size": (256, 320)})
    state = run_crossval(CrossvalOptions(folds_dir, runs, chosen, detect_args=("--keep-score=0.05",)), fake.steps())
    assert fake.names() == ["train", "export", "detect"] * 2
    for fold in (1, 2):
        train, export, detect = (argument for _, argument in fake.calls[3 * (fold - 1):3 * fold])
        assert train == dataclasses.replace(chosen, records=(folds_dir / f"fold-{fold}").resolve(),
                                            model_dir=runs / f"fold-{fold}" / "run", evaluate=True)
        assert export == ExportOptions(checkpoint=runs / f"fold-{fold}" / "run" / "best.json",
                                       output_dir=runs / f"fold-{fold}" / "export", tflite=False)
        assert detect == (runs / f"fold-{fold}" / "export", (folds_dir / f"fold-{fold}" / "test-images.txt").resolve(),
                          runs / f"fold-{fold}" / "detections", ("--keep-score=0.05",))
        processed = {row["image"] for row in csv.DictReader((runs / f"fold-{fold}" / "detections" / "images.csv")
                                                            .open())}
        split = list(csv.DictReader((runs / f"fold-{fold}" / "split.csv").open()))
        assert {Path(image).name for image in processed} == {row["image"] for row in split if row["split"] == "test"}
    assert (runs / "folds.csv").read_bytes() == (folds_dir / "folds.csv").read_bytes()
    assert state["fold_state"] == {"1": ["trained", "exported", "detected"], "2": ["trained", "exported", "detected"]}
    assert state["train"] == {"steps": 20, "from_scratch": True, "overrides": {"image_size": [256, 320]}}
    assert json.loads((runs / "crossval.json").read_text()) == state
    assert run_crossval(CrossvalOptions(folds_dir, runs, chosen, detect_args=("--keep-score=0.05",)),
                        FakeSteps().steps()) == state  # the same settings again: nothing left to do


def test_a_finished_cross_validation_is_skipped_and_an_interrupted_fold_resumes(folds_dir, tmp_path, caplog):
    runs = tmp_path / "runs"
    options = CrossvalOptions(folds_dir, runs, TrainOptions(steps=20))
    fake = FakeSteps(fail={("detect", 2): KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        run_crossval(options, fake.steps())
    assert fake.names() == ["train", "export", "detect", "train", "export", "detect"]
    again = FakeSteps()
    caplog.set_level("INFO", logger="chestdet")
    run_crossval(options, again.steps())
    assert again.names() == ["detect"]  # fold 1 skipped; fold 2 trained and exported already
    assert "fold 1/2: finished earlier, skipped" in caplog.text and "fold 2/2: detecting" in caplog.text
    third = FakeSteps()
    run_crossval(options, third.steps())
    assert third.calls == []


def test_an_interrupted_training_is_trained_again_and_a_failed_step_names_its_fold(folds_dir, tmp_path):
    runs = tmp_path / "runs"
    options = CrossvalOptions(folds_dir, runs)
    fake = FakeSteps(fail={("train", 1): KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        run_crossval(options, fake.steps())
    failing = FakeSteps(fail={("export", 1): ChestdetError("best.json: names checkpoint best/ckpt-3, missing")})
    with pytest.raises(CrossvalError, match=r"^fold 1: export failed: best.json: names checkpoint best/ckpt-3, "
                                            r"missing; re-run the same command to resume$"):
        run_crossval(options, failing.steps())
    assert failing.names() == ["train", "export"]  # training resumes itself from its checkpoint
    again = FakeSteps()
    run_crossval(options, again.steps())
    assert again.names() == ["export", "detect", "train", "export", "detect"]


def test_other_settings_in_the_same_runs_folder_are_refused(folds_dir, tmp_path):
    runs = tmp_path / "runs"
    run_crossval(CrossvalOptions(folds_dir, runs, TrainOptions(steps=20)), FakeSteps().steps())
    with pytest.raises(CrossvalError, match=r"\(train: steps 20 then, 40 now\); choose another --runs-dir"):
        run_crossval(CrossvalOptions(folds_dir, runs, TrainOptions(steps=40)), FakeSteps().steps())


@pytest.mark.parametrize("option", [{"records": Path("x")}, {"model_dir": Path("x")}, {"name": "x"}])
def test_train_options_cross_validation_sets_itself_are_refused(folds_dir, tmp_path, option):
    with pytest.raises(CrossvalError, match="cross-validation sets it for each fold"):
        run_crossval(CrossvalOptions(folds_dir, tmp_path / "runs", TrainOptions(**option)), FakeSteps().steps())


def test_a_folder_without_folds_is_refused(tmp_path):
    with pytest.raises(CrossvalError, match=r"folds.csv: not found; make the folds with .*generate_tfrecords.py"):
        run_crossval(CrossvalOptions(tmp_path, tmp_path / "runs"), FakeSteps().steps())


def test_folds_without_val_records_are_refused(folds_dir, tmp_path):
    import shutil

    copy = tmp_path / "folds"
    shutil.copytree(folds_dir, copy)
    for shard in (copy / "fold-2").glob("val-*"):
        shard.unlink()
    with pytest.raises(CrossvalError, match=r"fold-2: no val-\* records, and each fold's training is evaluated"):
        run_crossval(CrossvalOptions(copy, tmp_path / "runs"), FakeSteps().steps())


def test_command_reads_unknown_options_as_train_options(folds_dir, tmp_path, monkeypatch):
    fake = FakeSteps()
    monkeypatch.setattr(crossval, "Steps", lambda detect: Steps(detect=fake.detect, train=fake.train,
                                                                 export=fake.export))
    assert command.main(["--folds", str(folds_dir), "--runs-dir", str(tmp_path / "cv"), "--steps", "20",
                         "--set", "image_size=128", "--detect-option=--keep-score=0.05", "--from-scratch"]) == 0
    train = fake.calls[0][1]
    assert (train.steps, train.overrides, train.from_scratch, train.evaluate) == (20, {"image_size": 128}, True, True)
    assert fake.calls[2][1][-1] == ("--keep-score=0.05",)
    assert crossval.fold_dirs(tmp_path / "cv") == [(1, tmp_path / "cv" / "fold-1"), (2, tmp_path / "cv" / "fold-2")]


def test_command_refuses_a_train_option_cross_validation_sets(folds_dir, tmp_path, caplog):
    status = run_main(command.main, ["--folds", str(folds_dir), "--runs-dir", str(tmp_path / "cv"),
                                     "--model-dir", "x"])
    assert status == ExitStatus.ERROR
    assert caplog.records[-1].getMessage() == (
        "error: --model-dir: cross-validation sets it for each fold (use --runs-dir / --name for where the folds' "
        "runs go)")


def test_every_flag_has_help_and_the_script_is_a_thin_wrapper():
    import subprocess

    from tests.conftest import REPO

    assert all(action.help for action in command.build_parser()._actions)
    result = subprocess.run([str(REPO / "scripts" / "crossval.sh"), "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    for flag in ("--folds", "--name", "--runs-dir", "--tflite", "--detect-option"):
        assert flag in result.stdout
    assert "exec \"$python\" -m chestdet.commands.crossval" in (REPO / "scripts" / "crossval.sh").read_text()


def test_ctrl_c_in_the_command_says_that_the_same_command_continues(folds_dir, tmp_path, monkeypatch, caplog):
    def interrupted(options, steps) -> dict:  # noqa: ANN001
        raise KeyboardInterrupt

    monkeypatch.setattr(crossval, "run_crossval", interrupted)
    argv = ["--folds", str(folds_dir), "--runs-dir", str(tmp_path / "cv"), "--steps", "20"]
    assert run_main(command.main, argv) == ExitStatus.INTERRUPTED
    assert caplog.records[-1].getMessage() == (
        "interrupted; finished folds and steps are kept. To continue, run the same command again: "
        f"{typed_command('crossval')} {shlex.join(argv)}")
