"""``blink-watcher status``: what the daemon watches and delivers, from its state file.

Reads through a read-only SQLite connection, so it is safe while the daemon runs.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from typing import Any, Final

from watcher.cli.deliveries import delivery_dict, delivery_table
from watcher.cli.render import Column, table
from watcher.config import Config
from watcher.errors import EX_OK
from watcher.lock import holder
from watcher.models import rfc3339
from watcher.store import open_readonly, query_deliveries, reported_total, unreported

RECENT_EVENTS: Final = 20

_WATCH_COLUMNS: Final = (
    Column("EXECUTION"),
    Column("STATE"),
    Column("POLLS"),
    Column("STATE SINCE"),
    Column("FROM"),  # config, api, or discover:RULE
)
_RULE_COLUMNS: Final = (
    Column("RULE"),
    Column("CURSOR"),
    Column("WATCHING", right=True),
    Column("LAST QUERY"),
)
_EVENT_COLUMNS: Final = (
    Column("EXECUTION"),
    Column("EVENT"),
    Column("STATE"),
    Column("OBSERVED"),
)


def collect_status(db: sqlite3.Connection, config: Config | None = None) -> dict[str, Any]:
    """Everything ``status`` shows, as JSON-able data.

    Every watch the daemon holds: those with a stored state, and the configured
    ones the API has not answered yet (new, 404 so far, or the key rejected),
    which the store does not hold because nothing about them has changed.
    """
    watches = [
        {
            "workspace_id": r[0],
            "execution_id": r[1],
            "state": r[2],
            "polls": r[3],
            "watching_since": rfc3339(r[4]),
            "state_since": rfc3339(r[5]),
            "source": r[6],
        }
        for r in db.execute(
            "SELECT workspace_id, execution_id, state, polls, first_seen_at, changed_at, source "
            "FROM watches ORDER BY first_seen_at, workspace_id, execution_id"
        )
    ]
    pending = unreported(db, config.executions) if config is not None else []
    watches += [
        {
            "workspace_id": ws,
            "execution_id": ex,
            "state": None,
            "polls": 0,
            "watching_since": None,
            "state_since": None,
            "source": "config",
            "note": "no answer yet (new, 404 so far, or the API key is rejected)",
        }
        for ws, ex in pending
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
    in_progress = dict(
        db.execute(
            "SELECT source, count(*) FROM watches WHERE source LIKE 'discover:%' GROUP BY source"
        ).fetchall()
    )
    rules = [
        {
            "rule": r[0],
            "cursor": rfc3339(int(r[1]) / 1000),
            "watching": in_progress.get(f"discover:{r[0]}", 0),
            "updated_at": rfc3339(r[2]),
            "configured": config is None or any(d.name == r[0] for d in config.discover),
        }
        for r in db.execute("SELECT rule, cursor, updated_at FROM cursors ORDER BY rule")
    ]
    counts = dict(db.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall())
    total_events = reported_total(db)  # pruned events still count: they were reported
    return {
        "daemon_pid": None if config is None else holder(config.state_path),
        "watching": watches,
        "discovery": rules,
        "events_total": total_events,
        "recent_events": events,
        "deliveries": {s: counts.get(s, 0) for s in ("pending", "delivered", "dead")},
        "open_deliveries": [delivery_dict(d) for d in query_deliveries(db, ("pending", "dead"))],
    }


def status(config: Config, *, as_json: bool) -> int:
    """Print what the daemon watches and delivers; exit 0."""
    db = open_readonly(config.state_path)
    try:
        data = collect_status(db, config)
        open_rows = query_deliveries(db, ("pending", "dead"))
    finally:
        db.close()
    if as_json:
        print(json.dumps(data, indent=2))
        return EX_OK
    out = sys.stdout
    out.write(f"state file: {config.state_path}\n")
    pid = data["daemon_pid"]
    out.write(
        "daemon: not running on this file\n\n"
        if pid is None
        else f"daemon: running (pid {pid or 'unknown'})\n\n"
    )
    unanswered = sum(1 for w in data["watching"] if w.get("note"))
    out.write(f"Watching {len(data['watching'])} execution(s)")
    out.write(f", {unanswered} with no answer yet\n" if unanswered else "\n")
    if data["watching"]:
        rows = [
            [
                f"{w['workspace_id']}/{w['execution_id']}",
                w["state"] or "no answer yet",
                str(w["polls"]),
                w["state_since"] or "-",
                w["source"],
            ]
            for w in data["watching"]
        ]
        out.write(table(_WATCH_COLUMNS, rows) + "\n")
    if data["discovery"]:
        out.write("\nDiscovery rules (cursor: the newest created_at taken in)\n")
        rows = [
            [r["rule"], r["cursor"], str(r["watching"]), r["updated_at"]] for r in data["discovery"]
        ]
        out.write(table(_RULE_COLUMNS, rows) + "\n")
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
        out.write(table(_EVENT_COLUMNS, rows) + "\n")
    d = data["deliveries"]
    out.write(
        f"\nDeliveries: {d['pending']} pending, {d['dead']} dead, {d['delivered']} delivered\n"
    )
    if open_rows:
        out.write(delivery_table(open_rows, time.time()) + "\n")
    return EX_OK
