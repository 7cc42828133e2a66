"""The PostgreSQL state store: the StateStore interface over a shared database (psycopg 3 pool).

Writes are queued and batched exactly like the SQLite store's: ``save_watch``
only queues (a poll that changed nothing writes nothing), ``record_event``
returns once its transaction committed, and a failing database keeps what
was queued and retries with backoff while ``healthy`` is False.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import structlog

from watcher.config.shared import SharedState
from watcher.errors import LeaseLostError, StoreError
from watcher.models import (
    DeliveryStatus,
    EventRecord,
    ExecutionKey,
    WatchRow,
)
from watcher.store import pg_schema
from watcher.store.base import StateStore
from watcher.store.claims import Claims
from watcher.store.pg_reads import PgReads
from watcher.store.pg_schema import key_arrays
from watcher.store.pg_writes import Op, write_batch

log = structlog.get_logger("watcher.store")
T = TypeVar("T")

_RETRY_MIN_S = 0.05
_RETRY_MAX_S = 5.0
_CLOSE_FLUSH_S = 10.0
_LOOKUP_CHUNK = 1000
_CONNECT_TIMEOUT_S = 5
# Writes queued at most before polls wait for the database (as the SQLite store's bound).
_BACKLOG_LIMIT = 2000


def redacted(url: str) -> str:
    """The URL without its password: what errors and logs may show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else host
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresStore(PgReads):
    """The shared state database. Use as an async context manager."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        pool_size: int = 4,
        claims: Claims | None = None,
    ) -> None:
        self.url = url
        self.claims = claims  # set when replicas share the database: commits are fenced
        self.where = redacted(url)
        self._password = password
        self._pool_size = pool_size
        self._pool: Any = None
        self._pending_watches: dict[ExecutionKey, WatchRow | None] = {}
        self._pending_ops: list[tuple[Op, asyncio.Future[None] | None]] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._closed = False
        self.healthy = True
        self.writes = 0
        self.pruned = 0
        self._outbox_mark = None

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
        if self._pool is not None:
            return
        import psycopg
        from psycopg_pool import AsyncConnectionPool

        # No server-side prepared statements: a pooler in transaction mode (PgBouncer
        # before 1.21, or without max_prepared_statements) cannot keep them.
        kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": None}
        if self._password is not None:
            kwargs["password"] = self._password
        kwargs.setdefault("connect_timeout", _CONNECT_TIMEOUT_S)
        # A peer gone without a word (a partition) is noticed in about 25 s, not minutes.
        kwargs.update(keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
        # A database that is down fails a request within seconds, not the pool's 30 s.
        pool = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=self._pool_size,
            kwargs=kwargs,
            open=False,
            timeout=_CONNECT_TIMEOUT_S,
        )
        try:
            await pool.open(wait=True, timeout=10.0)
            async with pool.connection() as conn:
                await pg_schema.migrate(conn, self.where)
        except psycopg.Error as exc:
            await pool.close()
            raise StoreError(f"state database {self.where}: {_reason(exc)}") from None
        except Exception as exc:
            await pool.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot reach state database {self.where}: {exc}") from None
        self._pool = pool

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pool is None:
            return
        try:
            await asyncio.wait_for(self.flush(), _CLOSE_FLUSH_S)
        except (TimeoutError, StoreError):
            log.error("store.unsaved_at_close", watches=len(self._pending_watches))
            if self._flush_task is not None:
                self._flush_task.cancel()
        finally:
            pool, self._pool = self._pool, None
            await pool.close()

    def _db(self) -> Any:
        if self._pool is None:
            raise StoreError("the store is not open")
        return self._pool

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        try:
            async with self._db().connection() as conn:
                cur = await conn.execute(sql, params)
                rows: list[tuple[Any, ...]] = await cur.fetchall()
                return rows
        except psycopg.Error as exc:
            raise StoreError(f"state database {self.where}: {_reason(exc)}") from None

    # --- writes ---------------------------------------------------------------------------

    def save_watch(self, row: WatchRow) -> None:
        self._pending_watches[row.key] = row
        self._schedule_flush()

    def forget_watch(self, key: ExecutionKey) -> None:
        self._pending_watches[key] = None
        self._schedule_flush()

    async def record_event(
        self, record: EventRecord, sinks: Sequence[str], now: float | None = None
    ) -> None:
        await self._submit(("event", (record, tuple(sinks), now or time.time())), wait=True)

    async def record_change(self, record: EventRecord, sinks: Sequence[str], row: WatchRow) -> None:
        """A state-change event with the watch's new state, in one transaction."""
        self._pending_watches.pop(row.key, None)  # this op carries the newer state
        await self._submit(("change", (record, tuple(sinks), time.time(), row)), wait=True)

    async def room(self) -> None:
        """Wait while the write backlog is over its bound (a slow database slows polling)."""
        if self.backlog() > _BACKLOG_LIMIT:
            await self.flush()

    def backlog(self) -> int:
        """Writes queued, not yet committed."""
        return len(self._pending_watches) + len(self._pending_ops)

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
        for row in rows:
            if row.key in self._pending_watches and self._pending_watches[row.key] is None:
                del self._pending_watches[row.key]
        op = ("add", (tuple(rows), source, take_over, cursor, time.time()))
        await self._submit(op, wait=True)

    async def drop_unlisted(self, listed: Sequence[ExecutionKey]) -> list[ExecutionKey]:
        """Remove config-listed watches that ``listed`` no longer has (every replica's)."""
        await self.flush()
        gone = await self._fetch(
            "DELETE FROM watches w WHERE source = 'config' AND NOT EXISTS ("
            "SELECT 1 FROM unnest(%s::text[], %s::text[]) AS k (ws, ex) "
            "WHERE k.ws = w.workspace_id AND k.ex = w.execution_id) "
            "RETURNING workspace_id, execution_id",
            key_arrays(listed),
        )
        keys = [(str(r[0]), str(r[1])) for r in gone]
        if self.claims is not None:
            for key in keys:
                self.claims.held.pop(key, None)
        return keys

    async def setting(self, name: str) -> str | None:
        rows = await self._fetch("SELECT value FROM settings WHERE name = %s", (name,))
        return None if not rows else str(rows[0][0])

    async def set_setting(self, name: str, value: str) -> None:
        await self._fetch_none(
            "INSERT INTO settings VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET value = "
            "excluded.value",
            (name, value),
        )

    async def drop_cursor(self, rule: str) -> None:
        await self.flush()
        await self._fetch_none("DELETE FROM cursors WHERE rule = %s", (rule,))

    async def retry_dead(self) -> int:
        now = time.time()
        return await self._fetch_none(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = %s, "
            "updated_at = %s, owner = NULL WHERE status = 'dead'",
            (now, now),
        )

    async def prune(self, keep_s: float, *, now: float | None = None, batch: int = 500) -> int:
        if keep_s <= 0 or batch < 1:
            raise ValueError("keep_s must be > 0 and batch >= 1")
        cutoff = (time.time() if now is None else now) - keep_s
        pruned = 0
        while True:
            gone = await self._fetch(
                "WITH old AS (SELECT e.event_id FROM events e WHERE e.created_at < %s "
                "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.event_id "
                "AND d.status != 'delivered') ORDER BY e.created_at LIMIT %s "
                "FOR UPDATE SKIP LOCKED), "
                "dd AS (DELETE FROM deliveries WHERE event_id IN (SELECT event_id FROM old)) "
                "DELETE FROM events WHERE event_id IN (SELECT event_id FROM old) "
                "RETURNING event_id",
                (cutoff, batch),
            )
            if not gone:
                break
            self.writes += 1
            self.pruned += len(gone)
            pruned += len(gone)
            await asyncio.sleep(0)
        if pruned:
            log.info("store.pruned", events=pruned, keep_reported_s=keep_s)
        return pruned

    async def using(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``work(connection)`` on a pooled connection; driver errors become StoreError."""
        import psycopg

        try:
            async with self._db().connection() as conn:
                return await work(conn)
        except (psycopg.Error, OSError) as exc:
            raise StoreError(f"state database {self.where}: {_reason(exc)}") from None

    async def _fetch_none(self, sql: str, params: Sequence[Any]) -> int:
        import psycopg

        try:
            async with self._db().connection() as conn:
                cur = await conn.execute(sql, params)
                count: int = cur.rowcount
        except psycopg.Error as exc:
            raise StoreError(f"state database {self.where}: {_reason(exc)}") from None
        self.writes += 1
        return count

    # --- the write queue ------------------------------------------------------------------

    async def _submit(self, op: Op, *, wait: bool) -> None:
        fut: asyncio.Future[None] | None = None
        if wait:
            fut = asyncio.get_running_loop().create_future()
        self._pending_ops.append((op, fut))
        self._schedule_flush()
        if fut is not None:
            await fut

    def _schedule_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            self._db()
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_loop())

    async def flush(self) -> None:
        while self._flush_task is not None and not self._flush_task.done():
            await asyncio.shield(self._flush_task)
        if (self._pending_watches or self._pending_ops) and not await self._flush_once():
            raise StoreError(f"state database {self.where}: writes are failing")

    async def _flush_loop(self) -> None:
        delay_s = _RETRY_MIN_S
        while self._pending_watches or self._pending_ops:
            if await self._flush_once():
                delay_s = _RETRY_MIN_S
                continue
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, _RETRY_MAX_S)

    async def _flush_once(self) -> bool:
        import psycopg

        watches, self._pending_watches = self._pending_watches, {}
        ops, self._pending_ops = self._pending_ops, []
        try:
            async with self._db().connection() as conn, conn.transaction():
                refused = await write_batch(conn, watches, [op for op, _ in ops], self.claims)
        except (psycopg.Error, OSError) as exc:
            err = StoreError(f"state database {self.where}: {_reason(exc)}")
            if self.healthy:
                log.error("store.write_failed", reason=str(err), action="retrying")
            self.healthy = False
            for key, row in watches.items():
                self._pending_watches.setdefault(key, row)
            kept = []
            for op, fut in ops:
                if fut is None:
                    kept.append((op, fut))
                elif not fut.done():
                    fut.set_exception(err)
            self._pending_ops[:0] = kept
            return False
        self.writes += 1
        if not self.healthy:
            log.info("store.write_recovered")
        self.healthy = True
        if self.claims is not None:
            self._settle_claims(watches, ops, refused)
        for index, (op, fut) in enumerate(ops):
            if index in refused:
                key = op[1][0].key
                if self.claims is not None:
                    self.claims.held.pop(key, None)
                log.warning("store.lease_lost", workspace_id=key[0], execution_id=key[1])
                if fut is not None and not fut.done():
                    fut.set_exception(LeaseLostError(f"lease on {key[0]}/{key[1]} was lost"))
            elif fut is not None and not fut.done():
                fut.set_result(None)
        return True

    def _settle_claims(
        self,
        watches: dict[ExecutionKey, WatchRow | None],
        ops: list[tuple[Op, asyncio.Future[None] | None]],
        refused: set[int],
    ) -> None:
        """Watches that ended or were removed are no longer held (their rows are gone)."""
        assert self.claims is not None
        held = self.claims.held
        for key, row in watches.items():
            if row is None:
                held.pop(key, None)
        for index, ((kind, args), _) in enumerate(ops):
            if kind == "event" and index not in refused:
                held.pop(args[0].key, None)


def open_shared(shared: SharedState) -> PostgresStore:
    """The store for ``[state] url`` (not yet open), with this replica's claims."""
    password = None if shared.password is None else shared.password.reveal()
    return PostgresStore(shared.url, password=password, claims=Claims(lease_s=shared.lease_s))


def _reason(exc: BaseException) -> str:
    """The first line of a driver error (never the connection string)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


if TYPE_CHECKING:

    def _meets_the_protocol(store: PostgresStore) -> StateStore:
        return store
