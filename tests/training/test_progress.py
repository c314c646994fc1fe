"""chestdet.training.progress: the live line's figures, and what is logged without a terminal."""

from __future__ import annotations

import pytest

from chestdet.core.compat import STEP_REPORT
from chestdet.training import progress


def test_step_reports_are_told_from_other_lines():
    assert progress.parse_step_line(f"{STEP_REPORT} 273 0.8125\n") == (273, 0.8125)
    assert progress.parse_step_line(f"{STEP_REPORT} 12 nan") == (12, pytest.approx(float("nan"), nan_ok=True))
    assert progress.parse_step_line("I1201 Step 300 per-step time 0.233s") is None
    assert progress.parse_step_line(f"{STEP_REPORT} 12 loss") is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress.time, "monotonic", fake)
    return fake


def test_the_line_has_step_loss_rate_eta_and_the_latest_evaluation(clock: Clock):
    line = progress.TrainingProgress(100, 440, enabled=False)
    assert line.line() == "step 100/440"
    clock.now += 30  # building the model and tracing: not counted in the rate
    line.report(101, 1.25)
    clock.now += 86
    line.report(273, 0.8125)
    assert line.line() == "step 273/440, loss 0.8125, 2.00 steps/s, ETA 01:23"
    clock.now += 100  # no step while the evaluation runs: the rate is that of the steps
    line.evaluated(200, 0.41234)
    assert line.line() == "step 273/440, loss 0.8125, 2.00 steps/s, ETA 01:23, val mAP@0.5 0.412 (step 200)"
    line.close()


def test_without_a_terminal_the_figures_are_logged_once_a_minute_and_at_the_end(clock: Clock, caplog):
    caplog.set_level("INFO", logger="chestdet")
    line = progress.TrainingProgress(0, 100, enabled=False)
    for step in range(1, 101):
        clock.now += 1.5
        line.report(step, 1.0)
    logged = [record.getMessage() for record in caplog.records]
    assert [text.split(",")[0] for text in logged] == ["step 40/100", "step 80/100", "step 100/100"]
    assert logged[-1] == "step 100/100, loss 1, 0.67 steps/s, ETA 00:00"
    line.close()
