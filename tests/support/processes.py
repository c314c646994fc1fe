"""The servers tests start as processes (Orthanc, Label Studio, the review server): a free loopback port
to give them, and a stop that signals, waits and kills only if it must."""

from __future__ import annotations

import signal
import socket
import subprocess


def free_port() -> int:
    """A loopback port free at the time of asking."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_process(process: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Send `sig`, wait up to `timeout` s, then kill; the exit status (0 for no process)."""
    if process is None:
        return 0
    if process.poll() is not None:
        return process.returncode
    process.send_signal(sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
