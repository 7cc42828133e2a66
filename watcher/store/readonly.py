"""The read side for ``status`` and ``deliveries``: a read-only connection and its queries.

WAL mode lets these read while the daemon writes; every query here uses an
index, so a long history does not slow ``status`` down. ``StatusRows`` is what
``status`` shows as either backend returns it (``watcher.store.pg_status``
reads the same from PostgreSQL).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from watcher.errors import StoreError
from watcher.models import DeliveryRow, DeliveryStatus, ExecutionKey
from watcher.store.schema import SCHEMA_VERSION, newer_error, version_of


class WatchLine(NamedTuple):
    """A watch as ``status`` lists it; ``owner`` is the replica holding it (PostgreSQL)."""

    workspace_id: str
    execution_id: str
    state: str | None
    polls: int
    first_seen_at: float
    changed_at: float
    source: str  # config, api, or discover:RULE
    owner: str | None = None


class EventLine(NamedTuple):
    event_id: str
    workspace_id: str
    execution_id: str
    event: str
    state: str | None
    created_at: float


class RuleLine(NamedTuple):
    rule: str
    cursor: str  # the newest created_at taken in (ms), '' before the first page
    updated_at: float


@dataclass(frozen=True, slots=True)
class ReplicaLine:
    """A daemon sharing the PostgreSQL database; times are unix seconds."""

    id: str
    host: str
    started_at: float
    renewed_at: float
    lease_until: float
    live: bool  # lease_until >= the database's now()
    watches: int  # watches it holds (owner = id)


@dataclass(frozen=True, slots=True)
class StatusRows:
    """Everything ``status`` shows, as the store holds it."""

    watches: list[WatchLine]
    unanswered: list[ExecutionKey]  # configured, neither watched nor reported yet
    events: list[EventLine]  # the most recent first
    rules: list[RuleLine]
    discovering: dict[str, int]  # watches in progress per "discover:RULE" source
    counts: dict[str, int]  # deliveries per status
    reported_total: int
    open_deliveries: list[DeliveryRow]
    replicas: list[ReplicaLine] | None = None  # None: one daemon on a SQLite file
    now: float = 0.0  # the database's clock (PostgreSQL), which leases go by


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection for ``status``/``deliveries`` (safe while the daemon runs)."""
    if not path.exists():
        raise StoreError(f"no state file at {path} (has the daemon run with this config?)")
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout = 5000")
        version = version_of(conn)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read state file {path}: {exc}") from None
    if version == SCHEMA_VERSION:
        return conn
    conn.close()
    if version > SCHEMA_VERSION:
        raise newer_error(path, version)
    if version == 0:
        raise StoreError(f"state file {path} has schema version 0: it is not a state file yet")
    raise StoreError(
        f"state file {path} has schema version {version}, older than this blink-watcher's "
        f"({SCHEMA_VERSION}); the daemon upgrades it on its next start"
    )


def query_deliveries(
    db: sqlite3.Connection, statuses: Sequence[DeliveryStatus], limit: int | None = None
) -> list[DeliveryRow]:
    """Deliveries with the given statuses and their events, oldest first."""
    marks = ", ".join("?" for _ in statuses)
    # The open deliveries have a partial index (status != 'delivered'); SQLite
    # uses it only when the query spells that term out. Without it, every start
    # and reload would read every delivery kept within keep_reported.
    open_only = "d.status != 'delivered' AND " if "delivered" not in statuses else ""
    sql = (
        "SELECT d.event_id, d.sink, d.status, d.attempts, d.next_attempt_at, d.last_error, "
        "d.updated_at, e.body, e.workspace_id, e.execution_id, e.event, e.created_at "
        f"FROM deliveries d JOIN events e USING (event_id) WHERE {open_only}"
        f"d.status IN ({marks}) ORDER BY e.created_at, d.event_id, d.sink"
    )
    params: list[Any] = list(statuses)
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [
        DeliveryRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], (r[8], r[9]), r[10], r[11])
        for r in db.execute(sql, params)
    ]


def reported_total(db: sqlite3.Connection) -> int:
    """Executions ever reported, pruned ones included."""
    # A count over the compact table's primary key: about 60 ms at 1,000,000 rows.
    total: int = db.execute("SELECT count(*) FROM reported").fetchone()[0]
    return total


def unreported(db: sqlite3.Connection, keys: Iterable[ExecutionKey]) -> list[ExecutionKey]:
    """Those of ``keys`` that are neither reported nor stored as a watch: no answer yet."""
    found = []
    for key in keys:
        hit = db.execute(
            "SELECT 1 FROM reported WHERE workspace_id = ? AND execution_id = ? "
            "UNION ALL SELECT 1 FROM watches WHERE workspace_id = ? AND execution_id = ?",
            (*key, *key),
        ).fetchone()
        if hit is None:
            found.append(key)
    return found


def read_status(
    db: sqlite3.Connection, executions: Iterable[ExecutionKey], recent: int
) -> StatusRows:
    """What ``status`` shows, from a state file; ``recent`` events at most."""
    watches = [
        WatchLine(*r)
        for r in db.execute(
            "SELECT workspace_id, execution_id, state, polls, first_seen_at, changed_at, source "
            "FROM watches ORDER BY first_seen_at, workspace_id, execution_id"
        )
    ]
    events = [
        EventLine(*r)
        for r in db.execute(
            "SELECT event_id, workspace_id, execution_id, event, state, created_at FROM events "
            "ORDER BY created_at DESC LIMIT ?",
            (recent,),
        )
    ]
    discovering = dict(
        db.execute(
            "SELECT source, count(*) FROM watches WHERE source LIKE 'discover:%' GROUP BY source"
        ).fetchall()
    )
    return StatusRows(
        watches=watches,
        unanswered=unreported(db, executions),
        events=events,
        rules=[
            RuleLine(r[0], str(r[1]), r[2])
            for r in db.execute("SELECT rule, cursor, updated_at FROM cursors ORDER BY rule")
        ],
        discovering=discovering,
        counts=dict(db.execute("SELECT status, count(*) FROM deliveries GROUP BY status")),
        reported_total=reported_total(db),  # pruned events still count: they were reported
        open_deliveries=query_deliveries(db, ("pending", "dead")),
    )
