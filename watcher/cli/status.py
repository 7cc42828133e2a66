"""``blink-watcher status``: what the daemon watches and delivers, from its state store.

Reads a SQLite state file through a read-only connection, or the shared
PostgreSQL database (``[state] url``) in one read-only snapshot, so it is safe
while daemons run; on PostgreSQL it lists the replicas and who holds each watch.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Final

from watcher.cli.deliveries import delivery_dict, delivery_table
from watcher.cli.render import Column, format_ago, table, terminal_width
from watcher.config import Config
from watcher.errors import EX_OK
from watcher.lock import holder
from watcher.models import rfc3339
from watcher.store import open_readonly
from watcher.store.readonly import StatusRows, read_status

RECENT_EVENTS: Final = 20

_WATCH_COLUMNS: Final = (
    Column("EXECUTION"),
    Column("STATE"),
    Column("POLLS"),
    Column("STATE SINCE"),
    Column("FROM"),  # config, api, or discover:RULE
)
_OWNER_COLUMN: Final = Column("REPLICA", shrink=1)  # with a shared database only
_REPLICA_COLUMNS: Final = (
    Column("REPLICA", shrink=1),
    Column("HOST", shrink=2),
    Column("RENEWED"),
    Column("LEASE"),
    Column("WATCHES", right=True),
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
_NO_ANSWER: Final = "no answer yet (new, 404 so far, or the API key is rejected)"


def read_rows(config: Config) -> StatusRows:
    """What ``status`` shows, from the config's state file or shared database."""
    if config.shared_state is not None:
        from watcher.store import pg_status

        with pg_status.connect(config.shared_state) as conn:
            return pg_status.read_status(conn, config.executions, RECENT_EVENTS)
    db = open_readonly(config.state_path)
    try:
        return read_status(db, config.executions, RECENT_EVENTS)
    finally:
        db.close()


def collect_status(rows: StatusRows, config: Config | None = None) -> dict[str, Any]:
    """Everything ``status`` shows, as JSON-able data.

    Every watch the daemon holds: those with a stored state, and the configured
    ones the API has not answered yet (new, 404 so far, or the key rejected),
    which the store does not hold because nothing about them has changed.
    With a shared database, each watch names the replica holding it
    (``owner``) and ``replicas`` lists them all.
    """
    shared = rows.replicas is not None
    watches: list[dict[str, Any]] = []
    for w in rows.watches:
        watch = {
            "workspace_id": w.workspace_id,
            "execution_id": w.execution_id,
            "state": w.state,
            "polls": w.polls,
            "watching_since": rfc3339(w.first_seen_at),
            "state_since": rfc3339(w.changed_at),
            "source": w.source,
        }
        watches.append({**watch, "owner": w.owner} if shared else watch)
    for ws, ex in rows.unanswered:
        watch = {
            "workspace_id": ws,
            "execution_id": ex,
            "state": None,
            "polls": 0,
            "watching_since": None,
            "state_since": None,
            "source": "config",
        }
        watches.append({**watch, **({"owner": None} if shared else {}), "note": _NO_ANSWER})
    data: dict[str, Any] = {}
    if config is not None and config.shared_state is not None:
        from watcher.store.postgres import redacted

        data["state_database"] = redacted(config.shared_state.url)
    if rows.replicas is None:
        data["daemon_pid"] = None if config is None else holder(config.state_path)
    else:
        data["replicas"] = [
            {
                "id": r.id,
                "host": r.host,
                "started_at": rfc3339(r.started_at),
                "renewed_at": rfc3339(r.renewed_at),
                "lease_until": rfc3339(r.lease_until),
                "lease": "live" if r.live else "expired",
                "watches_held": r.watches,
            }
            for r in rows.replicas
        ]
    return {
        **data,
        "watching": watches,
        "discovery": [
            {
                "rule": r.rule,
                "cursor": rfc3339(int(r.cursor) / 1000) if r.cursor else None,
                "watching": rows.discovering.get(f"discover:{r.rule}", 0),
                "updated_at": rfc3339(r.updated_at),
                "configured": config is None or any(d.name == r.rule for d in config.discover),
            }
            for r in rows.rules
        ],
        "events_total": rows.reported_total,
        "recent_events": [
            {
                "event_id": e.event_id,
                "workspace_id": e.workspace_id,
                "execution_id": e.execution_id,
                "event": e.event,
                "state": e.state,
                "observed_at": rfc3339(e.created_at),
            }
            for e in rows.events
        ],
        "deliveries": {s: rows.counts.get(s, 0) for s in ("pending", "delivered", "dead")},
        "open_deliveries": [delivery_dict(d) for d in rows.open_deliveries],
    }


def status(config: Config, *, as_json: bool) -> int:
    """Print what the daemon watches and delivers; exit 0."""
    rows = read_rows(config)
    data = collect_status(rows, config)
    if as_json:
        print(json.dumps(data, indent=2))
        return EX_OK
    out = sys.stdout
    width = terminal_width(out)
    if rows.replicas is not None:
        out.write(f"state database: {data['state_database']}\n")
        out.write(_replica_summary(data["replicas"]) + "\n\n")
        if data["replicas"]:
            replica_rows = [
                [
                    r.id,
                    r.host,
                    format_ago(r.renewed_at, rows.now),
                    "live" if r.live else "expired",
                    str(r.watches),
                ]
                for r in rows.replicas
            ]
            out.write("Replicas\n" + table(_REPLICA_COLUMNS, replica_rows, width=width) + "\n\n")
    else:
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
        columns = _WATCH_COLUMNS + ((_OWNER_COLUMN,) if rows.replicas is not None else ())
        watch_rows = [
            [
                f"{w['workspace_id']}/{w['execution_id']}",
                w["state"] or "no answer yet",
                str(w["polls"]),
                w["state_since"] or "-",
                w["source"],
                *([w["owner"] or "-"] if rows.replicas is not None else []),
            ]
            for w in data["watching"]
        ]
        out.write(table(columns, watch_rows, width=width) + "\n")
    if data["discovery"]:
        out.write("\nDiscovery rules (cursor: the newest created_at taken in)\n")
        rule_rows = [
            [r["rule"], r["cursor"] or "-", str(r["watching"]), r["updated_at"]]
            for r in data["discovery"]
        ]
        out.write(table(_RULE_COLUMNS, rule_rows, width=width) + "\n")
    out.write(f"\nRecent events ({data['events_total']} in all)\n")
    if data["recent_events"]:
        event_rows = [
            [
                f"{e['workspace_id']}/{e['execution_id']}",
                e["event"],
                e["state"] or "-",
                e["observed_at"],
            ]
            for e in data["recent_events"]
        ]
        out.write(table(_EVENT_COLUMNS, event_rows, width=width) + "\n")
    d = data["deliveries"]
    out.write(
        f"\nDeliveries: {d['pending']} pending, {d['dead']} dead, {d['delivered']} delivered\n"
    )
    if rows.open_deliveries:
        out.write(delivery_table(rows.open_deliveries, time.time(), width) + "\n")
    return EX_OK


def _replica_summary(replicas: list[dict[str, Any]]) -> str:
    live = sum(1 for r in replicas if r["lease"] == "live")
    expired = len(replicas) - live
    if not replicas:
        return "replicas: none registered (no daemon is running on this database)"
    return f"replicas: {live} live" + (f", {expired} expired" if expired else "")
