"""The store's write backlog: queued writes batched into transactions, bounded, with backpressure.

Watch saves, events and delivery outcomes queue here and a flush loop hands
everything queued to the writer as one batch, so under load batches grow
instead of transactions piling up. The backlog is bounded: while more than
``limit`` writes wait (queued or in the batch being written), ``room()``
makes callers wait for the writer. The scheduler awaits it after each save,
so a slow disk costs a slower first round of polls, never memory growth
(docs/architecture.md, "State store"). A watch's save is queued compact: its
row as a tuple holding the response already serialised to JSON text, never
the parsed object.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Final, TypeAlias

import structlog

from watcher import memtrim
from watcher.errors import StoreError
from watcher.models import ExecutionKey, WatchRow
from watcher.store.writes import Op, PendingWatch

_RETRY_MIN_S: Final = 0.5
_RETRY_MAX_S: Final = 30.0
# Writes allowed to wait for the writer before savers are held back. A batch of
# this many upserts commits in a few milliseconds; while it is written the next
# one fills, so at most about twice this many rows (~1 KB each) are held.
DEFAULT_LIMIT: Final = 2000

log = structlog.get_logger("watcher.store")

# Writes one batch (watch rows by key, None = delete; ops in order); raises StoreError.
Writer: TypeAlias = Callable[[dict[ExecutionKey, PendingWatch | None], list[Op]], Awaitable[None]]


def pending_watch(row: WatchRow) -> PendingWatch:
    """A watch row as it waits for the writer: a flat tuple, the response as JSON text."""
    response = row.last_response
    return (
        *row.key,
        row.state,
        row.polls,
        row.first_seen_at,
        row.changed_at,
        None if response is None else json.dumps(response, separators=(",", ":")),
    )


class WriteQueue:
    """Queued writes for one store, written by ``writer`` in batches; at most ``limit`` wait."""

    def __init__(
        self,
        writer: Writer,
        *,
        check_open: Callable[[], object],
        limit: int = DEFAULT_LIMIT,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.healthy = True  # False while writes fail
        self.watches: dict[ExecutionKey, PendingWatch | None] = {}
        self._writer = writer
        self._check_open = check_open  # raises once the store is closed
        self._ops: list[tuple[Op, asyncio.Future[None] | None]] = []
        self._in_flight = 0  # writes in the batch being written
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._overflowed = False  # savers were held back since the backlog last drained

    def backlog(self) -> int:
        """Writes not yet committed: queued, and in the batch being written."""
        return len(self.watches) + len(self._ops) + self._in_flight

    # --- queueing ---------------------------------------------------------------------------

    def put_watch(self, key: ExecutionKey, row: PendingWatch | None) -> None:
        """Queue a watch's row (None: its removal); a later put of the same key replaces it."""
        self.watches[key] = row
        self._schedule()

    async def submit(self, op: Op, *, wait: bool) -> None:
        """Queue ``op``; with ``wait``, return once it is committed (or raise StoreError)."""
        fut: asyncio.Future[None] | None = None
        if wait:
            fut = asyncio.get_running_loop().create_future()
        self._ops.append((op, fut))
        self._schedule()
        if fut is not None:
            await fut

    async def room(self) -> None:
        """Wait while the backlog is over the limit (at once when it is not)."""
        while not self._closed and self.backlog() > self.limit:
            self._overflowed = True
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            await fut

    def _wake(self) -> None:
        if self._waiters and (self._closed or self.backlog() <= self.limit):
            waiters, self._waiters = self._waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def _schedule(self) -> None:
        if self._task is None or self._task.done():
            self._check_open()  # a write must not vanish silently into a closed store
            self._task = asyncio.get_running_loop().create_task(self._loop())

    # --- writing ----------------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until everything queued so far is committed (StoreError if it cannot be)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)
        if (self.watches or self._ops) and not await self._once():
            raise StoreError("writes are failing")

    def close(self) -> None:
        """No more waiting for room; stop the flush loop (after a flush, or giving up)."""
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._wake()

    async def _loop(self) -> None:
        # Everything queued while a transaction runs goes into the next one.
        delay_s = _RETRY_MIN_S
        while self.watches or self._ops:
            if await self._once():
                delay_s = _RETRY_MIN_S
                continue
            # The disk refused (full, read-only, I/O error). What was queued is
            # kept and written once it can be: a full disk must not lose state.
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, _RETRY_MAX_S)
        if self._overflowed:
            # A burst (say a full-speed first round) has drained: the batches'
            # memory is free, and goes back to the system rather than stay in RSS.
            self._overflowed = False
            memtrim.trim()

    async def _once(self) -> bool:
        """Write one batch; False when it failed (unawaited writes stay queued)."""
        watches, self.watches = self.watches, {}
        ops, self._ops = self._ops, []
        self._in_flight = len(watches) + len(ops)
        try:
            await self._writer(watches, [op for op, _ in ops])
        except StoreError as exc:
            if self.healthy:
                log.error("store.write_failed", reason=str(exc), action="retrying; fix the disk")
            self.healthy = False
            for key, row in watches.items():
                self.watches.setdefault(key, row)  # a newer save of it wins
            kept = []
            for op, fut in ops:
                if fut is None:
                    kept.append((op, fut))
                elif not fut.done():
                    fut.set_exception(exc)  # its caller decides (the scheduler polls again)
            self._ops[:0] = kept
            return False
        finally:
            self._in_flight = 0
            self._wake()
        if not self.healthy:
            log.info("store.write_recovered")
        self.healthy = True
        for _, fut in ops:
            if fut is not None and not fut.done():
                fut.set_result(None)
        return True
