"""chestdet.training.train's options and the train command, without training: what is checked before a run
starts, the classes the model is built for, the lines printed at the end and on Ctrl-C."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.train import build_parser, main, options_from_args, parse_override
from chestdet.core.shell import command
from chestdet.training import checkpoints, pipeline_config, run_folder
from chestdet.training import train as training
from tests.conftest import LABEL_MAP
from tests.support.run_folders import empty_records, save_checkpoint


def test_parse_override():
    assert parse_override("image_size=256") == ("image_size", 256)
    assert parse_override("image_size=(256, 320)") == ("image_size", (256, 320))
    assert parse_override("augment=False") == ("augment", False)
    assert parse_override("train_records=/data/my records/train-*") == ("train_records", "/data/my records/train-*")


@pytest.fixture
def records(tmp_path: Path) -> Path:
    return empty_records(tmp_path / "my records")


def error_line(caplog) -> str:
    return caplog.records[-1].getMessage()


def test_cli_without_records(tmp_path: Path, caplog):
    assert run_main(main, ["--records", str(tmp_path / "none"), "--from-scratch"]) == ExitStatus.ERROR
    assert error_line(caplog) == (
        f"error: no training records match {tmp_path / 'none' / 'train-?????-of-?????.tfrecord'} (make them with "
        f"{command('generate_tfrecords')}, or pass --records)"
    )


def test_cli_without_the_pretrained_checkpoint(records: Path, tmp_path: Path, caplog):
    missing = tmp_path / "pretrained" / "ckpt-0"
    status = run_main(main, ["--records", str(records), "--fine-tune-checkpoint", str(missing)])
    assert status == ExitStatus.ERROR
    assert error_line(caplog) == f"error: fine-tune checkpoint not found: {missing}.index; or train with --from-scratch"


def test_cli_default_checkpoint_names_the_fetch_command(records: Path, caplog):
    configured = training.resolve_path(
        pipeline_config.load_configs(training.DEFAULT_CONFIG)["train_config"].fine_tune_checkpoint
    )
    if checkpoints.checkpoint_exists(configured):
        pytest.skip("the zoo checkpoint is present on this machine")
    assert run_main(main, ["--records", str(records)]) == ExitStatus.ERROR
    assert error_line(caplog) == (
        f"error: fine-tune checkpoint not found: {configured}.index (fetch it with: {command('fetch_checkpoint')} "
        "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8); or train with --from-scratch"
    )


def test_cli_unknown_override(records: Path, caplog):
    assert run_main(main, ["--records", str(records), "--from-scratch", "--set", "image_szie=128"]) == 2
    assert error_line(caplog).startswith(
        "error: unknown config override 'image_szie'; did you mean 'image_size'?\nknown overrides: "
    )


def test_cli_steps_through_its_flag(records: Path, caplog):
    assert run_main(main, ["--records", str(records), "--from-scratch", "--set", "num_steps=5"]) == 2
    assert error_line(caplog) == "error: --set num_steps=...: use --steps"


def test_cli_eval_needs_val_records(records: Path, caplog):
    (records / "val-00000-of-00001.tfrecord").unlink()
    assert run_main(main, ["--records", str(records), "--from-scratch", "--eval"]) == 2
    assert error_line(caplog) == (
        f"error: --eval: no validation records match {records / 'val-?????-of-?????.tfrecord'}")


def test_cli_missing_label_map(records: Path, tmp_path: Path, caplog):
    status = run_main(main, ["--records", str(records), "--from-scratch", "--label-map", str(tmp_path / "x.pbtxt")])
    assert status == ExitStatus.ERROR
    assert error_line(caplog) == f"error: label map not found: {tmp_path / 'x.pbtxt'}"


def test_cli_bad_steps(records: Path, caplog):
    assert run_main(main, ["--records", str(records), "--from-scratch", "--steps", "0"]) == 2
    assert error_line(caplog) == "error: --steps must be at least 1, not 0"


def test_cli_unverified_start_checkpoint_needs_the_flag(records: Path, tmp_path: Path, caplog):
    prefix = save_checkpoint(tmp_path / "mine", 0)
    status = run_main(main, ["--records", str(records), "--fine-tune-checkpoint", str(prefix),
                             "--model-dir", str(tmp_path / "run")])
    assert status == ExitStatus.ERROR
    assert error_line(caplog) == (
        f"error: start checkpoint {prefix}: its files match no checkpoint whose digests are pinned; refusing "
        "it (pass --allow-unverified to train from a checkpoint you trust)"
    )
    assert not (tmp_path / "run").exists()


def test_cli_paths_are_relative_to_the_current_directory(records: Path, tmp_path: Path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (elsewhere / "labels.pbtxt").write_text(LABEL_MAP.read_text())
    relative_records = Path("..") / records.name
    args = build_parser().parse_args(["--records", str(relative_records), "--model-dir", "run", "--from-scratch",
                                      "--label-map", "labels.pbtxt", "--eval"])
    spec = training.resolve(options_from_args(args))
    assert spec.model_dir == elsewhere / "run"
    assert spec.train_records == [str(records / "train-?????-of-?????.tfrecord")]
    assert spec.val_records == [str(records / "val-?????-of-?????.tfrecord")]
    assert spec.label_map == elsewhere / "labels.pbtxt"


def test_cli_default_label_map_is_the_repositorys():
    configs = pipeline_config.load_configs(training.DEFAULT_CONFIG)
    assert training.resolve_path(configs["train_input_config"].label_map_path).resolve() == LABEL_MAP


def nine_class_map(path: Path) -> Path:
    path.write_text(LABEL_MAP.read_text() + "item {\n  id: 9\n  name: 'Fibrosis'\n}\n")
    return path


def test_the_as_run_config_predicts_the_classes_of_the_label_map(records: Path, tmp_path: Path):
    run = tmp_path / "run"
    options = training.TrainOptions(records=records, model_dir=run, from_scratch=True, steps=10,
                                    label_map=nine_class_map(tmp_path / "nine.pbtxt"))
    run_folder.prepare_run(training.resolve(options))
    as_run = pipeline_config.load_configs(run / "pipeline.config")
    assert as_run["model"].ssd.num_classes == 9
    assert as_run["train_input_config"].label_map_path == str(tmp_path / "nine.pbtxt")
    # The bundled label map by default: its 8 classes.
    spec = training.resolve(training.TrainOptions(records=records, from_scratch=True, model_dir=tmp_path / "other"))
    assert spec.overrides["num_classes"] == 8 and spec.label_map.resolve() == LABEL_MAP


def test_the_records_folders_label_map_is_the_default(records: Path, tmp_path: Path):
    """generate_tfrecords copies the map it read the boxes with beside the records; training takes it."""
    nine_class_map(records / "label_map.pbtxt")
    spec = training.resolve(training.TrainOptions(records=records, from_scratch=True, model_dir=tmp_path / "run"))
    assert (spec.label_map, spec.overrides["num_classes"]) == (records / "label_map.pbtxt", 9)
    given = training.resolve(training.TrainOptions(records=records, from_scratch=True, model_dir=tmp_path / "run",
                                                   label_map=LABEL_MAP))
    assert (given.label_map, given.overrides["num_classes"]) == (LABEL_MAP, 8)


def test_a_label_map_without_ids_1_to_n_or_against_set_num_classes_is_refused(records: Path, tmp_path: Path,
                                                                               caplog):
    gaps = tmp_path / "gaps.pbtxt"
    gaps.write_text("item { id: 1 name: 'a' }\nitem { id: 3 name: 'c' }\n")
    argv = ["--records", str(records), "--from-scratch", "--model-dir", str(tmp_path / "run")]
    assert run_main(main, [*argv, "--label-map", str(gaps)]) == ExitStatus.ERROR
    assert error_line(caplog) == f"error: {gaps}: ids 1, 3; a label map names ids 1..N, once each"
    nine = nine_class_map(tmp_path / "nine.pbtxt")
    assert run_main(main, [*argv, "--label-map", str(nine), "--set", "num_classes=8"]) == ExitStatus.ERROR
    assert error_line(caplog) == (
        f"error: --set num_classes=8: the label map {nine} has 9 classes, and the model predicts the label map's "
        "classes; drop --set num_classes or pass --label-map")
    assert not (tmp_path / "run").exists()


def test_a_malformed_label_map_is_one_line_with_its_line_and_column(records: Path, tmp_path: Path, caplog):
    broken = tmp_path / "broken.pbtxt"
    broken.write_text("item {\n  id: 1\n  name: 'Atelectasis'\n}\nitem {\n  id: 2\n  name 'Mass'\n}\n")
    status = run_main(main, ["--records", str(records), "--from-scratch", "--label-map", str(broken)])
    assert status == ExitStatus.ERROR
    assert error_line(caplog) == f"error: {broken}:7:8: not a valid label map: '  name 'Mass'': Expected \":\"."
    assert len(caplog.records) == 1


def test_ctrl_c_says_how_far_it_got_and_the_command_that_continues(records: Path, tmp_path: Path, monkeypatch,
                                                                   caplog):
    def interrupted(options: training.TrainOptions) -> training.TrainResult:
        raise training.TrainingInterrupted(tmp_path / "run", 273, 200, 440)

    monkeypatch.setattr(training, "train", interrupted)
    argv = ["--records", str(records), "--model-dir", str(tmp_path / "my run"), "--steps", "440"]
    assert run_main(main, argv) == ExitStatus.INTERRUPTED
    assert error_line(caplog) == (
        "interrupted at step 273 of 440; the last checkpoint is step 200. To continue from it, run the same "
        f"command again: {command('train')} --records '{records}' --model-dir '{tmp_path / 'my run'}' --steps 440")


def test_the_closing_lines_name_the_export_command_as_typed_from_here(tmp_path: Path, monkeypatch):
    from chestdet.commands.train import closing_lines

    run = tmp_path / "runs" / "nih"
    best = save_checkpoint(run, 300)
    monkeypatch.chdir(tmp_path)
    result = training.TrainResult(run, 0, 300, False, best, run / "best" / best.name)
    export = command("export")
    assert shlex.split(export)[0].startswith("/") and Path(shlex.split(export)[0]).name == "export.sh"
    assert closing_lines(result, evaluated=True) == [
        "run folder: runs/nih",
        "last checkpoint: ckpt-1 (step 300 of 300)",
        f"best checkpoint: runs/nih/best/ckpt-1; export it with: {export} --checkpoint runs/nih/best.json "
        "(into runs/nih/export)",
    ]
    without_best = training.TrainResult(run, 0, 300, False, best, None)
    assert closing_lines(without_best, evaluated=False)[-1] == (
        f"export the last checkpoint with: {export} --checkpoint runs/nih (into runs/nih/export)")


def test_a_records_folder_brings_its_own_label_map(records: Path, tmp_path: Path):
    # generate_tfrecords copies the map its records were made with beside them: a 9-class records folder
    # trains a 9-class model without --label-map; --label-map still wins.
    nine = nine_class_map(records / "label_map.pbtxt")
    spec = training.resolve(training.TrainOptions(records=records, from_scratch=True, model_dir=tmp_path / "run"))
    assert spec.label_map == nine and spec.overrides["num_classes"] == 9
    args = build_parser().parse_args(["--records", str(records), "--from-scratch", "--model-dir", str(tmp_path / "r")])
    assert training.resolve(options_from_args(args)).overrides["num_classes"] == 9
    given = training.resolve(training.TrainOptions(records=records, from_scratch=True, model_dir=tmp_path / "run",
                                                   label_map=LABEL_MAP))
    assert given.label_map == LABEL_MAP and given.overrides["num_classes"] == 8
