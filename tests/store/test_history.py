"""Bounded history: the indexed "was it reported?" lookup, short prune batches, indexed reads."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.store.rows import KEY, OTHER, event, watch
from watcher.models import DeliveryStatus, EventRecord, ExecutionKey
from watcher.store import Store, history, open_readonly, query_deliveries, reported_total
from watcher.store.schema import MIGRATIONS

DAY_S = 86400.0
KEEP_S = 7 * DAY_S
NOW = 1_800_000_000.0  # every test passes its "now": nothing depends on the clock
OLD = NOW - KEEP_S - 1.0  # just past keep_reported
SINKS = ("log", "hook")


def record(n: int, created_at: float, workspace_id: str = "ws") -> EventRecord:
    return EventRecord(
        f"evt_{workspace_id}_{n}",
        (workspace_id, f"ex-{n}"),
        "execution.finished",
        "Completed",
        b'{"n":%d}' % n,
        created_at,
    )


async def report(
    store: Store,
    rec: EventRecord,
    status: DeliveryStatus = "delivered",
    sinks: tuple[str, ...] = SINKS,
) -> None:
    """Store ``rec``; its first sink ends ``status``, the others delivered."""
    await store.record_event(rec, sinks, now=rec.created_at)
    for i, sink in enumerate(sinks):
        outcome: DeliveryStatus = status if i == 0 else "delivered"
        await store.update_delivery(rec.event_id, sink, outcome, 1, rec.created_at, None)
    await store.flush()


async def report_all(store: Store, records: list[EventRecord]) -> None:
    """Store ``records``, all delivered; queued together, so a few transactions in all."""
    await asyncio.gather(*(store.record_event(r, SINKS, now=r.created_at) for r in records))
    for r in records:
        for sink in SINKS:
            await store.update_delivery(r.event_id, sink, "delivered", 1, r.created_at, None)
    await store.flush()


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    db = open_readonly(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def total(path: Path) -> int:
    db = open_readonly(path)
    try:
        return reported_total(db)
    finally:
        db.close()


def event_ids(path: Path) -> set[str]:
    return {r[0] for r in rows(path, "SELECT event_id FROM events")}


def delivery_event_ids(path: Path) -> set[str]:
    return {r[0] for r in rows(path, "SELECT event_id FROM deliveries")}


class CountingBatches:
    """Wraps ``history.prune_batch``: counts the batches and logs them among the writes."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch, log: list[str]) -> None:
        self.calls = 0
        self.log = log
        self.on_first: Callable[[], None] | None = None
        real = history.prune_batch

        def batch(*args: Any) -> Any:
            self.calls += 1
            log.append("prune")
            if self.calls == 1 and self.on_first is not None:
                self.on_first()
            return real(*args)

        monkeypatch.setattr(history, "prune_batch", batch)


# --- reported_keys ------------------------------------------------------------------------


async def test_reported_keys_answers_only_for_the_keys_asked(store: Store) -> None:
    await store.record_event(event(KEY), ["log"])
    await store.record_event(event(("other-ws", "ex-1"), "evt_2"), ["log"])
    store.save_watch(watch(OTHER))

    assert await store.reported_keys([KEY, OTHER, ("ws", "never")]) == {KEY}
    assert await store.reported_keys([("other-ws", "ex-1"), ("other-ws", "ex-2")]) == {
        ("other-ws", "ex-1")
    }
    assert await store.reported_keys([]) == set()


async def test_reported_keys_looks_up_many_keys_in_chunks(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "LOOKUP_CHUNK", 3)
    for n in range(0, 20, 2):  # the even ones, in two workspaces
        await store.record_event(record(n, NOW, "a" if n % 4 else "b"), [])
    asked: list[ExecutionKey] = [(ws, f"ex-{n}") for n in range(20) for ws in ("a", "b")]

    found = await store.reported_keys(asked)

    assert found == {("a" if n % 4 else "b", f"ex-{n}") for n in range(0, 20, 2)}


