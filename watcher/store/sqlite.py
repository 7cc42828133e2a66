"""The SQLite state file on a dedicated writer thread, with writes batched into transactions.

One file, WAL mode, ``synchronous=FULL`` (an event that was acknowledged as
stored survives a power cut). All SQLite work runs on one dedicated thread, so
the event loop never blocks; writes that arrive together are batched into one
transaction, and the backlog of them is bounded (``queue.WriteQueue``). It is
written only when something a restart needs changes: a state change, an event,
a delivery outcome — never on an unchanged poll.

We use the standard library's sqlite3 on our own thread rather than aiosqlite:
aiosqlite costs a thread hop per statement, while a batch here is one function
call on the thread for the whole transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

import structlog

from watcher.errors import StoreError
from watcher.models import (
    DeliveryRow,
    DeliveryStatus,
    EventRecord,
    ExecutionKey,
    Reported,
    WatchRow,
)
from watcher.store import history, reads
from watcher.store.base import WatchTuple
from watcher.store.connect import connect
from watcher.store.queue import DEFAULT_LIMIT, WriteQueue, pending_watch
from watcher.store.readonly import query_deliveries
from watcher.store.writes import Op, PendingWatch, transaction, write_batch

if TYPE_CHECKING:
    from watcher.store.base import StateStore

_CLOSE_FLUSH_S: Final = 10.0

log = structlog.get_logger("watcher.store")

R = TypeVar("R")


class SQLiteStore:
    """The state file. Use as an async context manager; every method is async-safe."""

    def __init__(self, path: Path | str, *, backlog_limit: int = DEFAULT_LIMIT) -> None:
        self.path = Path(path)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._queue = WriteQueue(self._write_queued, check_open=self._db, limit=backlog_limit)
        self._closed = False
        self.writes = 0  # committed write transactions, for the benchmark and metrics
        self.pruned = 0  # events pruned since open, for metrics
        self._data_version: int | None = None

    @property
    def healthy(self) -> bool:
        """False while writes fail; /readyz reports it."""
        return self._queue.healthy

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")
        if self._conn is not None:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="blink-watcher-store")
        try:
            self._conn = await self._run(self._open_sync)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _open_sync(self) -> sqlite3.Connection:
        return connect(self.path)

    async def close(self) -> None:
        """Flush what is queued and close; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        if self._conn is not None:
            try:
                await asyncio.wait_for(self.flush(), _CLOSE_FLUSH_S)
            except (TimeoutError, StoreError):
                # The disk has refused writes for a while; the next start redoes
                # the work (polls again, re-sends): at-least-once still holds.
                log.error("store.unsaved_at_close", watches=len(self._queue.watches))
            finally:
                self._queue.close()
                conn, self._conn = self._conn, None
                await self._run_raw(conn.close)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _run_raw(self, fn: Callable[[], R]) -> R:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _run(self, fn: Callable[[], R]) -> R:
        try:
            return await self._run_raw(fn)
        except sqlite3.Error as exc:
            raise StoreError(f"state file {self.path}: {exc}") from None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is not open")
        return self._conn

    # --- reads ----------------------------------------------------------------------------

    async def load_watches(self) -> list[WatchRow]:
        """Every watch in progress (one with no event yet)."""
        return await self._read(reads.all_watches)

    async def _read(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """``fn(db)`` on the writer thread, after every write queued before it."""
        db = self._db()
        await self.flush()
        return await self._run(partial(fn, db))

    async def watch_batches(self, size: int = 5000) -> AsyncIterator[list[WatchTuple]]:
        """Every watch in progress as (workspace, execution, state, polls, first_seen_at),
        ``size`` rows at a time.

        For resuming 100,000 watches: a few thousand short-lived rows at a time
        reuse the same memory, where one big list would leave the allocator's
        arenas fragmented for the life of the process (300 B per watch in RSS).
        """
        await self.flush()
        db = self._db()
        cursor = await self._run(
            lambda: db.execute(
                "SELECT workspace_id, execution_id, state, polls, first_seen_at FROM watches"
            )
        )
        try:
            while rows := await self._run(lambda: cursor.fetchmany(size)):
                yield rows
        finally:
            await self._run(cursor.close)

    async def reported_keys(self, keys: Iterable[ExecutionKey]) -> set[ExecutionKey]:
        """Which of ``keys`` were already reported (pruned ones included).

        Primary-key probes, ``history.LOOKUP_CHUNK`` per hop to the writer
        thread: cost grows with ``keys``, not with the history.
        """
        return set(await self._lookup(keys, history.reported_among))

    async def reported(self, keys: Iterable[ExecutionKey]) -> dict[ExecutionKey, Reported]:
        """The ending event of each of ``keys`` that was reported (pruned ones included)."""
        return dict(await self._lookup(keys, history.reported_rows))

    async def _lookup(
        self,
        keys: Iterable[ExecutionKey],
        probe: Callable[[sqlite3.Connection, str, list[str]], list[R]],
    ) -> list[R]:
        """``probe`` over ``keys``, per workspace, ``history.LOOKUP_CHUNK`` IDs per hop."""
        db = self._db()
        found: list[R] = []
        for workspace_id, ids in history.by_workspace(keys).items():
            for start in range(0, len(ids), history.LOOKUP_CHUNK):
                chunk = ids[start : start + history.LOOKUP_CHUNK]
                found += await self._run(partial(probe, db, workspace_id, chunk))
        return found

    async def last_response(self, key: ExecutionKey) -> dict[str, Any] | None:
        return await self._read(partial(reads.last_response, key=key))

    async def open_deliveries(self, status: DeliveryStatus = "pending") -> list[DeliveryRow]:
        """Deliveries with ``status`` (with their event bodies), oldest first."""
        # Outcomes are queued unwaited: without the flush, a delivery just made
        # would read as pending, and a reload's restore() would send it again.
        await self.flush()
        return await self._run(lambda: query_deliveries(self._db(), (status,)))

    async def dead_letters(self) -> dict[str, int]:
        """Dead-lettered deliveries per sink (through the open-deliveries index)."""
        return await self._read(reads.dead_letters)

    async def changed_elsewhere(self) -> bool:
        """Whether another process committed to the file since the last call.

        ``PRAGMA data_version`` moves only for other connections' commits, so
        this is how the daemon notices ``deliveries --retry-dead`` without a
        signal and without re-reading its outbox on a timer.
        """
        db = self._db()
        version = await self._run(lambda: db.execute("PRAGMA data_version").fetchone()[0])
        changed = self._data_version is not None and version != self._data_version
        self._data_version = version
        return bool(changed)

    # --- writes ---------------------------------------------------------------------------

    def save_watch(self, row: WatchRow) -> None:
        """Queue a watch's new state; later saves of the same watch replace it."""
        self._queue.put_watch(row.key, pending_watch(row))

    async def room(self) -> None:
        """Wait while the write backlog is over its bound (returns at once when it is not)."""
        await self._queue.room()

    def backlog(self) -> int:
        """Writes queued or being written, not yet committed."""
        return self._queue.backlog()

    def forget_watch(self, key: ExecutionKey) -> None:
        """Queue removal of a watch that is no longer configured."""
        self._queue.put_watch(key, None)

    async def record_event(
        self, record: EventRecord, sinks: Sequence[str], now: float | None = None
    ) -> None:
        """Store an event, its outbox rows and the end of its watch in one transaction.

        Returns once committed: only then may the first delivery attempt start.
        An execution reported before (its event perhaps pruned since) gets nothing new.
        """
        await self._submit(("event", (record, tuple(sinks), now or time.time())), wait=True)

    async def record_change(self, record: EventRecord, sinks: Sequence[str], row: WatchRow) -> None:
        """Store a state-change event, its outbox rows and the watch's new state, durably.

        One transaction: a restart resumes the watch past the change, so the same
        change is never seen (or sent) again under another id.
        """
        self._queue.watches.pop(row.key, None)  # this op carries the newer state
        op = ("change", (record, tuple(sinks), time.time(), pending_watch(row)))
        await self._submit(op, wait=True)

    async def update_delivery(
        self,
        event_id: str,
        sink: str,
        status: DeliveryStatus,
        attempts: int,
        next_attempt_at: float,
        last_error: str | None,
        *,
        wait: bool = False,
    ) -> None:
        """Record a delivery attempt's outcome. Batched; ``wait`` to know it is on disk."""
        op = (
            "delivery",
            (status, attempts, next_attempt_at, last_error, time.time(), event_id, sink),
        )
        await self._submit(op, wait=wait)

    async def add_watches(
        self,
        rows: Sequence[WatchRow],
        source: str,
        *,
        take_over: bool = False,
        cursor: tuple[str, str] | None = None,
    ) -> None:
        """Store new watches from ``source`` ('api', 'discover:RULE'); returns once committed.

        Queued in order with every other write: a ``forget_watch`` queued before
        it is applied first. Call it before the scheduler saves the watch's
        progress. A watch already stored keeps its progress (and, unless
        ``take_over``, its source); an execution already reported is skipped.
        ``cursor`` = (rule, value) commits a discovery rule's cursor in the same
        transaction.
        """
        queued = self._queue.watches
        for row in rows:
            if row.key in queued and queued[row.key] is None:
                del queued[row.key]  # adding again supersedes a queued forget
        op = ("add", (tuple(rows), source, take_over, cursor, time.time()))
        await self._submit(op, wait=True)

    async def watch_sources(self) -> dict[ExecutionKey, str]:
        """The source of every watch in progress that the config did not list."""
        return await self._read(reads.watch_sources)

    async def load_cursor(self, rule: str) -> str | None:
        """A discovery rule's stored cursor, or None before its first page."""
        return await self._read(partial(reads.cursor, rule=rule))

    async def drop_cursor(self, rule: str) -> None:
        """Forget a removed rule's cursor (the watches it found stay)."""
        db = self._db()

        def write() -> None:
            with transaction(db):
                db.execute("DELETE FROM cursors WHERE rule = ?", (rule,))

        await self.flush()
        await self._run(write)

    async def retry_dead(self) -> int:
        """Put every dead letter back in the queue; returns how many."""
        db = self._db()

        def write() -> int:
            with transaction(db):
                cur = db.execute(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, "
                    "updated_at = ? WHERE status = 'dead'",
                    (time.time(), time.time()),
                )
            return cur.rowcount

        return await self._run(write)

    async def prune(self, keep_s: float, *, now: float | None = None, batch: int = 500) -> int:
        """Drop events produced over ``keep_s`` ago whose deliveries are all delivered.

        Each batch of ``batch`` events is its own short transaction on the
        writer thread, so queued writes go in between and readers never wait
        long. The executions stay in ``reported``: never watched or reported
        again. Returns how many events were pruned.
        """
        if keep_s <= 0 or batch < 1:
            raise ValueError("keep_s must be > 0 and batch >= 1")
        cutoff = (time.time() if now is None else now) - keep_s
        db = self._db()
        after = history.START
        pruned = 0
        while step := await self._run(partial(history.prune_batch, db, cutoff, after, batch)):
            gone, after = step
            if gone:
                self.writes += 1
                self.pruned += gone
                pruned += gone
            await asyncio.sleep(0)  # let writes queued meanwhile in before the next batch
        if pruned:
            log.info("store.pruned", events=pruned, keep_reported_s=keep_s)
        return pruned

    async def _submit(self, op: Op, *, wait: bool) -> None:
        await self._queue.submit(op, wait=wait)

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        try:
            await self._queue.flush()
        except StoreError:
            raise StoreError(f"state file {self.path}: writes are failing") from None

    async def _write_queued(
        self, watches: dict[ExecutionKey, PendingWatch | None], ops: list[Op]
    ) -> None:
        db = self._db()
        await self._run(lambda: self._write_batch(db, watches, ops))

    def _write_batch(
        self,
        db: sqlite3.Connection,
        watches: dict[ExecutionKey, PendingWatch | None],
        ops: list[Op],
    ) -> None:
        write_batch(db, watches, ops)
        self.writes += 1


if TYPE_CHECKING:

    def _meets_the_protocol(store: SQLiteStore) -> StateStore:
        return store  # mypy checks SQLiteStore against StateStore here
