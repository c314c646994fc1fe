"""Micro-batching: the requests that arrive within a few milliseconds go through the model as one batch.

A collector task waits for a free worker, takes the first queued item, then gathers more for up to
`wait_s` (counted from the first) or until `max_batch`; the batch runs in a worker thread, so the
event loop never blocks on the model. While every worker is busy the queue fills, and the next batch
takes what has gathered at once. The queue is bounded: `submit` on a full queue raises `QueueFull`,
which the API answers with 503 and Retry-After, never with an unbounded backlog.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger("chestdet.service")

POLL_S = 0.001  # how often a gathering batch looks for more items


class QueueFull(Exception):
    """The batcher's queue is full, or it is closing; the caller should retry later."""


class MicroBatcher:
    """`await submit(item)` -> `run([..., item, ...])`'s result for it; `run` maps a list to an equal-length list."""

    def __init__(self, run: Callable[[Sequence[Any]], Sequence[Any]], max_batch: int, wait_s: float,
                 max_queue: int, workers: int = 1) -> None:
        self._run = run
        self.max_batch, self.wait_s, self.workers = max(1, max_batch), max(0.0, wait_s), max(1, workers)
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=max(1, max_queue))
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="model")
        self._slots = asyncio.Semaphore(self.workers)
        self._running: set[asyncio.Task] = set()
        self._collector: asyncio.Task | None = None
        self._closing = False
        self._pending = 0  # submitted and not yet answered

    def start(self) -> None:
        self._collector = asyncio.get_running_loop().create_task(self._collect(), name="micro-batcher")

    async def submit(self, item: Any) -> tuple[Any, int]:
        """The item's result and the size of the batch it ran in."""
        if self._closing:
            raise QueueFull("shutting down")
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((item, future))
            self._pending += 1
        except asyncio.QueueFull:
            raise QueueFull(f"{self._queue.maxsize} requests already wait for the model") from None
        return await future

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def _collect(self) -> None:
        while True:
            await self._slots.acquire()
            batch = await self._gather()
            task = asyncio.get_running_loop().create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _gather(self) -> list[tuple[Any, asyncio.Future]]:
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(POLL_S, remaining))
        return batch

    async def _execute(self, batch: list[tuple[Any, asyncio.Future]]) -> None:
        try:
            items = [item for item, _ in batch]
            try:
                results = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, items)
                if len(results) != len(items):
                    raise RuntimeError(f"a batch of {len(items)} gave {len(results)} results")
            except Exception as error:  # noqa: BLE001 - handed to every waiting request
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                return
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # its client may have gone away
                    future.set_result((result, len(batch)))
        finally:
            self._pending -= len(batch)
            self._slots.release()

    async def close(self) -> None:
        """Refuse new items, finish the queued and running ones, then stop the workers."""
        self._closing = True
        while self._pending:
            await asyncio.sleep(POLL_S * 10)
        if self._collector is not None:
            self._collector.cancel()
        self._executor.shutdown(wait=True)
