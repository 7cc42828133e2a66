"""DueQueue: items ordered by due time; ``work_off`` works them off with a bounded pool.

Both the poll scheduler and the delivery outbox are "do this item at that
time, at most N at once". The workers pop the queue themselves: an earlier
version fed them through a dispatcher task and a hand-off queue, which cost
two extra loop turns per item and 12% more CPU per poll.

Memory is what shapes the queue. A heap of ``(due, seq, item)`` tuples costs
about 140 bytes per item (the tuple, a float, an int), every one allocated
while the first round of polls runs and scattered among that round's
short-lived objects, so its memory is never handed back. Here items wait in
time buckets (``BUCKET_S`` wide) as two flat arrays, the due times unboxed:
16 bytes an item. Only the earliest bucket, the one being worked off, is
ordered as a small heap; a bucket filled in due order (the common case: a
first round, a resume, a fixed interval) is read in place with no heap at
all. Order is exact: earliest due first, ties first-in first-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from array import array
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, Generic, NoReturn, TypeVar

T = TypeVar("T")

BUCKET_S: Final = 0.05


class _Bucket(Generic[T]):
    """Items whose due time falls in one ``BUCKET_S`` span, in arrival order."""

    __slots__ = ("dues", "items", "ordered")

    def __init__(self) -> None:
        self.dues = array("d")
        self.items: list[T] = []
        self.ordered = True  # every due >= the one before it


class DueQueue(Generic[T]):
    """Items by due time on the event loop's clock; any number of consumers."""

    def __init__(self) -> None:
        self._buckets: dict[int, _Bucket[T]] = {}
        self._ids: list[int] = []  # heap of the bucket ids in _buckets
        # The front: the earliest bucket, being worked off. Either read in place
        # (its arrays from _pos on, in due order) or, once something had to go
        # in out of order, as a heap of (due, seq, item).
        self._front_id: int | None = None
        self._fdues = array("d")
        self._fitems: list[T | None] = []
        self._pos = 0
        self._fheap: list[tuple[float, int, T]] | None = None
        self._seq = itertools.count()  # heap ties go first-in first-out, items never compared
        self._len = 0
        self._idle: deque[asyncio.Future[None]] = deque()  # consumers waiting in pop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def __len__(self) -> int:
        return self._len

    # --- the store of items ---------------------------------------------------------------

    def push(self, due: float, item: T) -> None:
        """Schedule ``item`` at loop time ``due`` (the past means now)."""
        self._len += 1
        bucket_id = int(due // BUCKET_S)
        front = self._front_id
        if front is not None and bucket_id <= front:
            self._push_front(due, item)
        else:
            bucket = self._buckets.get(bucket_id)
            if bucket is None:
                bucket = self._buckets[bucket_id] = _Bucket()
                heapq.heappush(self._ids, bucket_id)
            elif bucket.ordered and due < bucket.dues[-1]:
                bucket.ordered = False
            bucket.dues.append(due)
            bucket.items.append(item)
        if self._idle:
            self._kick()

    def _push_front(self, due: float, item: T) -> None:
        heap = self._fheap
        if heap is None:
            dues = self._fdues
            if self._pos == len(dues) or due >= dues[-1]:
                dues.append(due)
                self._fitems.append(item)
                return
            heap = self._front_as_heap()
        heapq.heappush(heap, (due, next(self._seq), item))

    def _front_as_heap(self) -> list[tuple[float, int, T]]:
        seq = self._seq
        items = self._fitems
        heap: list[tuple[float, int, T]] = [
            (self._fdues[i], next(seq), items[i])  # type: ignore[misc]
            for i in range(self._pos, len(items))
        ]
        heapq.heapify(heap)
        self._fheap = heap
        self._fdues, self._fitems, self._pos = array("d"), [], 0
        return heap

    def _front_due(self) -> float | None:
        """The earliest due time, making the next bucket the front when this one is done."""
        while True:
            heap = self._fheap
            if heap is not None:
                if heap:
                    return heap[0][0]
            elif self._pos < len(self._fdues):
                return self._fdues[self._pos]
            if not self._ids:
                self._front_id = None
                self._fheap = None
                self._fdues, self._fitems, self._pos = array("d"), [], 0
                return None
            self._load(heapq.heappop(self._ids))

    def _load(self, bucket_id: int) -> None:
        bucket = self._buckets.pop(bucket_id)
        self._front_id = bucket_id
        self._fdues, self._fitems, self._pos = bucket.dues, bucket.items, 0  # type: ignore[assignment]
        self._fheap = None
        if not bucket.ordered:
            self._front_as_heap()

    def _take(self) -> T:
        """Remove and return the earliest item (``_front_due`` said there is one)."""
        self._len -= 1
        heap = self._fheap
        if heap is not None:
            return heapq.heappop(heap)[2]
        pos = self._pos
        items = self._fitems
        item = items[pos]
        items[pos] = None  # the front's arrays are dropped once read to the end
        self._pos = pos + 1
        return item  # type: ignore[return-value]

    def peek_due(self) -> float | None:
        return self._front_due()

    def take_due(self, now: float) -> tuple[bool, T | None]:
        """(True, the earliest item) if it is due at loop time ``now``, else (False, None).

        ``pop()`` without a coroutine, for a consumer that finds work waiting.
        """
        due = self._front_due()
        if due is None or due > now:
            return False, None
        item = self._take()
        if self._len and self._idle:
            self._kick()
        return True, item

    def items(self) -> list[T]:
        """Every queued item, due or not, left in the queue (for inspection)."""
        out: list[T] = []
        if self._fheap is not None:
            out.extend(entry[2] for entry in self._fheap)
        else:
            out.extend(self._fitems[self._pos :])  # type: ignore[arg-type]
        for bucket in self._buckets.values():
            out.extend(bucket.items)
        return out

    def drain_items(self) -> list[T]:
        """Remove and return every item, due or not."""
        out = self.items()
        self._buckets.clear()
        self._ids.clear()
        self._front_id = None
        self._fheap = None
        self._fdues, self._fitems, self._pos = array("d"), [], 0
        self._len = 0
        return out

    # --- consumers ------------------------------------------------------------------------

    def _kick(self) -> None:
        """Wake one idle consumer if the earliest item is due, else arm a timer for it."""
        due = self._front_due()
        if due is None:
            return
        loop = asyncio.get_running_loop()
        if due <= loop.time():
            while self._idle:
                waiter = self._idle.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
            return
        # One timer, for the earliest item only, whoever ends up taking it.
        if self._timer is None or due < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(due, self._on_timer)
            self._timer_at = due

    def _on_timer(self) -> None:
        self._timer = None
        if self._idle:
            self._kick()

    async def pop(self) -> T:
        """Wait until the earliest item is due and return it."""
        loop = asyncio.get_running_loop()
        while True:
            due = self._front_due()
            if due is not None and due <= loop.time():
                item = self._take()
                if self._len and self._idle:
                    self._kick()  # the next one may be due too: pass the baton
                return item
            waiter: asyncio.Future[None] = loop.create_future()
            self._idle.append(waiter)
            self._kick()
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._kick()  # we were woken for an item we will not take
                else:
                    self._remove(waiter)
                raise

    def _remove(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):  # already woken and taken off
            self._idle.remove(waiter)


async def work_off(
    queue: DueQueue[T], handle: Callable[[T], Awaitable[None]], concurrency: int
) -> NoReturn:
    """Run ``handle`` on each item as it falls due, at most ``concurrency`` at once.

    ``handle`` must not raise: one bad item may not stop the others; if it is
    cancelled mid-item it must put the item back itself. Nothing is awaited
    between taking an item and handing it to ``handle``, so cancelling the
    pool never loses one. A fixed pool of workers is cheaper than a task each.
    """

    loop = asyncio.get_running_loop()

    async def worker() -> NoReturn:
        while True:
            # The common case under load, an item already due, costs no coroutine.
            found, item = queue.take_due(loop.time())
            await handle(item if found else await queue.pop())  # type: ignore[arg-type]

    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
    raise AssertionError("unreachable")  # pragma: no cover