def schema_only(path: Path) -> sqlite3.Connection:
    """A connection to a new file with the current schema and no rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    for step in MIGRATIONS:
        db.executescript(step)
    return db


def test_the_reported_lookup_is_a_primary_key_search(db_path: Path) -> None:
    db = schema_only(db_path)
    try:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT execution_id FROM reported "
            "WHERE workspace_id = ? AND execution_id IN (?, ?, ?)",
            ("ws", "a", "b", "c"),
        ).fetchall()
    finally:
        db.close()
    assert any("SEARCH reported USING PRIMARY KEY" in r[-1] for r in plan), plan


# --- pruning ------------------------------------------------------------------------------


async def test_pruning_keeps_events_with_pending_or_dead_deliveries(
    store: Store, db_path: Path
) -> None:
    await report(store, record(1, OLD), "pending")
    await report(store, record(2, OLD), "dead")
    await report(store, record(3, OLD), "delivered")

    assert await store.prune(KEEP_S, now=NOW) == 1

    assert event_ids(db_path) == {"evt_ws_1", "evt_ws_2"}
    assert rows(db_path, "SELECT event_id, sink, status FROM deliveries ORDER BY 1, 2") == [
        ("evt_ws_1", "hook", "delivered"),
        ("evt_ws_1", "log", "pending"),
        ("evt_ws_2", "hook", "delivered"),
        ("evt_ws_2", "log", "dead"),
    ]
    [pending] = await store.open_deliveries("pending")
    assert pending.body == b'{"n":1}'
    [dead] = await store.open_deliveries("dead")
    assert dead.body == b'{"n":2}'


async def test_events_younger_than_keep_reported_stay(store: Store, db_path: Path) -> None:
    await report(store, record(1, NOW - KEEP_S + 1.0))

    assert await store.prune(KEEP_S, now=NOW) == 0

    assert event_ids(db_path) == {"evt_ws_1"}
    assert delivery_event_ids(db_path) == {"evt_ws_1"}


async def test_an_event_that_went_to_no_sink_is_pruned(store: Store, db_path: Path) -> None:
    await store.record_event(record(1, OLD), [])

    assert await store.prune(KEEP_S, now=NOW) == 1
    assert event_ids(db_path) == set()


async def test_a_pruned_execution_stays_reported_and_gets_no_second_event(
    store: Store, db_path: Path
) -> None:
    rec = record(1, OLD)
    await report(store, rec)
    await store.prune(KEEP_S, now=NOW)
    assert event_ids(db_path) == set()

    assert await store.reported_keys([rec.key, OTHER]) == {rec.key}
    # Seen terminal again (say a replayed poll): nothing new is stored or sent.
    await store.record_event(rec, SINKS, now=NOW)
    assert event_ids(db_path) == set()
    assert await store.open_deliveries() == []
    assert rows(db_path, "SELECT execution_id, event_id, state FROM reported") == [
        ("ex-1", "evt_ws_1", "Completed")
    ]
    assert total(db_path) == 1


async def test_pruning_goes_in_batches_of_the_given_size(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(25):
        await report(store, record(n, OLD - n))
    batches = CountingBatches(store, monkeypatch, [])
    before = store.writes

    assert await store.prune(KEEP_S, now=NOW, batch=10) == 25

    assert store.writes - before == 3  # 10 + 10 + 5, one transaction each
    assert batches.calls == 4  # and one that found nothing left


async def test_dead_letters_at_the_front_are_read_once_per_pass(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(10):
        await report(store, record(n, OLD - 100 - n), "dead")  # the oldest: never pruned
    for n in range(10, 15):
        await report(store, record(n, OLD - n))
    batches = CountingBatches(store, monkeypatch, [])
    before = store.writes

    assert await store.prune(KEEP_S, now=NOW, batch=5) == 5

    # Two batches of dead letters, one of prunable events, one empty: the
    # cursor moves past kept events instead of reading them again.
    assert batches.calls == 4
    assert store.writes - before == 1


async def test_other_writes_go_in_between_prune_batches(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(6):
        await report(store, record(n, OLD - n))
    order: list[str] = []
    batches = CountingBatches(store, monkeypatch, order)
    real_write = store._write_batch

    def write(*args: Any) -> None:
        order.append("write")
        real_write(*args)

    store._write_batch = write  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    # A poll's save arrives while the first batch runs on the writer thread.
    batches.on_first = lambda: loop.call_soon_threadsafe(store.save_watch, watch())

    assert await store.prune(KEEP_S, now=NOW, batch=2) == 6

    assert order[:3] == ["prune", "write", "prune"]
    assert [r.key for r in await store.load_watches()] == [KEY]


async def test_nothing_to_prune_writes_nothing(store: Store) -> None:
    await report(store, record(1, NOW))
    await report(store, record(2, OLD), "dead")
    before = store.writes

    assert await store.prune(KEEP_S, now=NOW) == 0
    assert store.writes == before


async def test_prune_refuses_a_keep_that_would_drop_everything(store: Store) -> None:
    with pytest.raises(ValueError, match="keep_s"):
        await store.prune(0.0, now=NOW)


async def test_the_history_stays_within_keep_reported(store: Store, db_path: Path) -> None:
    # 2,000 executions reported one a minute; pruned as the daemon would, now and then.
    step_s = 60.0
    keep_s = 100 * step_s
    start = NOW - 2000 * step_s
    for first in range(0, 2000, 500):
        await report_all(store, [record(n, start + n * step_s) for n in range(first, first + 500)])
        await store.prune(keep_s, now=start + (first + 499) * step_s, batch=64)
    now = start + 1999 * step_s
    await store.prune(keep_s, now=now, batch=64)

    kept = {f"evt_ws_{n}" for n in range(2000) if start + n * step_s >= now - keep_s}
    assert len(kept) == 101
    assert event_ids(db_path) == kept
    assert delivery_event_ids(db_path) == kept
    assert rows(db_path, "SELECT count(*) FROM deliveries") == [(2 * len(kept),)]
    # What stays of the others is one compact row each: never watched or reported again.
    assert total(db_path) == 2000
    everything = [("ws", f"ex-{n}") for n in range(2000)]
    assert await store.reported_keys(everything) == set(everything)


# --- readers ------------------------------------------------------------------------------


@pytest.mark.parametrize("statuses", [("pending",), ("dead",), ("pending", "dead")])
def test_open_deliveries_are_read_through_their_index(
    db_path: Path, statuses: tuple[DeliveryStatus, ...]
) -> None:
    # Start-up, reload and status read the open deliveries: never all of them.
    db = schema_only(db_path)
    try:
        statements: list[str] = []
        db.set_trace_callback(statements.append)
        query_deliveries(db, statuses)
        db.set_trace_callback(None)
        [sql] = statements
        plan = [r[-1] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}")]
    finally:
        db.close()
    assert any("INDEX deliveries_open" in step for step in plan), plan
    assert not any(step.startswith("SCAN d") for step in plan), plan
