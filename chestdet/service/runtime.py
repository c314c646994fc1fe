"""What a running app holds on app.state: the detector once loaded, the micro-batcher, the feedback store,
and the limits every route shares (the queue, the decoding threads)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import anyio
import numpy as np
from fastapi import HTTPException, Request

from chestdet.core.errors import ChestdetError
from chestdet.core.system import available_cpus
from chestdet.export.backends import ModelOutput
from chestdet.service.batcher import MicroBatcher, QueueFull
from chestdet.service.detector import Detector
from chestdet.service.feedback import FeedbackStore
from chestdet.service.settings import Settings
from chestdet.service.uploads import Upload, UploadError, read_upload

log = logging.getLogger("chestdet.service")


@dataclass(frozen=True)
class Connection:
    """Where a Label Studio project's task images are fetched from, and the token to fetch them with."""

    hostname: str
    token: str | None


@dataclass
class Runtime:
    settings: Settings
    detector: Detector | None = None
    batcher: MicroBatcher | None = None
    feedback: FeedbackStore | None = None
    error: str | None = None  # why the model could not be loaded
    admitted: int = 0  # requests being read, decoded, or waiting for or in the model
    label_studio: dict[str, Connection] = field(default_factory=dict)  # by project id, from /setup

    def __post_init__(self) -> None:
        self.decoding = anyio.CapacityLimiter(available_cpus() + 1)
        self.explaining = anyio.CapacityLimiter(1)

    async def load(self) -> None:
        """Open the export in a thread (the event loop keeps answering /health), then start the batcher."""
        try:
            detector = await anyio.to_thread.run_sync(Detector.open, self.settings)
            self.feedback = FeedbackStore(self.settings.feedback_dir, detector.class_names)
        except ChestdetError as error:
            self.error = str(error)
            log.error("error: %s", error)
            return
        batcher = MicroBatcher(detector.infer, self.settings.max_batch, self.settings.batch_wait_s,
                               self.settings.max_queue, detector.concurrency)
        batcher.start()
        self.batcher, self.detector = batcher, detector

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()

    @property
    def status(self) -> str:
        return "UP" if self.detector is not None else "failed" if self.error else "loading"

    def ready(self) -> Detector:
        """The detector; 503 while it loads (with Retry-After), or when it failed to load."""
        if self.detector is not None:
            return self.detector
        if self.error is not None:
            raise HTTPException(503, f"the model could not be loaded: {self.error}")
        raise HTTPException(503, "the model is loading", {"Retry-After": str(self.settings.retry_after_s)})

    @contextlib.contextmanager
    def admit(self) -> Iterator[Detector]:
        """Hold one of the queue's places for a request; 503 with Retry-After when none is free."""
        detector = self.ready()
        if self.admitted >= self.settings.max_queue:
            raise self.busy(f"{self.admitted} requests are already in the queue")
        self.admitted += 1
        try:
            yield detector
        finally:
            self.admitted -= 1

    def busy(self, reason: str) -> HTTPException:
        return HTTPException(503, f"busy: {reason}; retry later", {"Retry-After": str(self.settings.retry_after_s)})

    async def decode(self, data: bytes) -> tuple[Upload, np.ndarray]:
        """The upload read and prepared for the model, in a thread; 415 or 422 when it cannot be."""
        detector = self.ready()

        def work() -> tuple[Upload, np.ndarray]:
            upload = read_upload(data, self.settings.max_pixels)
            return upload, detector.prepare(upload.pixels)

        try:
            return await anyio.to_thread.run_sync(work, limiter=self.decoding)
        except UploadError as error:
            raise HTTPException(error.status, error.reason) from None

    async def infer(self, prepared: np.ndarray) -> tuple[ModelOutput, int]:
        """The model's output for one prepared image and the size of the batch it ran in."""
        try:
            return await self.batcher.submit(prepared)
        except QueueFull as error:
            raise self.busy(str(error)) from None


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_detector(request: Request) -> Detector:
    """The loaded detector (503 until it is); tests may override this dependency."""
    return get_runtime(request).ready()


async def wait_for(task: asyncio.Task, seconds: float) -> None:
    """Let a task finish for up to `seconds`, then cancel it."""
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(task, seconds)
