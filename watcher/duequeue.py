"""DueQueue: items ordered by due time; ``work_off`` feeds them to a bounded pool.

Both the poll scheduler and the delivery outbox are "do this item at that
time, at most N at once". One heap and one sleeping dispatcher serve 100,000
items with flat memory: a heap entry is about 0.1 KB where a sleeping task per
item costs about 1.5 KB.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from typing import Generic, NoReturn, TypeVar

T = TypeVar("T")


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class DueQueue(Generic[T]):
    """A min-heap of (due, item) on the event loop's clock, with one consumer."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()  # ties go first-in first-out, items never compared
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, item: T) -> None:
        """Schedule ``item`` at loop time ``due`` (the past means now)."""
        heapq.heappush(self._heap, (due, next(self._seq), item))
        # Only a new earliest entry can change how long the consumer sleeps.
        if self._waiter is not None and self._heap[0][2] is item:
            _wake(self._waiter)

    def peek_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    async def pop(self) -> T:
        """Wait until the earliest item is due and return it."""
        loop = asyncio.get_running_loop()
        while True:
            if self._heap and self._heap[0][0] <= loop.time():
                return heapq.heappop(self._heap)[2]
            waiter = self._waiter = loop.create_future()
            handle = loop.call_at(self._heap[0][0], _wake, waiter) if self._heap else None
            try:
                await waiter
            finally:
                self._waiter = None
                if handle is not None:
                    handle.cancel()

    def drain_items(self) -> list[T]:
        """Remove and return every item, due or not."""
        items = [entry[2] for entry in self._heap]
        self._heap.clear()
        return items


async def work_off(
    queue: DueQueue[T], handle: Callable[[T], Awaitable[None]], concurrency: int
) -> NoReturn:
    """Run ``handle`` on each item as it falls due, at most ``concurrency`` at once.

    ``handle`` must not raise: one bad item may not stop the others; if it is
    cancelled mid-item it must put the item back itself. A fixed pool of
    workers is cheaper per item than a task each.
    """
    # maxsize=1: the dispatcher pops the next item only when a worker can take
    # it almost at once, so an item is never held back behind busy workers
    # while a later push could still overtake it in the heap.
    handoff: asyncio.Queue[T] = asyncio.Queue(maxsize=1)

    async def worker() -> NoReturn:
        while True:
            item = await handoff.get()
            await handle(item)

    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
        try:
            while True:
                item = await queue.pop()
                try:
                    await handoff.put(item)
                except asyncio.CancelledError:
                    queue.push(0.0, item)
                    raise
        finally:
            # Cancelled (shutdown, or the pool resized): nothing popped may vanish.
            while not handoff.empty():
                queue.push(0.0, handoff.get_nowait())
    raise AssertionError("unreachable")  # pragma: no cover
