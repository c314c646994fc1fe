"""chestdet.train without training: step plans, run folders, the best checkpoint, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chestdet import checkpoints, pipeline_config
from chestdet import train as training
from chestdet.cli import ExitStatus, run_main
from chestdet.commands.train import main, parse_override
from tests.conftest import LABEL_MAP


@pytest.mark.parametrize(
    ("steps", "every", "expected"),
    [
        (5000, None, training.StepPlan(0, 5000, 500, 100)),
        (800, None, training.StepPlan(0, 800, 100, 100)),
        (2400, None, training.StepPlan(0, 2400, 240, 20)),
        (50, None, training.StepPlan(0, 50, 50, 50)),
        (1234, None, training.StepPlan(0, 1300, 100, 100)),  # rounded up so the last step is saved
        (400, 400, training.StepPlan(0, 400, 400, 100)),
        (30, 10, training.StepPlan(0, 30, 10, 10)),
        (25, 10, training.StepPlan(0, 30, 10, 10)),
        (1000, 250, training.StepPlan(0, 1000, 250, 50)),
    ],
)
def test_step_plans_always_save_the_last_step(steps, every, expected):
    plan = training.plan_steps(steps, every)
    assert plan == expected
    # train_loop's own arithmetic: chunks of steps_per_iteration, a save once `every` steps passed.
    saved, last_save = [], 0
    for step in range(plan.steps_per_iteration, plan.num_steps + 1, plan.steps_per_iteration):
        if step - last_save >= plan.checkpoint_every:
            saved.append(step)
            last_save = step
    assert saved[-1] == plan.num_steps


def test_rounding_up_is_said(caplog):
    training.plan_steps(25, 10)
    assert "training to step 30 rather than 25 so that the last step is saved (a checkpoint every 10 steps)" in (
        caplog.text
    )


def make_configs(**overrides) -> dict:
    base = pipeline_config.load_configs(training.DEFAULT_CONFIG)
    return pipeline_config.apply_overrides(base, **overrides)


def test_run_folder_new_same_other(tmp_path: Path):
    run = tmp_path / "run"
    configs = make_configs(batch_size=2)
    assert training.check_run_folder(run, configs) is False
    pipeline_config.save_config(configs, run)
    assert training.check_run_folder(run, configs) is True
    with pytest.raises(training.RunFolderError) as error:
        training.check_run_folder(run, make_configs(batch_size=4))
    assert str(error.value) == (
        f"{run} holds a run with another config; resume it with the same options, or start a new run with "
        "another --name. Differences (saved -> requested):\n-  batch_size: 2\n+  batch_size: 4"
    )


def test_a_folder_that_is_not_a_run_is_not_used(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(training.RunFolderError, match="exists and is not a run folder"):
        training.check_run_folder(tmp_path, make_configs())


def save_checkpoint(model_dir: Path, step: int, manager_holder: dict) -> Path:
    import tensorflow as tf

    if "manager" not in manager_holder:
        manager_holder["step"] = tf.Variable(0, dtype=tf.int64)
        manager_holder["weights"] = tf.Variable([0.0, 0.0])
        model = tf.train.Checkpoint(w=manager_holder["weights"])
        checkpoint = tf.train.Checkpoint(step=manager_holder["step"], model=model)
        manager_holder["manager"] = tf.train.CheckpointManager(checkpoint, str(model_dir), max_to_keep=2)
    manager_holder["step"].assign(step)
    manager_holder["weights"].assign([float(step), 1.0])
    return Path(manager_holder["manager"].save())


def write_eval(model_dir: Path, values: dict[int, float]) -> None:
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(model_dir / "eval"))
    with writer.as_default():
        for step, value in values.items():
            tf.summary.scalar(checkpoints.MAP50, value, step=step)
            tf.summary.scalar("DetectionBoxes_Precision/mAP", value / 2, step=step)
    writer.flush()
    writer.close()


def test_best_checkpoint_follows_val_map50(tmp_path: Path):
    import tensorflow as tf

    run = tmp_path / "run with spaces"
    holder: dict = {}
    assert checkpoints.update_best(run) is None
    for step in (100, 200):
        save_checkpoint(run, step, holder)
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
    save_checkpoint(run, 300, holder)
    write_eval(run, {300: 0.25})
    assert not checkpoints.checkpoint_exists(run / "ckpt-1")
    assert checkpoints.update_best(run)["step"] == 100
    assert checkpoints.checkpoint_exists(run / "best" / "ckpt-1")

    save_checkpoint(run, 400, holder)
    write_eval(run, {400: 0.50})
    best = checkpoints.update_best(run)
    assert (best["step"], best["checkpoint"]) == (400, "best/ckpt-4")
    assert not checkpoints.checkpoint_exists(run / "best" / "ckpt-1")
    assert [e["step"] for e in best["evaluated"]] == [100, 200, 300, 400]


def test_parse_override():
    assert parse_override("image_size=256") == ("image_size", 256)
    assert parse_override("image_size=(256, 320)") == ("image_size", (256, 320))
    assert parse_override("augment=False") == ("augment", False)
    assert parse_override("train_records=/data/my records/train-*") == ("train_records", "/data/my records/train-*")


@pytest.fixture
def records(tmp_path: Path) -> Path:
    folder = tmp_path / "my records"
    folder.mkdir()
    (folder / "train-00000-of-00001").write_bytes(b"")
    (folder / "val-00000-of-00001").write_bytes(b"")
    return folder


def error_line(caplog) -> str:
    return caplog.records[-1].getMessage()


def test_cli_without_records(tmp_path: Path, caplog):
    assert run_main(main, ["--records", str(tmp_path / "none"), "--from-scratch"]) == ExitStatus.ERROR
    assert error_line(caplog) == (
        f"error: no training records match {tmp_path / 'none' / 'train-*'} (make them with "
        "scripts/generate_tfrecords.py, or pass --records)"
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
        f"error: fine-tune checkpoint not found: {configured}.index (fetch it with: python "
        "scripts/fetch_checkpoint.py ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8); or train with --from-scratch"
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
    (records / "val-00000-of-00001").unlink()
    assert run_main(main, ["--records", str(records), "--from-scratch", "--eval"]) == 2
    assert error_line(caplog) == f"error: --eval: no validation records match {records / 'val-*'}"


def test_cli_missing_label_map(records: Path, tmp_path: Path, caplog):
    status = run_main(main, ["--records", str(records), "--from-scratch", "--label-map", str(tmp_path / "x.pbtxt")])
    assert status == ExitStatus.ERROR
    assert error_line(caplog) == f"error: label map not found: {tmp_path / 'x.pbtxt'}"


def test_cli_bad_steps(records: Path, caplog):
    assert run_main(main, ["--records", str(records), "--from-scratch", "--steps", "0"]) == 2
    assert error_line(caplog) == "error: --steps must be at least 1, not 0"


def test_cli_default_label_map_is_the_repositorys():
    configs = pipeline_config.load_configs(training.DEFAULT_CONFIG)
    assert training.resolve_path(configs["train_input_config"].label_map_path) == LABEL_MAP


def test_tensorboard_serves_the_run_folder_and_stops(tmp_path: Path):
    import time
    import urllib.request

    run = tmp_path / "run with spaces"
    run.mkdir()
    port = training.free_port(0)
    children = training.Children()
    children.start("tensorboard", training.tensorboard_command(run, port, "localhost"),
                   training.child_environment(""), run / "tensorboard.log")
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/data/logdir", timeout=5) as response:
                    body = response.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline or children.processes["tensorboard"].poll() is not None:
                    raise
                time.sleep(1)
        assert str(run) in body
    finally:
        children.stop_all()
    assert children.processes["tensorboard"].poll() is not None


def test_available_start_checkpoint(tmp_path: Path):
    configs = make_configs(fine_tune_checkpoint=str(tmp_path / "zoo" / "ckpt-0"))
    config = pipeline_config.save_config(configs, tmp_path)
    assert training.available_start_checkpoint(config) is None
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "ckpt-0.index").write_bytes(b"")
    assert training.available_start_checkpoint(config) == tmp_path / "zoo" / "ckpt-0"
    scratch = pipeline_config.save_config(make_configs(fine_tune_checkpoint=None), tmp_path / "scratch")
    assert training.available_start_checkpoint(scratch) is None
