"""The bounded, ordered look-ahead the detection stages overlap through."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from chestdet.detection.prefetch import OrderedPrefetch


def test_yields_in_order_although_later_items_finish_first():
    def slow_for_small(n: int) -> int:
        time.sleep(0.02 * (5 - n))
        return n * n

    with ThreadPoolExecutor(4) as pool:
        assert list(OrderedPrefetch(pool, slow_for_small, range(5), depth=4)) == [0, 1, 4, 9, 16]


def test_starts_depth_items_before_iteration_and_stays_at_most_one_beyond_depth():
    started: list[int] = []
    release = threading.Event()
    lock = threading.Lock()
    running = 0
    most = 0

    def work(n: int) -> int:
        nonlocal running, most
        with lock:
            started.append(n)
            running += 1
            most = max(most, running)
        release.wait(5)
        with lock:
            running -= 1
        return n

    with ThreadPoolExecutor(8) as pool:
        pulled: list[int] = []
        items = (pulled.append(n) or n for n in range(20))
        prefetch = OrderedPrefetch(pool, work, items, depth=3)
        time.sleep(0.05)
        assert sorted(started) == [0, 1, 2] and pulled == [0, 1, 2]
        release.set()
        assert list(prefetch) == list(range(20))
    assert most <= 4


def test_an_error_is_raised_where_its_result_would_have_come():
    def fail_on_two(n: int) -> int:
        if n == 2:
            raise ValueError("two")
        return n

    with ThreadPoolExecutor(2) as pool:
        results = iter(OrderedPrefetch(pool, fail_on_two, range(5), depth=2))
        assert [next(results), next(results)] == [0, 1]
        with pytest.raises(ValueError, match="two"):
            next(results)


def test_no_items_yields_nothing_and_items_may_be_falsy():
    with ThreadPoolExecutor(1) as pool:
        assert list(OrderedPrefetch(pool, lambda n: n, [], depth=4)) == []
        assert list(OrderedPrefetch(pool, lambda n: n, [None, 0, ""], depth=1)) == [None, 0, ""]
