"""What the daemon relies on from any store (watcher/store/base.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from tests.store.conftest import StoreFactory
from tests.store.rows import KEY, OTHER, event, watch
from watcher.store import StateStore


async def test_progress_is_saved_and_resumed(
    any_store: StateStore, new_store: StoreFactory
) -> None:
    any_store.save_watch(watch(KEY, polls=1))
    any_store.save_watch(watch(KEY, polls=4))  # a later save replaces the queued one
    any_store.save_watch(watch(OTHER))
    await any_store.flush()
    async with new_store() as other:
        assert {r.key: r.polls for r in await other.load_watches()} == {KEY: 4, OTHER: 1}
        batches = [b async for b in other.watch_batches(size=1)]
        assert [len(b) for b in batches] == [1, 1]
        assert await other.last_response(KEY) == {"state": "Running", "display_name": "d"}


async def test_an_unchanged_poll_writes_nothing(any_store: StateStore) -> None:
    any_store.save_watch(watch(KEY))
    await any_store.flush()
    before = any_store.writes
    await any_store.flush()
    await any_store.load_watches()
    assert any_store.writes == before


async def test_an_event_is_durable_with_its_outbox_and_ends_its_watch(
    any_store: StateStore, new_store: StoreFactory
) -> None:
    any_store.save_watch(watch(KEY))
    await any_store.record_event(event(KEY), ["log", "hook"], now=300.0)
    async with new_store() as other:  # committed when record_event returned
        assert await other.load_watches() == []
        pending = await other.open_deliveries()
        assert sorted(d.sink for d in pending) == ["hook", "log"]
        assert {d.body for d in pending} == {b'{"a":1}'}
        assert await other.reported_keys([KEY, OTHER]) == {KEY}


async def test_one_event_per_execution_even_when_two_stores_race(
    any_store: StateStore, new_store: StoreFactory
) -> None:
    async with new_store() as other:
        await asyncio.gather(
            any_store.record_event(event(KEY, "evt_a"), ["hook"]),
            other.record_event(event(KEY, "evt_b"), ["hook"]),
        )
    pending = await any_store.open_deliveries()
    assert len(pending) == 1
    assert pending[0].event_id in {"evt_a", "evt_b"}


async def test_delivery_outcomes_dead_letters_and_retry(any_store: StateStore) -> None:
    await any_store.record_event(event(KEY, "evt_1"), ["a", "b"])
    await any_store.update_delivery("evt_1", "a", "delivered", 1, 0.0, None)
    await any_store.update_delivery("evt_1", "b", "dead", 5, 0.0, "HTTP 500", wait=True)
    assert await any_store.open_deliveries() == []
    dead = await any_store.open_deliveries("dead")
    assert [(d.sink, d.attempts, d.last_error) for d in dead] == [("b", 5, "HTTP 500")]
    assert await any_store.dead_letters() == {"b": 1}
    assert await any_store.retry_dead() == 1
    assert [d.sink for d in await any_store.open_deliveries()] == ["b"]


async def test_pruning_keeps_the_execution_reported(any_store: StateStore) -> None:
    await any_store.record_event(event(KEY, "evt_1", created_at=100.0), ["a"])
    await any_store.record_event(event(OTHER, "evt_2", created_at=100.0), ["a"])
    await any_store.update_delivery("evt_1", "a", "delivered", 1, 0.0, None, wait=True)
    assert await any_store.prune(50.0, now=1000.0) == 1  # evt_2 still pending: kept
    assert await any_store.reported_keys([KEY, OTHER]) == {KEY, OTHER}
    await any_store.record_event(event(KEY, "evt_3"), ["a"])  # reported: nothing new
    assert [d.event_id for d in await any_store.open_deliveries()] == ["evt_2"]


async def test_closing_flushes_and_twice_is_harmless(new_store: StoreFactory) -> None:
    store = new_store()
    await store.open()
    store.save_watch(watch(KEY))
    await store.close()
    await store.close()
    async with new_store() as other:
        assert [r.key for r in await other.load_watches()] == [KEY]


async def test_many_concurrent_events_all_commit(any_store: StateStore) -> None:
    n = 20
    await asyncio.gather(
        *(any_store.record_event(event(("ws", f"e{i}"), f"evt_{i}"), ["a"]) for i in range(n))
    )
    assert len(await any_store.open_deliveries()) == n
