"""Rows the store tests write: a watch, an event, and the keys they use."""

from __future__ import annotations

from watcher.models import EventRecord, ExecutionKey, WatchRow

KEY: ExecutionKey = ("ws", "ex-1")
OTHER: ExecutionKey = ("ws", "ex-2")


def watch(key: ExecutionKey = KEY, state: str | None = "Running", polls: int = 1) -> WatchRow:
    return WatchRow(key, state, polls, 100.0, 100.0 + polls, {"state": state, "display_name": "d"})


def event(
    key: ExecutionKey = KEY,
    event_id: str = "evt_1",
    body: bytes = b'{"a":1}',
    created_at: float = 200.0,
) -> EventRecord:
    return EventRecord(event_id, key, "execution.finished", "Completed", body, created_at)
