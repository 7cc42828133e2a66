"""SQLite state: watches in progress, produced events, and the delivery outbox.

One file, WAL mode, ``synchronous=FULL`` (an event that was acknowledged as
stored survives a power cut). All SQLite work runs on one dedicated thread, so
the event loop never blocks; writes that arrive together are batched into one
transaction. It is written only when something a restart needs changes: a
state change, an event, a delivery outcome — never on an unchanged poll.

We use the standard library's sqlite3 on our own thread rather than aiosqlite:
aiosqlite costs a thread hop per statement, while a batch here is one function
call on the thread for the whole transaction.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import structlog

from watcher.errors import StoreError
from watcher.models import DeliveryRow, DeliveryStatus, EventRecord, ExecutionKey, WatchRow

SCHEMA_VERSION: Final = 1
_RETRY_MIN_S: Final = 0.5
_RETRY_MAX_S: Final = 30.0
_CLOSE_FLUSH_S: Final = 10.0

log = structlog.get_logger("watcher.store")

# Each entry migrates from version (index) to index + 1.
_MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE watches (
        workspace_id  TEXT NOT NULL,
        execution_id  TEXT NOT NULL,
        state         TEXT,            -- last reported state
        polls         INTEGER NOT NULL,
        first_seen_at REAL NOT NULL,   -- unix seconds; max_watch counts from here
        changed_at    REAL NOT NULL,   -- unix seconds of the last state change
        last_response TEXT,            -- JSON of the response at that change
        PRIMARY KEY (workspace_id, execution_id)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        event_id      TEXT PRIMARY KEY,
        workspace_id  TEXT NOT NULL,
        execution_id  TEXT NOT NULL,
        event         TEXT NOT NULL,
        state         TEXT,
        body          BLOB NOT NULL,   -- the exact bytes every sink delivers
        created_at    REAL NOT NULL
    );
    CREATE UNIQUE INDEX events_execution ON events (workspace_id, execution_id);
    CREATE TABLE deliveries (
        event_id        TEXT NOT NULL REFERENCES events (event_id),
        sink            TEXT NOT NULL,
        status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error      TEXT,
        updated_at      REAL NOT NULL,
        PRIMARY KEY (event_id, sink)
    ) WITHOUT ROWID;
    CREATE INDEX deliveries_open ON deliveries (status) WHERE status != 'delivered';
    """,
)

_Op = tuple[str, Any]
R = TypeVar("R")


