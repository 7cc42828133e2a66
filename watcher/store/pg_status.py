"""The read side of ``status`` and ``deliveries`` on a shared PostgreSQL database.

A synchronous connection whose transactions are read-only and REPEATABLE READ,
so everything ``status`` shows comes from one snapshot while the replicas
write. Lease states go by the database's clock, as the replicas' claims do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

from watcher.config.shared import SharedState
from watcher.errors import StoreError
from watcher.models import DeliveryRow, DeliveryStatus, ExecutionKey
from watcher.store.pg_schema import SCHEMA_VERSION, key_arrays, newer_error
from watcher.store.postgres import redacted
from watcher.store.readonly import EventLine, ReplicaLine, RuleLine, StatusRows, WatchLine

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg.rows import TupleRow

    Conn = Connection[TupleRow]

CONNECT_TIMEOUT_S: Final = 5


@contextlib.contextmanager
def connect(shared: SharedState) -> Iterator[Conn]:
    """A read-only connection to ``[state] url`` whose schema this release reads.

    Every driver error, connecting or reading, becomes one StoreError line
    naming the database without its password.
    """
    where = redacted(shared.url)
    try:
        import psycopg
    except ImportError:
        raise StoreError(
            f"reading state database {where} needs psycopg: pip install 'blink-watcher[postgres]'"
        ) from None
    password = None if shared.password is None else shared.password.reveal()
    kwargs: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S}
    if password is not None:
        kwargs["password"] = password
    try:
        conn = psycopg.connect(shared.url, **kwargs)
    except psycopg.Error as exc:
        raise StoreError(f"cannot reach state database {where}: {_reason(exc, password)}") from None
    try:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        _check_version(conn, where)
        conn.rollback()  # what follows reads a snapshot of its own, taken at its first query
        yield conn
    except psycopg.Error as exc:
        raise StoreError(f"state database {where}: {_reason(exc, password)}") from None
    finally:
        conn.close()


def _check_version(conn: Conn, where: str) -> None:
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    version = 0
    if row is not None and row[0]:
        found = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        version = int(found[0]) if found is not None and found[0] is not None else 0
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise newer_error(where, version)
    if version == 0:
        raise StoreError(
            f"state database {where} has no blink-watcher tables yet "
            "(has the daemon run with this config?)"
        )
    raise StoreError(
        f"state database {where} has schema version {version}, older than this "
        f"blink-watcher's ({SCHEMA_VERSION}); the daemon upgrades it on its next start"
    )


def read_status(conn: Conn, executions: Iterable[ExecutionKey], recent: int) -> StatusRows:
    """What ``status`` shows, replicas included; ``recent`` events at most."""
    watches = [
        WatchLine(*r)
        for r in conn.execute(
            "SELECT workspace_id, execution_id, state, polls, first_seen_at, changed_at, source, "
            "owner FROM watches ORDER BY first_seen_at, workspace_id, execution_id"
        )
    ]
    events = [
        EventLine(*r)
        for r in conn.execute(
            "SELECT event_id, workspace_id, execution_id, event, state, created_at FROM events "
            "ORDER BY created_at DESC LIMIT %s",
            (recent,),
        )
    ]
    rules = [
        RuleLine(*r)
        for r in conn.execute("SELECT rule, cursor, updated_at FROM cursors ORDER BY rule")
    ]
    discovering = {
        str(r[0]): int(r[1])
        for r in conn.execute(
            "SELECT source, count(*) FROM watches WHERE starts_with(source, 'discover:') "
            "GROUP BY source"
        )
    }
    counts = {
        str(r[0]): int(r[1])
        for r in conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status")
    }
    total = conn.execute("SELECT count(*) FROM reported").fetchone()
    now = conn.execute("SELECT extract(epoch FROM now())::float8").fetchone()
    return StatusRows(
        watches=watches,
        unanswered=_unreported(conn, list(executions)),
        events=events,
        rules=rules,
        discovering=discovering,
        counts=counts,
        reported_total=0 if total is None else int(total[0]),
        open_deliveries=query_deliveries(conn, ("pending", "dead")),
        replicas=replicas(conn),
        now=0.0 if now is None else float(now[0]),
    )


def replicas(conn: Conn) -> list[ReplicaLine]:
    """Every registered replica, the longest running first, with the watches it holds."""
    rows = conn.execute(
        "SELECT r.id, r.host, extract(epoch FROM r.started_at)::float8, "
        "extract(epoch FROM r.renewed_at)::float8, extract(epoch FROM r.lease_until)::float8, "
        "r.lease_until >= now(), (SELECT count(*) FROM watches w WHERE w.owner = r.id) "
        "FROM replicas r ORDER BY r.started_at, r.id"
    ).fetchall()
    return [ReplicaLine(r[0], r[1], r[2], r[3], r[4], bool(r[5]), int(r[6])) for r in rows]


def query_deliveries(conn: Conn, statuses: Sequence[DeliveryStatus]) -> list[DeliveryRow]:
    """Deliveries with the given statuses and their events, oldest first."""
    open_only = "d.status != 'delivered' AND " if "delivered" not in statuses else ""
    rows = conn.execute(
        "SELECT d.event_id, d.sink, d.status, d.attempts, d.next_attempt_at, d.last_error, "
        "d.updated_at, e.body, e.workspace_id, e.execution_id, e.event, e.created_at "
        f"FROM deliveries d JOIN events e USING (event_id) WHERE {open_only}"
        "d.status = ANY(%s) ORDER BY e.created_at, d.event_id, d.sink",
        (list(statuses),),
    ).fetchall()
    return [
        DeliveryRow(
            r[0], r[1], r[2], r[3], r[4], r[5], r[6], bytes(r[7]), (r[8], r[9]), r[10], r[11]
        )
        for r in rows
    ]


def _unreported(conn: Conn, keys: list[ExecutionKey]) -> list[ExecutionKey]:
    """Those of ``keys`` neither reported nor stored as a watch, in their order."""
    if not keys:
        return []
    rows = conn.execute(
        "SELECT k.ws, k.ex FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS k (ws, ex, n) "
        "WHERE NOT EXISTS (SELECT 1 FROM reported r "
        "WHERE r.workspace_id = k.ws AND r.execution_id = k.ex) "
        "AND NOT EXISTS (SELECT 1 FROM watches w "
        "WHERE w.workspace_id = k.ws AND w.execution_id = k.ex) ORDER BY k.n",
        key_arrays(keys),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def _reason(exc: BaseException, password: str | None) -> str:
    """The first line of a driver error, the password never in it."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text.replace(password, "***") if password else text
