"""The write backlog is bounded: savers wait while the writer is behind, go on once it drains."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.store.rows import watch
from tests.waiting import settle, until
from watcher.models import ExecutionKey
from watcher.store import Store
from watcher.store.queue import WriteQueue, pending_watch

LIMIT = 3


class BlockedWriter:
    """Holds the writer thread inside its first batch until ``release()``."""

    def __init__(self, store: Store) -> None:
        self.entered = threading.Event()
        self._gate = threading.Event()
        self.batches: list[int] = []
        self._real = store._write_batch
        store._write_batch = self  # type: ignore[method-assign]

    def __call__(self, db: object, watches: dict[ExecutionKey, object], ops: list[object]) -> None:
        self.entered.set()
        self._gate.wait(15.0)
        self.batches.append(len(watches))
        self._real(db, watches, ops)  # type: ignore[arg-type]

    def release(self) -> None:
        self._gate.set()


@pytest.fixture
async def small(db_path: Path) -> AsyncIterator[Store]:
    async with Store(db_path, backlog_limit=LIMIT) as s:
        yield s


def key(n: int) -> ExecutionKey:
    return ("ws", f"ex-{n}")


async def save(store: Store, n: int) -> None:
    """What the scheduler does on a state change: queue the save, then wait for room."""
    store.save_watch(watch(key(n)))
    await store.room()


async def test_room_is_free_while_the_backlog_is_within_its_bound(small: Store) -> None:
    writer = BlockedWriter(small)
    for n in range(LIMIT):
        await asyncio.wait_for(save(small, n), 5)  # never waits: within the bound
    assert small.backlog() == LIMIT
    writer.release()
    await small.flush()
    assert small.backlog() == 0


async def test_the_save_past_the_bound_waits_until_the_writer_drains(small: Store) -> None:
    writer = BlockedWriter(small)
    for n in range(LIMIT):
        await save(small, n)
    await until(writer.entered.is_set, what="the writer thread to take the first batch")

    over = asyncio.create_task(save(small, LIMIT))
    await settle()
    assert not over.done()  # LIMIT writes in flight: the next saver is held back
    assert small.backlog() == LIMIT + 1  # its row is queued, it waits for room

    writer.release()
    await asyncio.wait_for(over, 15)
    await small.flush()
    assert len(await small.load_watches()) == LIMIT + 1  # nothing was lost by waiting
    assert writer.batches[0] == LIMIT  # the held saves went into the next batch


async def test_many_savers_never_hold_more_than_the_bound_plus_one_each(small: Store) -> None:
    writer = BlockedWriter(small)
    savers = [asyncio.create_task(save(small, n)) for n in range(20)]
    await until(writer.entered.is_set, what="the first batch to start")
    await settle()
    waiting = sum(not t.done() for t in savers)
    # Each saver queues one row and then waits: the backlog is the bound plus
    # the savers held back, never a growing queue behind one of them.
    assert small.backlog() <= LIMIT + waiting
    assert waiting >= 20 - LIMIT
    writer.release()
    await asyncio.wait_for(asyncio.gather(*savers), 15)
    await small.flush()
    assert small.backlog() == 0
    assert len(await small.load_watches()) == 20


async def test_closing_releases_savers_waiting_for_room(db_path: Path) -> None:
    store = Store(db_path, backlog_limit=1)
    await store.open()
    writer = BlockedWriter(store)
    await save(store, 0)
    await until(writer.entered.is_set, what="the writer thread to take the first batch")
    waiting = asyncio.create_task(save(store, 1))
    await settle()
    assert not waiting.done()
    writer.release()
    await store.close()
    await asyncio.wait_for(waiting, 15)


def test_a_queued_save_holds_json_text_not_the_parsed_response() -> None:
    row = pending_watch(watch(key(1)))
    assert row[:6] == ("ws", "ex-1", "Running", 1, 100.0, 101.0)
    assert row[6] == '{"state":"Running","display_name":"d"}'
    assert pending_watch(replace(watch(key(1)), last_response=None))[6] is None


def test_a_bound_below_one_is_refused() -> None:
    async def writer(*_: object) -> None:
        return None

    with pytest.raises(ValueError, match="limit"):
        WriteQueue(writer, check_open=lambda: None, limit=0)
