"""chestdet.export.options: the run folder's defaults and the checks, with export_model itself stood in for
(it is tested with real checkpoints in tests/e2e/test_export.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from chestdet.commands import export as command
from chestdet.commands.cli import ExitStatus, run_main
from chestdet.core.errors import ExportError
from chestdet.core.shell import command as typed_command
from chestdet.export import exporter
from chestdet.export.options import ExportOptions, default_config, export, run_folder
from tests.conftest import REPO

PIPELINE = REPO / "chestdet" / "resources" / "pipelines" / "ssd_mobilenet_v2_fpnlite_320x320.config"


def fake_checkpoint(folder: Path, step: int) -> Path:
    """The files of a checkpoint prefix, with placeholder contents, and the state file naming it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"ckpt-{step}.index").write_bytes(b"index")
    (folder / f"ckpt-{step}.data-00000-of-00001").write_bytes(b"data")
    (folder / "checkpoint").write_text(f'model_checkpoint_path: "ckpt-{step}"\n')
    return folder / f"ckpt-{step}"


@pytest.fixture
def calls(monkeypatch) -> list[tuple]:
    """export_model's calls, each (checkpoint, config, output folder, keyword arguments)."""
    made: list[tuple] = []

    def export_model(checkpoint, config, output_dir, **settings):  # noqa: ANN001, ANN202
        made.append((checkpoint, config, output_dir, settings))
        return output_dir

    monkeypatch.setattr(exporter, "export_model", export_model)
    return made


def test_the_run_folder_and_its_config_are_found_from_any_checkpoint(tmp_path: Path):
    run = tmp_path / "nih"
    best = fake_checkpoint(run / "best", 4)
    shutil.copyfile(PIPELINE, run / "pipeline.config")
    assert run_folder(best) == run  # training's best/ copy belongs to the run above it
    assert run_folder(fake_checkpoint(run, 8)) == run
    assert default_config(best, run_folder(best)) == run / "pipeline.config"
    with pytest.raises(ExportError, match="no pipeline.config in its run folder"):
        default_config(fake_checkpoint(tmp_path / "loose", 1), tmp_path / "loose")


def test_the_export_goes_into_the_run_folder_by_default_wherever_the_command_runs(tmp_path: Path, calls,
                                                                                  monkeypatch, caplog):
    run = tmp_path / "study" / "run"
    prefix = fake_checkpoint(run, 10)
    shutil.copyfile(PIPELINE, run / "pipeline.config")
    (tmp_path / "study" / "other").mkdir()
    monkeypatch.chdir(tmp_path / "study" / "other")
    caplog.set_level("INFO", logger="chestdet")
    assert run_main(command.main, ["--checkpoint", "../run", "--no-tflite"]) == ExitStatus.SUCCESS
    [(checkpoint, config, output_dir, settings)] = calls
    assert (checkpoint.resolve(), config.resolve(), output_dir.resolve()) == (
        prefix.resolve(), (run / "pipeline.config").resolve(), (run / "export").resolve())
    assert settings["tflite"] is False
    assert caplog.records[-1].getMessage() == (
        f"detect with it: {typed_command('detect')} --model ../run/export --input IMAGES --output-dir FOLDER")
    assert not (REPO / "workspace" / "exports" / "run").exists()


def test_options_pass_through_and_are_checked(tmp_path: Path, calls):
    run = tmp_path / "run"
    fake_checkpoint(run, 3)
    options = ExportOptions(checkpoint=run, config=PIPELINE, output_dir=tmp_path / "out", tflite=True,
                            label_map=tmp_path / "labels.pbtxt", overwrite=True, tflite_nms="fast",
                            tflite_min_score=0.05, int8=True, calibration_records=("train-*",),
                            calibration_images=7)
    assert export(options) == tmp_path / "out"
    assert calls[0][1:] == (PIPELINE, tmp_path / "out", {
        "tflite": True, "label_map": tmp_path / "labels.pbtxt", "overwrite": True, "tflite_nms": "fast",
        "tflite_min_score": 0.05, "saved_model": True, "int8": True, "calibration_records": ("train-*",),
        "calibration_images": 7})
    with pytest.raises(ExportError, match="--tflite-min-score 1.0: must be at least 0 and below 1"):
        export(ExportOptions(checkpoint=run, config=PIPELINE, tflite_min_score=1.0))
    refused = {"leave nothing to export": {"tflite": False, "saved_model": False},
               "drop --no-tflite": {"tflite": False, "int8": True},
               "go with --int8": {"calibration_images": 5},
               "must be at least 1": {"int8": True, "calibration_images": 0}}
    for message, fields in refused.items():
        with pytest.raises(ExportError, match=message):
            export(ExportOptions(checkpoint=run, config=PIPELINE, **fields))
