"""The review server as a real process: scripts/serve.py on a free loopback port, its log in a file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import REPO
from tests.support.processes import free_port, stop_process

START_TIMEOUT_S = 180.0


class ServiceServer:
    """`with ServiceServer(export, folder, "--token", "x") as server:` ... `server.url`, `server.client()`."""

    def __init__(self, export: Path, folder: Path, *args: str, ready: bool = True) -> None:
        self.export, self.folder, self.args, self.wait_ready = export, Path(folder), list(args), ready
        self.feedback = self.folder / "feedback"
        self.log = self.folder / "serve.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> ServiceServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(REPO / "scripts" / "serve.py"), "--model", str(self.export),
                   "--port", str(self.port), "--feedback-dir", str(self.feedback), *self.args]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
                                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        if self.wait_ready:
            self.wait_until_ready()
        return self

    def wait_until_ready(self, timeout: float = START_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            try:
                response = httpx.get(f"{self.url}/health", timeout=2)
                if response.status_code == 200 and response.json().get("explain") != "loading":
                    return response.json()
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the server was not ready in {timeout} s:\n{self.log_text()[-3000:]}")

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 120), **kwargs)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signal the server and wait for it to exit; returns its exit status."""
        return stop_process(self.process, sig, timeout)

    def __enter__(self) -> ServiceServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
