"""Training's one live line: step, total loss, steps/s, ETA and the latest evaluation (tqdm).

The training child prints a line per step (chestdet.core.compat.STEP_REPORT); the supervisor's output
pump hands those to `TrainingProgress.step`. Without a terminal (a log file, CI) the bar stays off and
the same figures are logged once a minute.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time

from tqdm import tqdm

from chestdet.core.compat import STEP_REPORT

log = logging.getLogger(__name__)

STEP_LINE = re.compile(rf"^{STEP_REPORT} (\d+) (\S+)$")
LOG_EVERY_SECONDS = 60.0


def parse_step_line(text: str) -> tuple[int, float] | None:
    """(step, total loss) of a training child's step report, or None for any other line."""
    match = STEP_LINE.match(text.strip())
    if match is None:
        return None
    try:
        return int(match.group(1)), float(match.group(2))
    except ValueError:
        return None


class TrainingProgress:
    """The live line of one training session, from `start_step` to `num_steps`; thread-safe."""

    def __init__(self, start_step: int, num_steps: int, enabled: bool = True) -> None:
        self.start_step, self.num_steps = start_step, num_steps
        self.step = start_step
        self.loss: float | None = None
        self.evaluation = ""
        self._lock = threading.Lock()
        self._first: tuple[int, float] | None = None  # (step, time) of the first report: tracing left out
        self._last_time = 0.0  # of the latest report: the rate stays put while the evaluation of the last step runs
        self._logged = time.monotonic()
        self._enabled = enabled
        # Until the first step the child builds the model and traces train_loop's function: no rate yet.
        self.bar = self._new_bar(start_step, "train (starting)", leave=False)

    def _new_bar(self, initial: int, desc: str, leave: bool = True) -> tqdm:
        return tqdm(total=self.num_steps, initial=initial, unit="step", desc=desc, dynamic_ncols=True, leave=leave,
                    file=sys.stderr, disable=None if self._enabled else True, smoothing=0.1)

    def report(self, step: int, loss: float) -> None:
        """A step finished with this total loss."""
        with self._lock:
            now = time.monotonic()
            if self._first is None:
                self._first = (step, now)
                self.bar.close()  # the rate counts from the first step, not from the start-up
                self.bar = self._new_bar(step, "train")
            elif step > self.step:
                self.bar.update(step - self.step)
            self.step, self.loss, self._last_time = max(step, self.step), loss, now
            self._show(now)

    def evaluated(self, step: int, value: float) -> None:
        """An evaluation result arrived: val mAP@0.5 of the checkpoint at `step`."""
        with self._lock:
            self.evaluation = f"val mAP@0.5 {value:.3f} (step {step})"
            self._show(time.monotonic(), force=True)

    def rate(self) -> float | None:
        """Steps per second since the first reported step."""
        if self._first is None:
            return None
        steps, seconds = self.step - self._first[0], self._last_time - self._first[1]
        return steps / seconds if steps > 0 and seconds > 0 else None

    def line(self) -> str:
        """The figures as one line, e.g. 'step 273/440, loss 0.812, 1.93 steps/s, ETA 01:26'."""
        parts = [f"step {self.step}/{self.num_steps}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        rate = self.rate()
        if rate:
            parts.append(f"{rate:.2f} steps/s, ETA {tqdm.format_interval((self.num_steps - self.step) / rate)}")
        if self.evaluation:
            parts.append(self.evaluation)
        return ", ".join(parts)

    def _show(self, now: float, force: bool = False) -> None:
        if not self.bar.disable:
            postfix = [f"loss={self.loss:.4g}"] if self.loss is not None else []
            self.bar.set_postfix_str(", ".join(postfix + ([self.evaluation] if self.evaluation else [])))
        elif force or now - self._logged >= LOG_EVERY_SECONDS or self.step >= self.num_steps:
            self._logged = now
            log.info("%s", self.line())

    def close(self) -> None:
        with self._lock:
            self.bar.close()
