"""``status`` and ``deliveries``: read the state store and print it for people or scripts.

Reads through a read-only SQLite connection, so it is safe while the daemon runs.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from typing import Any

from watcher.config import Config
from watcher.models import DeliveryRow, rfc3339
from watcher.store import Store, open_readonly, query_deliveries, reported_total

RECENT_EVENTS = 20


def _ago(epoch_s: float | None, now: float) -> str:
    if epoch_s is None:
        return "-"
    seconds = max(0.0, now - epoch_s)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _delivery_dict(d: DeliveryRow) -> dict[str, Any]:
    return {
        "event_id": d.event_id,
        "execution_id": d.key[1] if d.key else None,
        "workspace_id": d.key[0] if d.key else None,
        "event": d.event,
        "sink": d.sink,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": rfc3339(d.next_attempt_at) if d.status == "pending" else None,
        "last_error": d.last_error,
        "updated_at": rfc3339(d.updated_at),
    }


def _delivery_rows(items: list[DeliveryRow], now: float) -> list[list[str]]:
    return [
        [
            f"{d.key[0]}/{d.key[1]}" if d.key else "?",
            d.sink,
            d.status,
            str(d.attempts),
            _ago(d.updated_at, now),
            (d.last_error or "")[:80],
        ]
        for d in items
    ]


def collect_status(db: sqlite3.Connection) -> dict[str, Any]:
    """Everything ``status`` shows, as JSON-able data."""
    watches = [
        {
            "workspace_id": r[0],
            "execution_id": r[1],
            "state": r[2],
            "polls": r[3],
            "watching_since": rfc3339(r[4]),
            "state_since": rfc3339(r[5]),
        }
        for r in db.execute(
            "SELECT workspace_id, execution_id, state, polls, first_seen_at, changed_at "
            "FROM watches ORDER BY first_seen_at, workspace_id, execution_id"
        )
    ]
    events = [
        {
            "event_id": r[0],
            "workspace_id": r[1],
            "execution_id": r[2],
            "event": r[3],
            "state": r[4],
            "observed_at": rfc3339(r[5]),
        }
        for r in db.execute(
            "SELECT event_id, workspace_id, execution_id, event, state, created_at FROM events "
            "ORDER BY created_at DESC LIMIT ?",
            (RECENT_EVENTS,),
        )
    ]
    counts = dict(db.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall())
    total_events = reported_total(db)  # pruned events still count: they were reported
    return {
        "watching": watches,
        "events_total": total_events,
        "recent_events": events,
        "deliveries": {s: counts.get(s, 0) for s in ("pending", "delivered", "dead")},
        "open_deliveries": [_delivery_dict(d) for d in query_deliveries(db, ("pending", "dead"))],
    }


def status(config: Config, *, as_json: bool) -> int:
    """Print what the daemon watches and delivers; exit 0."""
    db = open_readonly(config.state_path)
    try:
        data = collect_status(db)
        open_rows = query_deliveries(db, ("pending", "dead"))
    finally:
        db.close()
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    now = time.time()
    out = sys.stdout
    out.write(f"state file: {config.state_path}\n\n")
    out.write(f"Watching {len(data['watching'])} execution(s)\n")
    if data["watching"]:
        rows = [
            [
                f"{w['workspace_id']}/{w['execution_id']}",
                w["state"] or "-",
                str(w["polls"]),
                w["state_since"],
            ]
            for w in data["watching"]
        ]
        out.write(_table(["EXECUTION", "STATE", "POLLS", "STATE SINCE"], rows) + "\n")
    out.write(f"\nRecent events ({data['events_total']} in all)\n")
    if data["recent_events"]:
        rows = [
            [
                f"{e['workspace_id']}/{e['execution_id']}",
                e["event"],
                e["state"] or "-",
                e["observed_at"],
            ]
            for e in data["recent_events"]
        ]
        out.write(_table(["EXECUTION", "EVENT", "STATE", "OBSERVED"], rows) + "\n")
    d = data["deliveries"]
    out.write(
        f"\nDeliveries: {d['pending']} pending, {d['dead']} dead, {d['delivered']} delivered\n"
    )
    if open_rows:
        out.write(
            _table(
                ["EXECUTION", "SINK", "STATUS", "ATTEMPTS", "UPDATED", "LAST ERROR"],
                _delivery_rows(open_rows, now),
            )
            + "\n"
        )
    return 0


def deliveries(config: Config, *, retry_dead: bool, as_json: bool) -> int:
    """List pending and dead deliveries; ``retry_dead`` queues dead letters again."""
    if retry_dead:

        async def requeue() -> int:
            async with Store(config.state_path) as store:
                return await store.retry_dead()

        count = asyncio.run(requeue())
        print(
            f"queued {count} dead letter(s) again; a running daemon picks them up on reload "
            "(systemctl reload blink-watcher), otherwise at the next start",
            file=sys.stderr,
        )
    db = open_readonly(config.state_path)
    try:
        items = query_deliveries(db, ("pending", "dead"))
    finally:
        db.close()
    if as_json:
        print(json.dumps([_delivery_dict(d) for d in items], indent=2))
    elif items:
        print(
            _table(
                ["EXECUTION", "SINK", "STATUS", "ATTEMPTS", "UPDATED", "LAST ERROR"],
                _delivery_rows(items, time.time()),
            )
        )
    else:
        print("no pending or dead-lettered deliveries")
    return 0
