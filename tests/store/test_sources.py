"""Watches from the API and discovery: committed before the call returns, kept by later writes.

On both backends (SQLite and PostgreSQL).
"""

from __future__ import annotations

import pytest

from tests.store.conftest import StoreFactory
from tests.store.rows import KEY, OTHER, event, watch
from watcher.store import StateStore as Store


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


async def test_added_watches_are_committed_with_their_source(
    store: Store, new_store: StoreFactory
) -> None:
    store.save_watch(watch(OTHER))  # a config watch, through the queue
    await store.add_watches([watch(KEY, state=None, polls=0)], "api")
    # Another connection sees it at once: the call returned only after the commit.
    async with new_store() as other:
        assert await other.watch_sources() == {KEY: "api"}
    assert {r.key for r in await store.load_watches()} == {KEY, OTHER}


async def test_progress_saved_later_keeps_the_source(store: Store) -> None:
    await store.add_watches([watch(KEY, state=None, polls=0)], "discover:failed")
    store.save_watch(watch(KEY, state="Running", polls=3))
    await store.flush()
    assert await store.watch_sources() == {KEY: "discover:failed"}
    assert {r.key: r.polls for r in await store.load_watches()} == {KEY: 3}


async def test_an_existing_watch_keeps_its_source_unless_taken_over(store: Store) -> None:
    store.save_watch(watch(KEY, polls=5))
    await store.flush()
    await store.add_watches([watch(KEY, state=None, polls=0)], "discover:r")
    assert await store.watch_sources() == {}  # still the config's
    await store.add_watches([watch(KEY, state=None, polls=0)], "api", take_over=True)
    assert await store.watch_sources() == {KEY: "api"}
    assert {r.key: r.polls for r in await store.load_watches()} == {KEY: 5}  # progress kept


async def test_a_reported_execution_is_not_watched_again(store: Store) -> None:
    await store.record_event(event(KEY), ["log"])
    await store.add_watches([watch(KEY, state=None, polls=0)], "api")
    assert await store.load_watches() == []


async def test_adding_again_supersedes_a_queued_forget(store: Store) -> None:
    await store.add_watches([watch(KEY)], "api")
    store.forget_watch(KEY)
    await store.add_watches([watch(KEY, state=None, polls=0)], "api")
    assert await store.watch_sources() == {KEY: "api"}


async def test_a_cursor_is_committed_with_the_watches_it_covers(
    store: Store, new_store: StoreFactory
) -> None:
    assert await store.load_cursor("failed") is None
    await store.add_watches(
        [watch(KEY, state=None, polls=0)], "discover:failed", cursor=("failed", "t=1")
    )
    async with new_store() as other:
        assert await other.load_cursor("failed") == "t=1"
        assert await other.watch_sources() == {KEY: "discover:failed"}
    await store.add_watches([], "discover:failed", cursor=("failed", "t=2"))
    assert await store.load_cursor("failed") == "t=2"
    await store.drop_cursor("failed")
    assert await store.load_cursor("failed") is None
    assert await store.watch_sources() == {KEY: "discover:failed"}  # what it found stays
