"""The store's small reads, as plain functions on a connection run on the writer thread."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from watcher.models import ExecutionKey, WatchRow


def all_watches(db: sqlite3.Connection) -> list[WatchRow]:
    """Every watch in progress (one with no event yet)."""
    rows = db.execute(
        "SELECT workspace_id, execution_id, state, polls, first_seen_at, changed_at FROM watches"
    ).fetchall()
    return [WatchRow((r[0], r[1]), r[2], r[3], r[4], r[5]) for r in rows]


def last_response(db: sqlite3.Connection, key: ExecutionKey) -> dict[str, Any] | None:
    """The API response stored with a watch's last state change."""
    row = db.execute(
        "SELECT last_response FROM watches WHERE workspace_id = ? AND execution_id = ?", key
    ).fetchone()
    if row is None or row[0] is None:
        return None
    value = json.loads(row[0])
    return value if isinstance(value, dict) else None


def dead_letters(db: sqlite3.Connection) -> dict[str, int]:
    """Dead-lettered deliveries per sink (through the open-deliveries index)."""
    rows = db.execute(
        "SELECT sink, count(*) FROM deliveries WHERE status = 'dead' GROUP BY sink"
    ).fetchall()
    return {sink: count for sink, count in rows}


def watch_sources(db: sqlite3.Connection) -> dict[ExecutionKey, str]:
    """The source of every watch in progress that the config did not list."""
    rows = db.execute(
        "SELECT workspace_id, execution_id, source FROM watches WHERE source != 'config'"
    ).fetchall()
    return {(r[0], r[1]): r[2] for r in rows}


def cursor(db: sqlite3.Connection, rule: str) -> str | None:
    """A discovery rule's stored cursor, or None before its first page."""
    row = db.execute("SELECT cursor FROM cursors WHERE rule = ?", (rule,)).fetchone()
    return None if row is None else str(row[0])
