"""A replica's rounds on a real PostgreSQL: fair shares, a lost lease, a database gone too long."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.pg import pg_server, pg_url
from tests.test_scheduler import FAST, FakeClient, FakeStore, Recorder
from tests.waiting import until
from watcher.config.shared import SharedState
from watcher.delivery import Outbox
from watcher.errors import StoreError
from watcher.metrics import Metrics
from watcher.models import WatchRow
from watcher.replica import Replica
from watcher.scheduler import Scheduler
from watcher.store.claims import Claims
from watcher.store.postgres import PostgresStore

__all__ = ["pg_server", "pg_url"]

psycopg = pytest.importorskip("psycopg")

LEASE_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(pg_url) as plain:  # stored free, as the watch API leaves them
        rows = [WatchRow(("ws", f"ex-{n}"), None, 0, 1.0, 1.0) for n in range(100)]
        await plain.add_watches(rows, "api")
    async with PostgresStore(pg_url, claims=Claims(lease_s=LEASE_S)) as s:
        yield s


def replica(store: PostgresStore, clock: Clock) -> Replica:
    scheduler = Scheduler(FAST, FakeClient(None), FakeStore(), Recorder(), concurrency=1)
    return Replica(
        store,
        SharedState("postgresql://unused/db", lease_s=LEASE_S, renew_s=LEASE_S / 3),
        scheduler=scheduler,
        outbox=Outbox(store, []),
        rules=list,
        room=lambda: 100_000,
        metrics=Metrics(),
        clock=clock,
    )


async def joined(store: PostgresStore, clock: Clock) -> Replica:
    """A replica that started and had its first round: it holds all 100 watches."""
    r = replica(store, clock)
    await r.start([])
    await r.round()
    assert len(r.scheduler) == 100
    return r


async def free(store: PostgresStore) -> int:
    rows = await store._fetch("SELECT count(*) FROM watches WHERE owner IS NULL")
    return int(rows[0][0])


async def test_a_replica_that_is_joined_gives_back_beyond_its_fair_share(
    store: PostgresStore,
) -> None:
    clock = Clock()
    alone = await joined(store, clock)  # alone: everything
    other = Claims(lease_s=LEASE_S)
    await store.using(other.register)
    clock.now += LEASE_S / 3  # the next renewal counts two live replicas
    await alone.round()
    assert len(alone.scheduler) == 58  # a fair 50, plus the slack it keeps
    assert await free(store) == 42
    assert len(await store.using(lambda c: other.claim(c, 1000))) == 42


async def test_a_lease_lost_while_frozen_drops_everything_and_rejoins_as_new(
    store: PostgresStore,
) -> None:
    clock = Clock()
    r = await joined(store, clock)
    old = r.claims.me
    await store._fetch_none(  # frozen past its lease, as the database sees it
        "UPDATE replicas SET lease_until = now() - interval '1 second' WHERE id = %s", (old,)
    )
    clock.now += LEASE_S / 3
    await r.round()
    assert r.lease_losses == 1
    assert r.claims.me != old
    # Rejoined, it claims afresh: the old id's watches are free to everyone.
    assert len(r.scheduler) == 100
    assert {w.fence for w in map(r.scheduler.get, r.scheduler.watched_keys()) if w} == {2}


async def test_past_a_lease_without_the_database_polling_stops(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    r = await joined(store, clock)
    using = store.using

    async def unreachable(work: Any) -> Any:
        raise StoreError("state database: connection refused")

    monkeypatch.setattr(store, "using", unreachable)
    task = asyncio.create_task(r.run())
    try:
        clock.now += LEASE_S / 2  # within the lease: poll on, say why not ready
        r.nudge()
        await until(lambda: r.unreachable is not None, turns=200)
        assert len(r.scheduler) == 100
        clock.now += LEASE_S  # no renewal for a whole lease: others may poll them now
        r.nudge()
        await until(lambda: len(r.scheduler) == 0, turns=200)
        monkeypatch.setattr(store, "using", using)
        await store._fetch_none(  # the lease ran out in the database's time too
            "UPDATE replicas SET lease_until = now() - interval '1 second' WHERE id = %s",
            (r.claims.me,),
        )
        r.nudge()
        await until(lambda: r.unreachable is None and len(r.scheduler) == 100, limit_s=10)
        assert r.lease_losses == 1  # back: the lease was gone, so it rejoined
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
