"""One batch of queued writes (watch saves, events, delivery outcomes) as one transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, TypeAlias

from watcher.models import EventRecord, ExecutionKey, WatchRow

# ("event", (record, sinks, now)), ("change", (record, sinks, now, watch)),
# ("add", (rows, source, take_over, cursor, now)) or
# ("delivery", (status, attempts, next_attempt_at, last_error, updated_at, event_id,
# sink)), in the order they were queued.
Op = tuple[str, Any]

# A queued watch save, compact: (workspace_id, execution_id, state, polls, first_seen_at,
# changed_at, last_response as JSON text), the columns in the order the upsert binds them.
PendingWatch: TypeAlias = tuple[str, str, str | None, int, float, float, str | None]


class transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def write_batch(
    db: sqlite3.Connection, watches: dict[ExecutionKey, PendingWatch | None], ops: list[Op]
) -> None:
    """Everything queued since the last batch, as one transaction."""
    with transaction(db):
        upserts = [row for row in watches.values() if row is not None]
        if upserts:
            db.executemany(
                "INSERT INTO watches (workspace_id, execution_id, state, polls, first_seen_at, "
                "changed_at, last_response) VALUES (?, ?, ?, ?, ?, ?, ?) "
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
                write_event(db, *args)
            elif kind == "add":
                add_watches(db, *args)
            elif kind == "change":
                write_change(db, *args)
            else:
                db.execute(
                    "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?, "
                    "last_error = ?, updated_at = ? WHERE event_id = ? AND sink = ?",
                    args,
                )


def write_event(
    db: sqlite3.Connection, record: EventRecord, sinks: tuple[str, ...], now: float
) -> None:
    """An event, its outbox rows and the end of its watch."""
    # The reported row decides: an execution reported before (a replayed poll,
    # or an event long since pruned) gets no second event and no new deliveries.
    first = db.execute(
        "INSERT OR IGNORE INTO reported VALUES (?, ?, ?, ?, ?, ?)",
        (*record.key, record.event_id, record.event, record.state, record.created_at),
    ).rowcount
    if first:
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


def write_change(
    db: sqlite3.Connection,
    record: EventRecord,
    sinks: tuple[str, ...],
    now: float,
    watch: PendingWatch,
) -> None:
    """A state-change event, its outbox rows, and the watch's new state with it."""
    added = db.execute(
        "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
        (record.event_id, *record.key, record.event, record.state, record.body, record.created_at),
    ).rowcount
    if added:
        db.executemany(
            "INSERT OR IGNORE INTO deliveries VALUES (?, ?, 'pending', 0, ?, NULL, ?)",
            [(record.event_id, sink, now, now) for sink in sinks],
        )
    db.execute(
        "INSERT INTO watches (workspace_id, execution_id, state, polls, first_seen_at, "
        "changed_at, last_response) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (workspace_id, execution_id) DO UPDATE SET "
        "state = excluded.state, polls = excluded.polls, "
        "changed_at = excluded.changed_at, last_response = excluded.last_response",
        watch,
    )


def add_watches(
    db: sqlite3.Connection,
    rows: Sequence[WatchRow],
    source: str,
    take_over: bool,
    cursor: tuple[str, str] | None,
    now: float,
) -> None:
    """New watches from ``source``, and optionally a discovery rule's cursor with them.

    A watch already stored keeps its progress; with ``take_over`` it takes
    ``source`` too. An execution already reported is not watched again.
    """
    conflict = "DO UPDATE SET source = excluded.source" if take_over else "DO NOTHING"
    db.executemany(
        "INSERT INTO watches (workspace_id, execution_id, state, polls, first_seen_at, "
        "changed_at, last_response, source) "
        "SELECT ?, ?, ?, ?, ?, ?, NULL, ? WHERE NOT EXISTS (SELECT 1 FROM reported "
        "WHERE workspace_id = ? AND execution_id = ?) "
        f"ON CONFLICT (workspace_id, execution_id) {conflict}",
        [
            (*row.key, row.state, row.polls, row.first_seen_at, row.changed_at, source, *row.key)
            for row in rows
        ],
    )
    if cursor is not None:
        db.execute(
            "INSERT INTO cursors VALUES (?, ?, ?) "
            "ON CONFLICT (rule) DO UPDATE SET cursor = excluded.cursor, "
            "updated_at = excluded.updated_at",
            (*cursor, now),
        )
