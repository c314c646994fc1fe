"""chestdet.training.train without training: step plans, run folders, the best checkpoint, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chestdet.commands.cli import ExitStatus, run_main
from chestdet.commands.train import main, parse_override
from chestdet.training import checkpoints, pipeline_config
from chestdet.training import train as training
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
    save_checkpoint(run, 10, {})
    assert training.check_run_folder(run, configs) is True
    with pytest.raises(training.RunFolderError) as error:
        training.check_run_folder(run, make_configs(batch_size=4))
    assert str(error.value) == (
        f"{run} holds a run with another config; resume it with the same options (or a higher --steps to "
        "continue it), or start a new run with another --name. Differences (saved -> requested):\n"
        "-  batch_size: 2\n+  batch_size: 4"
    )


def test_a_failed_start_without_checkpoint_does_not_block_a_corrected_retry(tmp_path: Path, caplog):
    run = tmp_path / "run"
    pipeline_config.save_config(make_configs(train_records="rec/train-*"), run)
    (run / "train.log").write_text("Did not find any input files matching the glob pattern ['rec/train-*']\n")
    assert training.check_run_folder(run, make_configs(train_records="/abs/rec/train-*")) is False
    assert "saved no checkpoint (a start that failed): starting it anew" in caplog.text


def test_a_finished_run_continues_to_more_steps_keeping_its_warm_up(tmp_path: Path):
    run = tmp_path / "run"
    saved = make_configs(num_steps=100)
    assert pipeline_config.warmup_steps(saved) == 10  # capped at a tenth of the run
    pipeline_config.save_config(saved, run)
    save_checkpoint(run, 100, {})
    longer = make_configs(num_steps=300)
    continued = training.continuation(run, longer)
    assert continued["train_config"].num_steps == 300
    assert pipeline_config.warmup_steps(continued) == 10
    cosine = continued["train_config"].optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    assert cosine.total_steps == 300
    assert training.check_run_folder(run, continued) is True
    # Fewer steps, or more steps with anything else changed, is another run.
    assert training.continuation(run, make_configs(num_steps=50)) is None
    assert training.continuation(run, make_configs(num_steps=300, batch_size=3)) is None
    with pytest.raises(training.RunFolderError):
        training.check_run_folder(run, make_configs(num_steps=300, batch_size=3))
    with pytest.raises(training.RunFolderError):
        training.check_run_folder(run, make_configs(num_steps=50))


def test_continuing_records_the_new_length(tmp_path: Path, records: Path):
    run = tmp_path / "run"
    options = training.TrainOptions(
        config=training.DEFAULT_CONFIG, model_dir=run, train_records=[str(records / "train-*")], val_records=None,
        label_map=LABEL_MAP, fine_tune_checkpoint=None, num_steps=100, checkpoint_every=50)
    first = training.prepare_run(options)
    assert (first.resumed, first.plan.num_steps) == (False, 100)
    holder: dict = {}
    save_checkpoint(run, 100, holder)
    training.finish_session(run, "finished", 0.0)
    options.num_steps = 200
    second = training.prepare_run(options)
    assert second.resumed and (second.plan.start_step, second.plan.num_steps) == (100, 200)
    record = json.loads((run / "run.json").read_text())
    assert record["num_steps"] == 200
    assert [(s["from_step"], s["to_step"]) for s in record["sessions"]] == [(0, 100), (100, 200)]
    assert pipeline_config.load_configs(run / "pipeline.config")["train_config"].num_steps == 200


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
    holder: dict = {}
    for step in (10, 20):
        save_checkpoint(run, step, holder)
    write_eval(run, {10: 0.1, 20: 0.05})
    best = checkpoints.update_best(run)
    assert best["step"] == 10
    assert checkpoints.has_model_variables(checkpoints.best_checkpoint(run))


def test_run_folder_hint_names_the_export_command(tmp_path: Path):
    run = tmp_path / "run"
    pipeline_config.save_config(make_configs(), run)
    save_checkpoint(run, 10, {})
    assert checkpoints.run_folder_hint(run) == (
        f"{run} is a training run folder, not an export: export it first with scripts/export.sh --checkpoint "
        f"{run}, then pass the export folder (workspace/exports/run by default) to --model"
    )
    (run / "best.json").write_text("{}")
    assert f"--checkpoint {run / 'best.json'}," in checkpoints.run_folder_hint(run / "best")
    assert checkpoints.run_folder_hint(tmp_path) is None


def test_detect_given_a_run_folder_says_how_to_export_it(tmp_path: Path, caplog):
    from chestdet.commands import detect

    run = tmp_path / "run"
    pipeline_config.save_config(make_configs(), run)
    save_checkpoint(run, 10, {})
    status = run_main(detect.main, ["--model", str(run), "--input", str(tmp_path), "--output-dir", str(tmp_path / "o")])
    assert status == ExitStatus.ERROR
    assert error_line(caplog) == f"error: --model {checkpoints.run_folder_hint(run)}"
    assert "scripts/export.sh --checkpoint" in error_line(caplog)


def test_a_non_finite_loss_fails_the_step():
    import types

    import numpy as np
    import tensorflow as tf

    fake = types.SimpleNamespace(eager_train_step=lambda loss: {"Loss/total_loss": loss})
    training.stop_on_non_finite_loss(fake)
    training.stop_on_non_finite_loss(fake)  # wrapping twice checks once
    step = tf.function(lambda loss: fake.eager_train_step(loss)["Loss/total_loss"])
    assert float(step(tf.constant(1.5))) == 1.5
    for bad in (np.nan, np.inf):
        with pytest.raises(tf.errors.InvalidArgumentError, match=training.NON_FINITE_MESSAGE):
            step(tf.constant(bad, dtype=tf.float32))


def test_the_non_finite_message_names_the_last_good_checkpoint(tmp_path: Path):
    save_checkpoint(tmp_path, 200, {})
    assert training.non_finite_message(tmp_path) == (
        f"training stopped: the training loss became NaN or infinite ({tmp_path / 'train.log'}); the last good "
        "checkpoint, ckpt-1 (step 200), is kept; try a lower --set learning_rate=... in a new run (--name), "
        "or check the records"
    )


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


def test_cli_label_map_with_other_classes_is_refused_at_start(records: Path, tmp_path: Path, caplog):
    nine = tmp_path / "nine.pbtxt"
    nine.write_text("".join(f"item {{ id: {i} name: 'c{i}' }}\n" for i in range(1, 10)))
    status = run_main(main, ["--records", str(records), "--from-scratch", "--label-map", str(nine),
                             "--model-dir", str(tmp_path / "run")])
    assert status == ExitStatus.ERROR
    assert error_line(caplog) == (
        f"error: {nine}: the label map has 9 classes (ids 1..9) but the config's num_classes is 8; use a label "
        "map with ids 1..8, or --set num_classes=9"
    )
    assert not (tmp_path / "run").exists()


def test_cli_unverified_start_checkpoint_needs_the_flag(records: Path, tmp_path: Path, caplog):
    prefix = save_checkpoint(tmp_path / "mine", 0, {})
    status = run_main(main, ["--records", str(records), "--fine-tune-checkpoint", str(prefix),
                             "--model-dir", str(tmp_path / "run")])
    assert status == ExitStatus.ERROR
    assert error_line(caplog) == (
        f"error: start checkpoint {prefix}: its files match no checkpoint whose digests are pinned; refusing "
        "it (pass --allow-unverified to train from a checkpoint you trust)"
    )
    assert not (tmp_path / "run").exists()


def test_cli_paths_are_relative_to_the_current_directory(records: Path, tmp_path: Path, monkeypatch):
    from chestdet.commands.train import build_parser, options_from_args

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (elsewhere / "labels.pbtxt").write_text(LABEL_MAP.read_text())
    relative_records = Path("..") / records.name
    args = build_parser().parse_args(["--records", str(relative_records), "--model-dir", "run", "--from-scratch",
                                      "--label-map", "labels.pbtxt", "--eval"])
    options = options_from_args(args)
    assert options.model_dir == elsewhere / "run"
    assert options.train_records == [str(records / "train-*")]
    assert options.val_records == [str(records / "val-*")]
    assert options.label_map == elsewhere / "labels.pbtxt"


def test_cli_default_label_map_is_the_repositorys():
    configs = pipeline_config.load_configs(training.DEFAULT_CONFIG)
    assert training.resolve_path(configs["train_input_config"].label_map_path).resolve() == LABEL_MAP


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

