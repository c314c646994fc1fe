"""chestdet.training.supervisor: the children's output, their failures, and TensorBoard.

The training child is stood in for by a small Python script that prints what the real one prints
(step reports, a last line), so these tests start no TensorFlow (except TensorBoard's, marked slow).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from chestdet.core.compat import STEP_REPORT
from chestdet.training import supervisor
from chestdet.training.run_folder import RunSpec, StepPlan
from chestdet.training.worker import NON_FINITE_EXIT
from tests.conftest import LABEL_MAP
from tests.support.run_folders import save_checkpoint


def fake_training(steps: int, status: int, last: str = "done") -> list[str]:
    """A child that reports `steps` steps with a falling loss, prints `last` and exits with `status`."""
    script = (f"import sys\nfor step in range(1, {steps + 1}):\n    print('{STEP_REPORT}', step, 1.0 / step, "
              f"file=sys.stderr, flush=True)\nprint({last!r})\nsys.exit({status})\n")
    return [sys.executable, "-c", script]


def spec_for(run: Path) -> RunSpec:
    return RunSpec(config=run / "pipeline.config", model_dir=run, train_records=[], val_records=None,
                   label_map=LABEL_MAP, fine_tune_checkpoint=None, num_steps=5, poll_seconds=0.1, progress=False)


def supervise(run: Path, command: list[str], monkeypatch) -> supervisor.Supervisor:  # noqa: ANN001
    monkeypatch.setattr(supervisor, "train_command", lambda *args: command)
    run.mkdir(parents=True, exist_ok=True)
    children = supervisor.Children()
    watched = supervisor.Supervisor(spec_for(run), StepPlan(0, 5, 5, 5), children)
    with supervisor.stopping_children(children):
        watched.train()
    return watched


def test_step_reports_feed_the_progress_line_and_the_rest_goes_to_the_log(tmp_path: Path, monkeypatch):
    run = tmp_path / "run"
    watched = supervise(run, fake_training(5, 0, last="Step 5 per-step time 0.1s"), monkeypatch)
    assert (watched.progress.step, watched.progress.loss) == (5, pytest.approx(0.2))
    assert (run / "train.log").read_text() == "Step 5 per-step time 0.1s\n"


def test_a_failing_child_names_its_last_line_and_log(tmp_path: Path, monkeypatch):
    run = tmp_path / "run"
    with pytest.raises(supervisor.ChildFailed) as error:
        supervise(run, fake_training(2, 1, last="ValueError: the records are broken"), monkeypatch)
    assert str(error.value) == (f"training stopped with exit status 1: ValueError: the records are broken "
                                f"(see {run / 'train.log'})")


def test_a_non_finite_loss_names_the_last_good_checkpoint(tmp_path: Path, monkeypatch):
    run = tmp_path / "run"
    save_checkpoint(run, 200)
    with pytest.raises(supervisor.NonFiniteLoss) as error:
        supervise(run, fake_training(2, NON_FINITE_EXIT), monkeypatch)
    assert str(error.value) == (
        f"training stopped: the training loss became NaN or infinite ({run / 'train.log'}); the last good "
        "checkpoint, ckpt-1 (step 200), is kept; try a lower --set learning_rate=... in a new run (--name), "
        "or check the records"
    )


@pytest.mark.slow
def test_tensorboard_serves_the_run_folder_and_stops(tmp_path: Path):
    import urllib.request

    run = tmp_path / "run with spaces"
    run.mkdir()
    port = supervisor.free_port(0)
    children = supervisor.Children()
    children.start("tensorboard", supervisor.tensorboard_command(run, port, "localhost"),
                   supervisor.child_environment(""), run / "tensorboard.log")
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


def test_keep_tensorboard_serves_the_run_once_it_is_recorded(tmp_path: Path, monkeypatch, caplog):
    from chestdet.training import train as training
    from tests.support.run_folders import empty_records

    run = tmp_path / "run"
    monkeypatch.setattr(supervisor, "train_command", lambda *args: fake_training(3, 0))
    # A TensorBoard that, two seconds in, writes the status run.json gives the session, then stops by itself.
    reader = (f"import json, time; time.sleep(2); "
              f"print(json.load(open({str(run / 'run.json')!r}))['sessions'][-1]['status'])")
    monkeypatch.setattr(supervisor, "tensorboard_command", lambda *args: [sys.executable, "-c", reader])
    caplog.set_level("INFO", logger="chestdet")
    options = training.TrainOptions(records=empty_records(tmp_path / "records"), model_dir=run, from_scratch=True,
                                    steps=3, keep_tensorboard=True, progress=False)
    assert training.resolve(options).tensorboard is True
    training.train(options)
    assert (run / "tensorboard.log").read_text() == "finished\n"
    assert f"TensorBoard keeps serving {run} at http://localhost:" in caplog.text
