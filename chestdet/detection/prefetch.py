"""Bounded, ordered look-ahead over a thread pool: the stages of batch detection overlap through it."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

_END = object()


class OrderedPrefetch(Generic[In, Out]):
    """Run fn over items in a pool, at most `depth` ahead of the consumer, yielding in order.

    The first `depth` items are submitted on construction, so the work starts before iteration (for
    example while a model loads). `items` is read lazily, from the consumer's thread only; an error
    raised by fn is raised where its result would have been yielded.
    """

    def __init__(self, pool: Executor, fn: Callable[[In], Out], items: Iterable[In], depth: int) -> None:
        self._pool, self._fn, self._items = pool, fn, iter(items)
        self._pending: deque[Future] = deque()
        for _ in range(max(1, depth)):
            self._submit_next()

    def _submit_next(self) -> None:
        item = next(self._items, _END)
        if item is not _END:
            self._pending.append(self._pool.submit(self._fn, item))

    def __iter__(self) -> Iterator[Out]:
        while self._pending:
            future = self._pending.popleft()
            self._submit_next()
            yield future.result()
