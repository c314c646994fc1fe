"""scripts/dicom_node.py as its own process, as a hospital would run it: started, killed with -9,
restarted on the same spool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from chestdet.clinical.node import read_status
from tests.conftest import REPO


class NodeProcess:
    def __init__(self, model: Path, spool: Path, port: int, send_to: str, extra: Sequence[str] = (),
                 backend: Sequence[str] = ("--backend", "tflite", "--threads", "1")) -> None:
        self.model, self.spool, self.port, self.send_to, self.extra = model, spool, port, send_to, list(extra)
        self.backend = list(backend)
        self.log = spool.parent / f"{spool.name}-node.log"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [sys.executable, str(REPO / "scripts" / "dicom_node.py"), "--model", str(self.model),
                "--ae-title", "CHESTDET", "--port", str(self.port), "--send-to", self.send_to,
                "--spool", str(self.spool), *self.backend, *self.extra]

    def start(self, timeout: float = 120) -> NodeProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        earlier = len(self.log_text())  # a restart appends to the log: only this run's lines say it listens
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env)
        self.wait_for(lambda: "listening on" in self.log_text()[earlier:], timeout, "the node to listen")
        return self

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; the exit status."""
        if not self.alive():
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise

    def status(self) -> dict:
        return read_status(self.spool) or {}

    def wait_for(self, condition: Callable[[], bool], timeout: float = 120, what: str = "the condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"the node exited ({self.process.returncode}) waiting for {what}:\n"
                                     f"{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.log_text()[-3000:]}")
            time.sleep(0.1)
