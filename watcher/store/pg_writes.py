"""One batch of queued writes to PostgreSQL (watch saves, events, delivery outcomes), as SQL.

The same rules as the SQLite batch (watcher/store/writes.py): the ``reported``
primary key decides one event per execution, whichever replica gets there
first; an event, its outbox rows and the end of its watch commit together.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from watcher.models import EventRecord, ExecutionKey, WatchRow
from watcher.store.claims import Claims

# ("event", (record, sinks, now)), ("add", (rows, source, take_over, cursor, now)) or
# ("delivery", (status, attempts, next_attempt_at, last_error, updated_at, event_id, sink)).
Op = tuple[str, Any]

UPSERT_WATCH = (
    "INSERT INTO watches (workspace_id, execution_id, state, polls, first_seen_at, "
    "changed_at, last_response) VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (workspace_id, execution_id) DO UPDATE SET "
    "state = excluded.state, polls = excluded.polls, "
    "changed_at = excluded.changed_at, last_response = excluded.last_response"
)


async def write_batch(
    conn: Any,
    watches: dict[ExecutionKey, WatchRow | None],
    ops: list[Op],
    claims: Claims | None = None,
) -> set[int]:
    """Everything queued since the last batch, in the caller's transaction.

    With ``claims`` (a replica sharing the database), an event commits only
    under a lease this replica still holds; the indexes of the ops refused so
    are returned (fencing: a replica that lost its lease commits nothing).
    """
    refused: set[int] = set()
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
    async with conn.cursor() as cur:
        if upserts:
            await cur.executemany(UPSERT_WATCH, upserts)
        removals = [key for key, row in watches.items() if row is None]
        if removals:
            await cur.executemany(
                "DELETE FROM watches WHERE workspace_id = %s AND execution_id = %s", removals
            )
        for index, (kind, args) in enumerate(ops):
            if kind == "event":
                if claims is not None and not await claims.still_held(cur, args[0].key):
                    refused.add(index)
                    continue
                await write_event(cur, *args)
            elif kind == "add":
                await add_watches(cur, *args)
            elif kind == "change":
                if claims is not None and not await claims.still_held(cur, args[0].key):
                    refused.add(index)
                    continue
                await write_change(cur, *args)
            else:
                await cur.execute(
                    "UPDATE deliveries SET status = %s, attempts = %s, next_attempt_at = %s, "
                    "last_error = %s, updated_at = %s WHERE event_id = %s AND sink = %s",
                    args,
                )
    return refused


async def write_event(cur: Any, record: EventRecord, sinks: tuple[str, ...], now: float) -> None:
    """An event, its outbox rows and the end of its watch."""
    await cur.execute(
        "INSERT INTO reported VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (*record.key, record.event_id, record.event, record.state, record.created_at),
    )
    if cur.rowcount:
        await cur.execute(
            "INSERT INTO events VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                record.event_id,
                *record.key,
                record.event,
                record.state,
                record.body,
                record.created_at,
            ),
        )
        if sinks:
            await cur.executemany(
                "INSERT INTO deliveries (event_id, sink, status, attempts, next_attempt_at, "
                "updated_at) VALUES (%s, %s, 'pending', 0, %s, %s) ON CONFLICT DO NOTHING",
                [(record.event_id, sink, now, now) for sink in sinks],
            )
    await cur.execute(
        "DELETE FROM watches WHERE workspace_id = %s AND execution_id = %s", record.key
    )


async def write_change(
    cur: Any, record: EventRecord, sinks: tuple[str, ...], now: float, watch: WatchRow
) -> None:
    """A state-change event, its outbox rows, and the watch's new state with it."""
    await cur.execute(
        "INSERT INTO events VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (record.event_id, *record.key, record.event, record.state, record.body, record.created_at),
    )
    if cur.rowcount and sinks:
        await cur.executemany(
            "INSERT INTO deliveries (event_id, sink, status, attempts, next_attempt_at, "
            "updated_at) VALUES (%s, %s, 'pending', 0, %s, %s) ON CONFLICT DO NOTHING",
            [(record.event_id, sink, now, now) for sink in sinks],
        )
    last = None if watch.last_response is None else json.dumps(watch.last_response)
    await cur.execute(
        UPSERT_WATCH,
        (*watch.key, watch.state, watch.polls, watch.first_seen_at, watch.changed_at, last),
    )


async def add_watches(
    cur: Any,
    rows: Sequence[WatchRow],
    source: str,
    take_over: bool,
    cursor: tuple[str, str] | None,
    now: float,
) -> None:
    """New watches from ``source``; a stored one keeps its progress; a reported one is skipped."""
    conflict = "DO UPDATE SET source = excluded.source" if take_over else "DO NOTHING"
    if rows:
        await cur.executemany(
            "INSERT INTO watches (workspace_id, execution_id, state, polls, first_seen_at, "
            "changed_at, last_response, source) "
            "SELECT %s, %s, %s, %s, %s, %s, NULL, %s WHERE NOT EXISTS (SELECT 1 FROM reported "
            "WHERE workspace_id = %s AND execution_id = %s) "
            f"ON CONFLICT (workspace_id, execution_id) {conflict}",
            [
                (
                    *row.key,
                    row.state,
                    row.polls,
                    row.first_seen_at,
                    row.changed_at,
                    source,
                    *row.key,
                )
                for row in rows
            ],
        )
    if cursor is not None:
        await cur.execute(
            "INSERT INTO cursors (rule, cursor, updated_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (rule) DO UPDATE SET cursor = excluded.cursor, "
            "updated_at = excluded.updated_at",
            (*cursor, now),
        )
