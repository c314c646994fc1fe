"""The micro-batcher alone: batches form within the wait, results go back to their callers, the queue is bounded."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from chestdet.service.batcher import MicroBatcher, QueueFull


def run(coroutine):  # noqa: ANN201
    return asyncio.run(coroutine)


class Model:
    """Doubles each item, records the batches it saw; `gate` holds a batch until set."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate

    def __call__(self, items):  # noqa: ANN001, ANN204
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append(list(items))
        return [2 * item for item in items]


def test_requests_within_the_wait_share_a_batch_and_get_their_own_results():
    async def scenario():
        model = Model()
        batcher = MicroBatcher(model, max_batch=8, wait_s=0.2, max_queue=16)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(item) for item in range(5)))
        await batcher.close()
        return model, results

    model, results = run(scenario())
    assert results == [(2 * item, 5) for item in range(5)]
    assert model.batches == [[0, 1, 2, 3, 4]]


def test_a_batch_is_cut_at_max_batch_and_a_lone_request_waits_no_longer_than_the_wait():
    async def scenario():
        model = Model()
        batcher = MicroBatcher(model, max_batch=3, wait_s=0.05, max_queue=16)
        batcher.start()
        together = await asyncio.gather(*(batcher.submit(item) for item in range(7)))
        started = time.perf_counter()
        alone = await batcher.submit(100)
        waited = time.perf_counter() - started
        await batcher.close()
        return model, together, alone, waited

    model, together, alone, waited = run(scenario())
    assert [result for result, _ in together] == [2 * item for item in range(7)]
    assert [len(batch) for batch in model.batches] == [3, 3, 1, 1] and alone == (200, 1)
    assert waited < 1.0


def test_a_full_queue_refuses_at_once_and_close_finishes_what_was_queued():
    async def scenario():
        gate = threading.Event()
        model = Model(gate)
        batcher = MicroBatcher(model, max_batch=1, wait_s=0.0, max_queue=2, workers=1)
        batcher.start()
        running = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.05)  # the worker holds item 1; the queue has room for two more
        queued = [asyncio.ensure_future(batcher.submit(item)) for item in (2, 3)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await batcher.submit(4)
        gate.set()
        closing = asyncio.ensure_future(batcher.close())
        results = [await future for future in (running, *queued)]
        await closing
        with pytest.raises(QueueFull):
            await batcher.submit(5)
        return results

    assert run(scenario()) == [(2, 1), (4, 1), (6, 1)]


def test_a_failing_batch_fails_each_of_its_requests_and_the_next_batch_runs():
    def model(items):  # noqa: ANN001, ANN202
        if 13 in items:
            raise ValueError("unlucky batch")
        return list(items)

    async def scenario():
        batcher = MicroBatcher(model, max_batch=2, wait_s=0.1, max_queue=8)
        batcher.start()
        outcomes = await asyncio.gather(batcher.submit(13), batcher.submit(1), return_exceptions=True)
        after = await batcher.submit(2)
        await batcher.close()
        return outcomes, after

    outcomes, after = run(scenario())
    assert [str(outcome) for outcome in outcomes] == ["unlucky batch", "unlucky batch"] and after == (2, 1)