def _connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def _create_private(path: Path) -> None:
    """Create the file 0600 whatever the umask: it holds execution results."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class Store:
    """The state file. Use as an async context manager; every method is async-safe."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._pending_watches: dict[ExecutionKey, WatchRow | None] = {}
        self._pending_ops: list[tuple[_Op, asyncio.Future[None] | None]] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._closed = False
        self.healthy = True  # False while writes fail; /readyz reports it
        self.writes = 0  # committed write transactions, for the benchmark and metrics

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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _create_private(self.path)
            conn = _connect(self.path)
        except OSError as exc:
            raise StoreError(
                f"cannot create state file {self.path}: {exc.strerror or exc}"
            ) from None
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state file {self.path}: {exc}") from None
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"state file {self.path} has schema version {version}, newer than this "
                    f"blink-watcher understands ({SCHEMA_VERSION}); upgrade blink-watcher"
                )
            for target in range(version, SCHEMA_VERSION):
                # One transaction per step: a crash mid-migration leaves the old version.
                conn.executescript(
                    f"BEGIN IMMEDIATE; {_MIGRATIONS[target]}; "
                    f"PRAGMA user_version = {target + 1}; COMMIT;"
                )
            conn.execute("SELECT count(*) FROM deliveries").fetchone()
            # A read-only file opens fine but fails on the first write: find out now.
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"state file {self.path} is unusable: {exc}") from None
        except StoreError:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        """Flush what is queued and close; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        if self._conn is not None:
            try:
                await asyncio.wait_for(self.flush(), _CLOSE_FLUSH_S)
            except TimeoutError:
                # The disk has refused writes for a while; the next start redoes
                # the work (polls again, re-sends): at-least-once still holds.
                log.error("store.unsaved_at_close", watches=len(self._pending_watches))
                if self._flush_task is not None:
                    self._flush_task.cancel()
            finally:
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
        db = self._db()

        def read() -> list[WatchRow]:
            rows = db.execute(
                "SELECT workspace_id, execution_id, state, polls, first_seen_at, changed_at "
                "FROM watches"
            ).fetchall()
            return [WatchRow((r[0], r[1]), r[2], r[3], r[4], r[5]) for r in rows]

        await self.flush()  # a read sees every write queued before it
        return await self._run(read)

    async def watch_batches(
        self, size: int = 5000
    ) -> AsyncIterator[list[tuple[str, str, str | None, int, float]]]:
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

    async def finished_keys(self, keys: Iterable[ExecutionKey] | None = None) -> set[ExecutionKey]:
        """Executions whose event was already produced (optionally only among ``keys``)."""
        db = self._db()

        def read() -> set[ExecutionKey]:
            rows = db.execute("SELECT workspace_id, execution_id FROM events").fetchall()
            found = {(r[0], r[1]) for r in rows}
            return found if keys is None else found.intersection(keys)

        return await self._run(read)

    async def reported_keys(self, keys: Iterable[ExecutionKey]) -> set[ExecutionKey]:
        """Those of ``keys`` whose ending event was already produced."""
        return await self.finished_keys(keys)

    async def last_response(self, key: ExecutionKey) -> dict[str, Any] | None:
        db = self._db()

        def read() -> dict[str, Any] | None:
            row = db.execute(
                "SELECT last_response FROM watches WHERE workspace_id = ? AND execution_id = ?",
                key,
            ).fetchone()
            if row is None or row[0] is None:
                return None
            value = json.loads(row[0])
            return value if isinstance(value, dict) else None

        await self.flush()  # the newest change may still be queued
        return await self._run(read)

    async def open_deliveries(self, status: DeliveryStatus = "pending") -> list[DeliveryRow]:
        """Deliveries with ``status`` (with their event bodies), oldest first."""
        # Outcomes are queued unwaited: without the flush, a delivery just made
        # would read as pending, and a reload's restore() would send it again.
        await self.flush()
        return await self._run(lambda: query_deliveries(self._db(), (status,)))

    # --- writes ---------------------------------------------------------------------------

    def save_watch(self, row: WatchRow) -> None:
        """Queue a watch's new state; later saves of the same watch replace it."""
        self._pending_watches[row.key] = row
        self._schedule_flush()

    def forget_watch(self, key: ExecutionKey) -> None:
        """Queue removal of a watch that is no longer configured."""
        self._pending_watches[key] = None
        self._schedule_flush()

    async def record_event(
        self, record: EventRecord, sinks: Sequence[str], now: float | None = None
    ) -> None:
        """Store an event, its outbox rows and the end of its watch in one transaction.

        Returns once committed: only then may the first delivery attempt start.
        """
        await self._submit(("event", (record, tuple(sinks), now or time.time())), wait=True)

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

    async def retry_dead(self) -> int:
        """Put every dead letter back in the queue; returns how many."""
        db = self._db()

        def write() -> int:
            with _transaction(db):
                cur = db.execute(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, "
                    "updated_at = ? WHERE status = 'dead'",
                    (time.time(), time.time()),
                )
            return cur.rowcount

        return await self._run(write)

    async def _submit(self, op: _Op, *, wait: bool) -> None:
        fut: asyncio.Future[None] | None = None
        if wait:
            fut = asyncio.get_running_loop().create_future()
        self._pending_ops.append((op, fut))
        self._schedule_flush()
        if fut is not None:
            await fut

    def _schedule_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            self._db()  # raises when closed: a write must not vanish silently
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_loop())

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        while self._flush_task is not None and not self._flush_task.done():
            await asyncio.shield(self._flush_task)
        if (self._pending_watches or self._pending_ops) and not await self._flush_once():
            raise StoreError(f"state file {self.path}: writes are failing")

    async def _flush_loop(self) -> None:
        # Everything queued while a transaction runs goes into the next one:
        # under load, batches grow instead of transactions piling up.
        delay_s = _RETRY_MIN_S
        while self._pending_watches or self._pending_ops:
            if await self._flush_once():
                delay_s = _RETRY_MIN_S
                continue
            # The disk refused (full, read-only, I/O error). What was queued is
            # kept and written once it can be: a full disk must not lose state.
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, _RETRY_MAX_S)

    async def _flush_once(self) -> bool:
        """Write one batch; False when it failed (unawaited writes stay queued)."""
        watches, self._pending_watches = self._pending_watches, {}
        ops, self._pending_ops = self._pending_ops, []
        db = self._db()
        try:
            await self._run(lambda: self._write_batch(db, watches, [op for op, _ in ops]))
        except StoreError as exc:
            if self.healthy:
                log.error("store.write_failed", reason=str(exc), action="retrying; fix the disk")
            self.healthy = False
            for key, row in watches.items():
                self._pending_watches.setdefault(key, row)  # a newer save of it wins
            kept = []
            for op, fut in ops:
                if fut is None:
                    kept.append((op, fut))
                elif not fut.done():
                    fut.set_exception(exc)  # its caller decides (the scheduler polls again)
            self._pending_ops[:0] = kept
            return False
        if not self.healthy:
            log.info("store.write_recovered")
        self.healthy = True
        for _, fut in ops:
            if fut is not None and not fut.done():
                fut.set_result(None)
        return True

    def _write_batch(
        self,
        db: sqlite3.Connection,
        watches: dict[ExecutionKey, WatchRow | None],
        ops: list[_Op],
    ) -> None:
        with _transaction(db):
            upserts = [
                (
                    *row.key,
                    row.state,
                    row.polls,
                    row.first_seen_at,
                    row.changed_at,
                    None if row.last_response is None else json.dumps(row.last_response),
                )
                for row in watches.values()
                if row is not None
            ]
            if upserts:
                db.executemany(
                    "INSERT INTO watches VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (workspace_id, execution_id) DO UPDATE SET "
                    "state = excluded.state, polls = excluded.polls, "
                    "changed_at = excluded.changed_at, last_response = excluded.last_response",
                    upserts,
                )
            removals = [key for key, row in watches.items() if row is None]
            if removals:
                db.executemany(
                    "DELETE FROM watches WHERE workspace_id = ? AND execution_id = ?", removals
                )
            for kind, args in ops:
                if kind == "event":
                    self._write_event(db, *args)
                else:
                    db.execute(
                        "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?, "
                        "last_error = ?, updated_at = ? WHERE event_id = ? AND sink = ?",
                        args,
                    )
        self.writes += 1

    @staticmethod
    def _write_event(
        db: sqlite3.Connection, record: EventRecord, sinks: tuple[str, ...], now: float
    ) -> None:
        # OR IGNORE: the same event stored twice (a replayed poll) stays one event.
        db.execute(
            "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.event_id,
                *record.key,
                record.event,
                record.state,
                record.body,
                record.created_at,
            ),
        )
        db.executemany(
            "INSERT OR IGNORE INTO deliveries VALUES (?, ?, 'pending', 0, ?, NULL, ?)",
            [(record.event_id, sink, now, now) for sink in sinks],
        )
        db.execute("DELETE FROM watches WHERE workspace_id = ? AND execution_id = ?", record.key)


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def query_deliveries(
    db: sqlite3.Connection, statuses: Sequence[DeliveryStatus], limit: int | None = None
) -> list[DeliveryRow]:
    """Deliveries with the given statuses and their events, oldest first."""
    marks = ", ".join("?" for _ in statuses)
    sql = (
        "SELECT d.event_id, d.sink, d.status, d.attempts, d.next_attempt_at, d.last_error, "
        "d.updated_at, e.body, e.workspace_id, e.execution_id, e.event, e.created_at "
        f"FROM deliveries d JOIN events e USING (event_id) WHERE d.status IN ({marks}) "
        "ORDER BY e.created_at, d.event_id, d.sink"
    )
    params: list[Any] = list(statuses)
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [
        DeliveryRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], (r[8], r[9]), r[10], r[11])
        for r in db.execute(sql, params)
    ]


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection for ``status``/``deliveries`` (safe while the daemon runs)."""
    if not path.exists():
        raise StoreError(f"no state file at {path} (has the daemon run with this config?)")
    try:
        conn = _connect(path, readonly=True)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read state file {path}: {exc}") from None
    if version != SCHEMA_VERSION:
        conn.close()
        raise StoreError(
            f"state file {path} has schema version {version}, expected {SCHEMA_VERSION}"
        )
    return conn
