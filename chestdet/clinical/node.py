"""The DICOM node: a Storage SCP into the spool, a worker detecting on it, a delivery sending the results.

Three threads share the spool and nothing else. The SCP's handlers only check and spool, then wake
the worker; the worker takes up to `batch_size` waiting films at a time and wakes the delivery; the
delivery sends what is processed and, when the destination fails, waits with backoff and tries
again, keeping everything. A restart on the same spool resumes: waiting films are processed,
processed ones sent. The status file (status.json in the spool) shows the queue and the last errors.
"""

from __future__ import annotations

import collections
import datetime
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from chestdet.clinical.delivery import Delivery
from chestdet.clinical.filters import Filter, load_filter
from chestdet.clinical.hl7 import parse_hl7_address
from chestdet.clinical.results import ModelInfo
from chestdet.clinical.scp import DEFAULT_TIMEOUTS, StorageSCP, Timeouts
from chestdet.clinical.senders import Backoff, SendError, parse_destination
from chestdet.clinical.spool import DONE, FAILED, STATUS, Spool
from chestdet.clinical.worker import Worker
from chestdet.core import atomic
from chestdet.detection.thresholds import Thresholds
from chestdet.export.backends import Backend

log = logging.getLogger("chestdet.clinical.node")


@dataclass(frozen=True)
class NodeSettings:
    ae_title: str
    spool: Path
    send_to: str
    host: str = "127.0.0.1"
    port: int = 11112
    hl7: str | None = None
    batch_size: int = 8
    result_processes: int = 1
    associations: int = 4
    accept: Filter = field(default_factory=lambda: load_filter(None))
    thresholds: Thresholds = field(default_factory=Thresholds)
    max_boxes: int = 100
    retry_first: float = 1.0
    retry_most: float = 60.0
    timeouts: Timeouts = DEFAULT_TIMEOUTS


class Node:
    def __init__(self, settings: NodeSettings, backend: Backend, class_names: Mapping[int, str],
                 model: ModelInfo) -> None:
        self.settings, self.model = settings, model
        self.spool = Spool(settings.spool)
        self.destination = parse_destination(settings.send_to, settings.ae_title, settings.timeouts)
        hl7 = parse_hl7_address(settings.hl7, settings.timeouts.dimse) if settings.hl7 else None
        self.delivery = Delivery(self.spool, self.destination, hl7, settings.ae_title, settings.associations)
        self.worker = Worker(self.spool, backend, class_names, model, settings.thresholds, settings.max_boxes,
                             settings.result_processes)
        self.scp = StorageSCP(settings.ae_title, (settings.host, settings.port), self.spool, settings.accept,
                              self._received, settings.timeouts)
        self.backend = backend
        self._stop, self._wake, self._ready = threading.Event(), threading.Event(), threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.counts = collections.Counter()
        self.errors: collections.deque[dict] = collections.deque(maxlen=10)
        self._status_written = 0.0

    # ---------------------------------------------------------------- running

    def start(self) -> None:
        waiting = self.spool.recover()
        if waiting:
            log.info("resuming: %d films waiting in %s", waiting, self.spool.root)
        self.backend.load()
        self.scp.start()
        for name, loop in (("node-process", self._process_loop), ("node-deliver", self._deliver_loop)):
            thread = threading.Thread(target=self._guarded, args=(loop,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._wake.set()
        self._ready.set()
        self.write_status(force=True)

    def stop(self) -> None:
        """Stop receiving, finish the round in progress, and write the status."""
        self.scp.stop()
        self._stop.set()
        self._wake.set()
        self._ready.set()
        for thread in self._threads:
            thread.join()
        self.worker.close()
        self.write_status(force=True)

    def stop_soon(self) -> None:
        """Ask the loops to end after their current round (safe from a signal handler); then call stop()."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the node is asked to stop."""
        return self._stop.wait(timeout)

    @property
    def port(self) -> int:
        return self.scp.port

    def _received(self) -> None:
        with self._lock:
            self.counts["received"] += 1
        self._wake.set()

    def _guarded(self, loop: Callable[[], None]) -> None:
        """A loop that survives its own failures: the node keeps serving and says what went wrong."""
        while not self._stop.is_set():
            try:
                loop()
                return
            except Exception as error:  # noqa: BLE001 - one bad round must not stop the node
                self._error(threading.current_thread().name, f"{type(error).__name__}: {error}")
                log.debug("details", exc_info=True)
                self._stop.wait(1.0)

    def _process_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            waiting = self.spool.unprocessed()
            if waiting:
                done = self.worker.process(waiting[: self.settings.batch_size])
                with self._lock:
                    self.counts["processed"] += len(done)
                self._ready.set()
                if len(waiting) > self.settings.batch_size:
                    self._wake.set()
            self.write_status()

    def _deliver_loop(self) -> None:
        backoff = Backoff(self.settings.retry_first, self.settings.retry_most)
        while not self._stop.is_set():
            self._ready.wait(1.0)
            self._ready.clear()
            ready = self.spool.processed()
            if ready:
                try:
                    sent = self.delivery.deliver(ready)
                    if self.delivery.more_to_send:
                        self._ready.set()
                    backoff.reset()
                except SendError as error:
                    delay = backoff.delay()
                    self._error("send", f"{error}; retrying in {delay:g} s")
                    self._stop.wait(delay)
                    self._ready.set()
                    sent = 0
                with self._lock:
                    self.counts["sent"] += sent
            self.write_status()

    # ---------------------------------------------------------------- status

    def _error(self, where: str, message: str) -> None:
        log.warning("%s: %s", where, message)
        with self._lock:
            self.errors.append({"time": _now(), "where": where, "error": message})

    def status(self) -> dict:
        with self._lock:
            counts, errors = dict(self.counts), list(self.errors)
        return {
            "ae_title": self.settings.ae_title, "address": f"{self.settings.host}:{self.port}",
            "destination": self.destination.name, "hl7": self.settings.hl7, "model": self.model.label,
            "waiting": len(self.spool.unprocessed()), "to_send": len(self.spool.processed()),
            "failed": self.spool.count(FAILED), "done": self.spool.count(DONE),
            "since_start": counts, "last_errors": errors, "updated": _now(),
        }

    def write_status(self, force: bool = False) -> None:
        """status.json, at most twice a second unless forced."""
        if not force and time.monotonic() - self._status_written < 0.5:
            return
        self._status_written = time.monotonic()
        atomic.write_json(self.spool.status_path, self.status())


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read_status(spool: Path) -> dict | None:
    """The status a running (or the last) node wrote in `spool`, or None."""
    try:
        return json.loads((Path(spool) / STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
