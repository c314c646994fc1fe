"""Cross-validated training's orchestration, with the train, export and detect commands faked."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from chestdet.commands import crossval as command
from chestdet.commands.generate_tfrecords import main as generate
from chestdet.detection.inputs import list_inputs
from chestdet.evaluation import crossval
from chestdet.evaluation.crossval import CrossvalError, CrossvalOptions, Steps, run_crossval
from tests.conftest import SAMPLE_CSV, SAMPLE_DATA_ENTRY, SAMPLE_IMAGES, SAMPLE_UNLABELED


@pytest.fixture(scope="module")
def folds_dir(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("cv") / "fold records"
    assert generate(["--nih-csv", str(SAMPLE_CSV), "--image-dir", str(SAMPLE_IMAGES), "--data-entry",
                     str(SAMPLE_DATA_ENTRY), "--unlabeled-dir", str(SAMPLE_UNLABELED), "--output-dir", str(output),
                     "--folds", "2"]) == 0
    return output


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


class FakeCommands:
    """Records every call; train writes best.json, export export.json, detect images.csv of its list."""

    def __init__(self, fail: dict[tuple[str, int], object] | None = None) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.fail = dict(fail or {})

    def _maybe_fail(self, step: str, argv: list[str]) -> int:
        self.calls.append((step, argv))
        fold = sum(1 for name, _ in self.calls if name == step)
        outcome = self.fail.pop((step, fold), None)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome or 0

    def train(self, argv: list[str]) -> int:
        status = self._maybe_fail("train", argv)
        run = Path(flag(argv, "--model-dir"))
        run.mkdir(parents=True, exist_ok=True)
        (run / "best.json").write_text("{}")
        return status

    def export(self, argv: list[str]) -> int:
        status = self._maybe_fail("export", argv)
        out = Path(flag(argv, "--output-dir"))
        out.mkdir(parents=True)
        (out / "export.json").write_text("{}")
        return status

    def detect(self, argv: list[str]) -> int:
        status = self._maybe_fail("detect", argv)
        out = Path(flag(argv, "--output-dir"))
        out.mkdir(parents=True, exist_ok=True)
        images = list_inputs(flag(argv, "--input"))
        with (out / "images.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "path", "width", "height", "detections"])
            writer.writerows([image.name, str(image.path), 1024, 1024, 0] for image in images)
        return status

    def steps(self) -> Steps:
        return Steps(self.train, self.export, self.detect)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def test_every_fold_trains_exports_its_best_and_detects_its_test_images(folds_dir, tmp_path):
    fake = FakeCommands()
    runs = tmp_path / "runs"
    state = run_crossval(CrossvalOptions(folds_dir, runs, ("--steps", "20", "--from-scratch")), fake.steps())
    assert fake.names() == ["train", "export", "detect"] * 2
    for fold in (1, 2):
        train, export, detect = (argv for _, argv in fake.calls[3 * (fold - 1):3 * fold])
        assert Path(flag(train, "--records")) == (folds_dir / f"fold-{fold}").resolve()
        assert Path(flag(train, "--model-dir")) == runs / f"fold-{fold}" / "run"
        assert "--eval" in train and train[-3:] == ["--steps", "20", "--from-scratch"]
        assert Path(flag(export, "--checkpoint")) == runs / f"fold-{fold}" / "run" / "best.json"
        assert "--no-tflite" in export
        assert "--resume" in detect
        processed = {row["image"] for row in csv.DictReader((runs / f"fold-{fold}" / "detections" / "images.csv")
                                                            .open())}
        split = list(csv.DictReader((runs / f"fold-{fold}" / "split.csv").open()))
        assert {Path(image).name for image in processed} == {row["image"] for row in split if row["split"] == "test"}
    assert (runs / "folds.csv").read_bytes() == (folds_dir / "folds.csv").read_bytes()
    assert state["fold_state"] == {"1": ["trained", "exported", "detected"], "2": ["trained", "exported", "detected"]}
    assert json.loads((runs / "crossval.json").read_text()) == state


def test_a_finished_cross_validation_is_skipped_and_an_interrupted_fold_resumes(folds_dir, tmp_path, caplog):
    runs = tmp_path / "runs"
    options = CrossvalOptions(folds_dir, runs, ("--steps", "20"))
    fake = FakeCommands(fail={("detect", 2): KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        run_crossval(options, fake.steps())
    assert fake.names() == ["train", "export", "detect", "train", "export", "detect"]
    again = FakeCommands()
    caplog.set_level("INFO", logger="chestdet")
    run_crossval(options, again.steps())
    assert again.names() == ["detect"]  # fold 1 skipped; fold 2 trained and exported already
    assert "fold 1/2: finished earlier, skipped" in caplog.text and "fold 2/2: detecting" in caplog.text
    third = FakeCommands()
    run_crossval(options, third.steps())
    assert third.calls == []


def test_an_interrupted_training_is_trained_again_and_a_failed_step_names_its_fold(folds_dir, tmp_path):
    runs = tmp_path / "runs"
    options = CrossvalOptions(folds_dir, runs)
    fake = FakeCommands(fail={("train", 1): 130})
    with pytest.raises(CrossvalError, match=r"fold 1: training failed \(exit status 130\); re-run"):
        run_crossval(options, fake.steps())
    again = FakeCommands()
    run_crossval(options, again.steps())
    assert again.names() == ["train", "export", "detect"] * 2  # training resumes itself from its checkpoint


def test_other_settings_in_the_same_runs_folder_are_refused(folds_dir, tmp_path):
    runs = tmp_path / "runs"
    run_crossval(CrossvalOptions(folds_dir, runs, ("--steps", "20")), FakeCommands().steps())
    with pytest.raises(CrossvalError, match=r"train_args: \['--steps', '20'\] then, \['--steps', '40'\] now"):
        run_crossval(CrossvalOptions(folds_dir, runs, ("--steps", "40")), FakeCommands().steps())


@pytest.mark.parametrize("option", ["--records", "--model-dir=x", "--name"])
def test_train_options_cross_validation_sets_itself_are_refused(folds_dir, tmp_path, option):
    with pytest.raises(CrossvalError, match="cross-validation sets it for each fold"):
        run_crossval(CrossvalOptions(folds_dir, tmp_path / "runs", (option, "x")), FakeCommands().steps())


def test_a_folder_without_folds_is_refused(tmp_path):
    with pytest.raises(CrossvalError, match="folds.csv: not found; make the folds with generate_tfrecords.py"):
        run_crossval(CrossvalOptions(tmp_path, tmp_path / "runs"), FakeCommands().steps())


def test_folds_without_val_records_are_refused(folds_dir, tmp_path):
    import shutil

    copy = tmp_path / "folds"
    shutil.copytree(folds_dir, copy)
    for shard in (copy / "fold-2").glob("val-*"):
        shard.unlink()
    with pytest.raises(CrossvalError, match=r"fold-2: no val-\* records, and each fold's training is evaluated"):
        run_crossval(CrossvalOptions(copy, tmp_path / "runs"), FakeCommands().steps())


def test_command_passes_unknown_options_to_training(folds_dir, tmp_path, monkeypatch):
    fake = FakeCommands()
    monkeypatch.setattr(command, "default_steps", fake.steps)
    assert command.main(["--folds", str(folds_dir), "--runs-dir", str(tmp_path / "cv"), "--steps", "20",
                         "--set", "image_size=128", "--detect-option=--keep-score=0.05"]) == 0
    train = fake.calls[0][1]
    assert train[-4:] == ["--steps", "20", "--set", "image_size=128"]
    assert fake.calls[2][1][-1] == "--keep-score=0.05"
    assert crossval.fold_dirs(tmp_path / "cv") == [(1, tmp_path / "cv" / "fold-1"), (2, tmp_path / "cv" / "fold-2")]


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
