"""chestdet.training.run_folder: step plans, a new run, a resume or a continuation, and run.json."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from chestdet.training import pipeline_config, run_folder
from chestdet.training.train import TrainOptions, resolve
from tests.support.run_folders import empty_records, make_configs, save_checkpoint


@pytest.mark.parametrize(
    ("steps", "every", "expected"),
    [
        (5000, None, run_folder.StepPlan(0, 5000, 500, 100)),
        (800, None, run_folder.StepPlan(0, 800, 100, 100)),
        (2400, None, run_folder.StepPlan(0, 2400, 240, 20)),
        (50, None, run_folder.StepPlan(0, 50, 50, 50)),
        (1234, None, run_folder.StepPlan(0, 1300, 100, 100)),  # rounded up so the last step is saved
        (400, 400, run_folder.StepPlan(0, 400, 400, 100)),
        (30, 10, run_folder.StepPlan(0, 30, 10, 10)),
        (25, 10, run_folder.StepPlan(0, 30, 10, 10)),
        (1000, 250, run_folder.StepPlan(0, 1000, 250, 50)),
    ],
)
def test_step_plans_always_save_the_last_step(steps, every, expected):
    plan = run_folder.plan_steps(steps, every)
    assert plan == expected
    # train_loop's own arithmetic: chunks of steps_per_iteration, a save once `every` steps passed.
    saved, last_save = [], 0
    for step in range(plan.steps_per_iteration, plan.num_steps + 1, plan.steps_per_iteration):
        if step - last_save >= plan.checkpoint_every:
            saved.append(step)
            last_save = step
    assert saved[-1] == plan.num_steps


def test_rounding_up_is_said(caplog):
    run_folder.plan_steps(25, 10)
    assert "training to step 30 rather than 25 so that the last step is saved (a checkpoint every 10 steps)" in (
        caplog.text
    )


def test_run_folder_new_same_other(tmp_path: Path):
    run = tmp_path / "run"
    configs = make_configs(batch_size=2)
    assert run_folder.check_run_folder(run, configs) is False
    pipeline_config.save_config(configs, run)
    save_checkpoint(run, 10)
    assert run_folder.check_run_folder(run, configs) is True
    with pytest.raises(run_folder.RunFolderError) as error:
        run_folder.check_run_folder(run, make_configs(batch_size=4))
    assert str(error.value) == (
        f"{run} holds a run with another config; resume it with the same options (or a higher --steps to "
        "continue it), or start a new run with another --name. Differences (saved -> requested):\n"
        "-  batch_size: 2\n+  batch_size: 4"
    )


def test_a_failed_start_without_checkpoint_does_not_block_a_corrected_retry(tmp_path: Path, caplog):
    run = tmp_path / "run"
    pipeline_config.save_config(make_configs(train_records="rec/train-*"), run)
    (run / "train.log").write_text("Did not find any input files matching the glob pattern ['rec/train-*']\n")
    assert run_folder.check_run_folder(run, make_configs(train_records="/abs/rec/train-*")) is False
    assert "saved no checkpoint (a start that failed): starting it anew" in caplog.text


def test_a_finished_run_continues_to_more_steps_keeping_its_warm_up(tmp_path: Path):
    run = tmp_path / "run"
    saved = make_configs(num_steps=100)
    assert pipeline_config.warmup_steps(saved) == 10  # capped at a tenth of the run
    pipeline_config.save_config(saved, run)
    save_checkpoint(run, 100)
    longer = make_configs(num_steps=300)
    continued = run_folder.continuation(run, longer)
    assert continued["train_config"].num_steps == 300
    assert pipeline_config.warmup_steps(continued) == 10
    cosine = continued["train_config"].optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    assert cosine.total_steps == 300
    assert run_folder.check_run_folder(run, continued) is True
    # Fewer steps, or more steps with anything else changed, is another run.
    assert run_folder.continuation(run, make_configs(num_steps=50)) is None
    assert run_folder.continuation(run, make_configs(num_steps=300, batch_size=3)) is None
    with pytest.raises(run_folder.RunFolderError):
        run_folder.check_run_folder(run, make_configs(num_steps=300, batch_size=3))
    with pytest.raises(run_folder.RunFolderError):
        run_folder.check_run_folder(run, make_configs(num_steps=50))


def test_continuing_records_the_new_length(tmp_path: Path):
    run = tmp_path / "run"
    options = TrainOptions(records=empty_records(tmp_path / "records"), model_dir=run, from_scratch=True, steps=100,
                           checkpoint_every=50)
    first = run_folder.prepare_run(resolve(options))
    assert (first.resumed, first.plan.num_steps) == (False, 100)
    save_checkpoint(run, 100)
    run_folder.finish_session(run, "finished", 0.0)
    second = run_folder.prepare_run(resolve(dataclasses.replace(options, steps=200)))
    assert second.resumed and (second.plan.start_step, second.plan.num_steps) == (100, 200)
    record = json.loads((run / "run.json").read_text())
    assert record["num_steps"] == 200
    assert [(s["from_step"], s["to_step"]) for s in record["sessions"]] == [(0, 100), (100, 200)]
    assert [s["status"] for s in record["sessions"]] == ["finished", "running"]
    assert pipeline_config.load_configs(run / "pipeline.config")["train_config"].num_steps == 200


def test_a_folder_that_is_not_a_run_is_not_used(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(run_folder.RunFolderError, match="exists and is not a run folder"):
        run_folder.check_run_folder(tmp_path, make_configs())
