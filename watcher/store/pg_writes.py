"""One batch of queued writes to PostgreSQL (watch saves, events, delivery outcomes), as SQL.

The same rules as the SQLite batch (watcher/store/writes.py): the ``reported``
primary key decides one event per execution, whichever replica gets there
first; an event, its outbox rows and the end of its watch commit together.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from watcher.models import EventRecord, ExecutionKey, WatchRow
from watcher.store.claims import LIVE, Claims

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


# With replicas: a watch's progress is saved only by the replica holding it.
UPDATE_HELD_WATCH = (
    "UPDATE watches SET state = %s, polls = %s, changed_at = %s, last_response = %s "
    "WHERE workspace_id = %s AND execution_id = %s AND owner = %s AND fence = %s"
)


async def write_batch(
    conn: Any,
    watches: dict[ExecutionKey, WatchRow | None],
    ops: list[Op],
    claims: Claims | None = None,
) -> set[int]:
    """Everything queued since the last batch, in the caller's transaction.

    With ``claims`` (a replica sharing the database), a watch's progress is
    saved and its event committed only under a claim this replica still holds;
    the indexes of the events refused so are returned (fencing: a replica that
    lost its lease commits nothing). Delivery outcomes the database refused
    (the delivery was taken over) are added to ``claims.lost_deliveries``.
    """
    refused: set[int] = set()
    saved = [row for row in watches.values() if row is not None]
    async with conn.cursor() as cur:
        if saved and claims is None:
            await cur.executemany(UPSERT_WATCH, [_upsert_args(row) for row in saved])
        elif saved and claims is not None:
            held = [row for row in saved if row.key in claims.held]
            if held:
                await cur.executemany(
                    UPDATE_HELD_WATCH,
                    [(r.state, r.polls, r.changed_at, _response(r), *r.key,
                      claims.me, claims.held[r.key]) for r in held],
                )  # fmt: skip
        removals = [key for key, row in watches.items() if row is None]
        if removals:
            await cur.executemany(
                "DELETE FROM watches WHERE workspace_id = %s AND execution_id = %s", removals
            )
        for index, (kind, args) in enumerate(ops):
            if kind == "event":
                if not await write_event(cur, *args, claims=claims):
                    refused.add(index)
            elif kind == "add":
                inserted = await add_watches(cur, *args, claims=claims)
                if claims is not None:
                    claims.held.update(dict.fromkeys(inserted, 1))
            elif kind == "change":
                if not await write_change(cur, *args, claims=claims):
                    refused.add(index)
            elif claims is None:
                await cur.execute(
                    "UPDATE deliveries SET status = %s, attempts = %s, next_attempt_at = %s, "
                    "last_error = %s, updated_at = %s WHERE event_id = %s AND sink = %s",
                    args,
                )
            else:
                await cur.execute(
                    "UPDATE deliveries SET status = %s, attempts = %s, next_attempt_at = %s, "
                    "last_error = %s, updated_at = %s WHERE event_id = %s AND sink = %s "
                    "AND owner = %s",
                    (*args, claims.me),
                )
                if not cur.rowcount:
                    claims.lost_deliveries.add((args[5], args[6]))
    return refused


def _response(row: WatchRow) -> str | None:
    return None if row.last_response is None else json.dumps(row.last_response)


def _upsert_args(row: WatchRow) -> tuple[Any, ...]:
    return (*row.key, row.state, row.polls, row.first_seen_at, row.changed_at, _response(row))


# The event and its outbox rows; for an ending, first the one ``reported`` row per
# execution: a second event for it (another replica's, a retry's) inserts nothing.
# One statement, one round trip: each data-modifying CTE writes its own table.
_EVENT_AND_OUTBOX = """
ev AS (
    INSERT INTO events
    SELECT %(id)s, %(ws)s, %(ex)s, %(event)s, %(state)s, %(body)s, %(at)s
    {only_if} ON CONFLICT DO NOTHING RETURNING event_id
)
INSERT INTO deliveries (event_id, sink, status, attempts, next_attempt_at, updated_at, owner)
SELECT ev.event_id, s, 'pending', 0, %(now)s, %(now)s, %(owner)s
FROM ev, unnest(%(sinks)s::text[]) AS s
ON CONFLICT DO NOTHING
"""
RECORD_ENDING: Final = (
    "WITH rep AS (INSERT INTO reported VALUES (%(ws)s, %(ex)s, %(id)s, %(event)s, %(state)s, "
    "%(at)s) ON CONFLICT DO NOTHING RETURNING 1), "
    + _EVENT_AND_OUTBOX.format(only_if="WHERE EXISTS (SELECT 1 FROM rep)")
)
RECORD_CHANGE: Final = "WITH " + _EVENT_AND_OUTBOX.format(only_if="")

# With replicas, the watch row is changed only under a claim this replica still
# holds (owner, fence, a live lease), and changing it locks it until the commit.
_HELD = (
    "workspace_id = %(ws)s AND execution_id = %(ex)s AND owner = %(me)s AND fence = %(fence)s "
    f"AND {LIVE}"
)
END_HELD_WATCH: Final = f"DELETE FROM watches WHERE {_HELD} RETURNING 1"
CHANGE_HELD_WATCH: Final = (
    "UPDATE watches SET state = %(new_state)s, polls = %(polls)s, changed_at = %(changed)s, "
    f"last_response = %(response)s WHERE {_HELD} RETURNING 1"
)


def _event_params(
    record: EventRecord, sinks: tuple[str, ...], now: float, claims: Claims | None
) -> dict[str, Any]:
    ws, ex = record.key
    return {
        "ws": ws,
        "ex": ex,
        "id": record.event_id,
        "event": record.event,
        "state": record.state,
        "body": record.body,
        "at": record.created_at,
        "now": now,
        "sinks": list(sinks),
        "owner": None if claims is None else claims.me,
        "me": None if claims is None else claims.me,
        "fence": None if claims is None else claims.held.get(record.key),
    }


async def write_event(
    cur: Any,
    record: EventRecord,
    sinks: tuple[str, ...],
    now: float,
    *,
    claims: Claims | None = None,
) -> bool:
    """An event, its outbox rows and the end of its watch; False if the claim was lost."""
    params = _event_params(record, sinks, now, claims)
    if claims is None:
        await cur.execute(
            "DELETE FROM watches WHERE workspace_id = %(ws)s AND execution_id = %(ex)s", params
        )
    else:
        if params["fence"] is None:
            return False
        await cur.execute(END_HELD_WATCH, params)
        if await cur.fetchone() is None:
            return False  # taken over (or removed): the holder produces the event
    await cur.execute(RECORD_ENDING, params)
    return True


async def write_change(
    cur: Any,
    record: EventRecord,
    sinks: tuple[str, ...],
    now: float,
    watch: WatchRow,
    *,
    claims: Claims | None = None,
) -> bool:
    """A state-change event, its outbox rows, and the watch's new state; False if lost."""
    params = _event_params(record, sinks, now, claims)
    if claims is None:
        await cur.execute(UPSERT_WATCH, _upsert_args(watch))
    else:
        if params["fence"] is None:
            return False
        params.update(
            new_state=watch.state,
            polls=watch.polls,
            changed=watch.changed_at,
            response=_response(watch),
        )
        await cur.execute(CHANGE_HELD_WATCH, params)
        if await cur.fetchone() is None:
            return False
    await cur.execute(RECORD_CHANGE, params)
    return True


ADD_WATCHES = """
INSERT INTO watches (workspace_id, execution_id, state, polls, first_seen_at, changed_at,
                     last_response, source, owner, fence)
SELECT k.ws, k.ex, k.state, k.polls, k.first_seen, k.changed, NULL, %(source)s, %(owner)s,
       CASE WHEN %(owner)s::text IS NULL THEN 0 ELSE 1 END
FROM unnest(%(ws)s::text[], %(ex)s::text[], %(state)s::text[], %(polls)s::int[],
            %(first_seen)s::float8[], %(changed)s::float8[])
     AS k (ws, ex, state, polls, first_seen, changed)
WHERE NOT EXISTS (SELECT 1 FROM reported r WHERE r.workspace_id = k.ws AND r.execution_id = k.ex)
{only_new}
ON CONFLICT (workspace_id, execution_id) {conflict}
RETURNING workspace_id, execution_id, (xmax = 0) AS inserted
"""


ONLY_NEW: Final = (
    "AND NOT EXISTS (SELECT 1 FROM watches w WHERE w.workspace_id = k.ws AND w.execution_id = k.ex)"
)


async def add_watches(
    cur: Any,
    rows: Sequence[WatchRow],
    source: str,
    take_over: bool,
    cursor: tuple[str, str] | None,
    now: float,
    *,
    claims: Claims | None = None,
) -> list[ExecutionKey]:
    """New watches from ``source``; a stored one keeps its progress; a reported one is skipped.

    With ``claims``, a new watch is held by this replica from the start (its
    first poll is right away, here); the keys inserted are returned.
    """
    conflict = "DO UPDATE SET source = excluded.source" if take_over else "DO NOTHING"
    inserted: list[ExecutionKey] = []
    if rows:
        await cur.execute(
            # Stored ones are left out before inserting (an anti-join, not a conflict
            # per row); ON CONFLICT still settles a race with another replica.
            ADD_WATCHES.format(conflict=conflict, only_new="" if take_over else ONLY_NEW),
            {
                "source": source,
                "owner": None if claims is None else claims.me,
                "ws": [r.key[0] for r in rows],
                "ex": [r.key[1] for r in rows],
                "state": [r.state for r in rows],
                "polls": [r.polls for r in rows],
                "first_seen": [r.first_seen_at for r in rows],
                "changed": [r.changed_at for r in rows],
            },
        )
        inserted = [(ws, ex) for ws, ex, new in await cur.fetchall() if new]
    if cursor is not None:
        # A replica moves a rule's cursor only while it holds the rule (or nobody does).
        await cur.execute(
            "INSERT INTO cursors (rule, cursor, updated_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (rule) DO UPDATE SET cursor = excluded.cursor, "
            "updated_at = excluded.updated_at "
            "WHERE cursors.owner IS NULL OR cursors.owner = %s",
            (*cursor, now, None if claims is None else claims.me),
        )
    return inserted
