"""Replicas sharing watches on a real PostgreSQL: disjoint claims, renewal, takeover, fencing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.store.rows import event, watch
from watcher.errors import LeaseLostError
from watcher.store.claims import Claims
from watcher.store.pg_schema import migrate
from watcher.store.postgres import PostgresStore

psycopg = pytest.importorskip("psycopg")


@pytest.fixture
async def conns(pg_url: str) -> AsyncIterator[list[Any]]:
    opened = [await psycopg.AsyncConnection.connect(pg_url, autocommit=True) for _ in range(3)]
    await migrate(opened[0], "test")
    rows = [watch(("ws", f"ex-{n}")) for n in range(30)]
    async with opened[0].cursor() as cur:
        await cur.executemany(
            "INSERT INTO watches (workspace_id, execution_id, state, polls, first_seen_at, "
            "changed_at) VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (*r.key, r.state, r.polls, r.first_seen_at + i, r.changed_at)
                for i, r in enumerate(rows)
            ],
        )
    try:
        yield opened
    finally:
        for c in opened:
            await c.close()


async def test_replicas_claiming_together_split_the_watches(conns: list[Any]) -> None:
    replicas = [Claims(lease_s=30) for _ in conns]
    for r, c in zip(replicas, conns, strict=True):
        await r.register(c)
    got = await asyncio.gather(*(r.claim(c, 12) for r, c in zip(replicas, conns, strict=True)))
    keys = [{w[0] for w in rows} for rows in got]
    assert sum(len(k) for k in keys) == 30  # 12 + 12 + 6: bounded batches, nothing twice
    assert set.union(*keys) == {("ws", f"ex-{n}") for n in range(30)}
    assert await replicas[0].claim(conns[0], 10) == []  # all held and live


async def test_a_replica_without_a_live_lease_claims_nothing(conns: list[Any]) -> None:
    unregistered = Claims(lease_s=30)
    assert await unregistered.claim(conns[0], 30) == []
    assert not await unregistered.renew(conns[0])


EXPIRE = "UPDATE replicas SET lease_until = now() - interval '1 second' WHERE id = %s"


async def test_an_expired_lease_is_taken_over_and_the_old_owner_is_fenced(
    conns: list[Any],
) -> None:
    old, new = Claims(lease_s=30), Claims(lease_s=30)
    await old.register(conns[0])
    await new.register(conns[1])
    await old.claim(conns[0], 30)
    assert await new.claim(conns[1], 30) == []
    await conns[2].execute(EXPIRE, (old.me,))  # as if old froze for a whole lease
    taken = await new.claim(conns[1], 30)
    assert len(taken) == 30
    assert new.takeovers == 30
    async with conns[0].transaction(), conns[0].cursor() as cur:
        assert not await old.still_held(cur, ("ws", "ex-0"))  # woken up: may not commit
    async with conns[1].transaction(), conns[1].cursor() as cur:
        assert await new.still_held(cur, ("ws", "ex-0"))
    assert not await old.renew(conns[0])  # it notices: its lease is gone
    stale = old.me
    await old.rejoin(conns[0])
    assert old.me != stale
    assert old.held == {}
    assert await old.claim(conns[0], 30) == []  # nothing is mistaken for its own
    assert await new.renew(conns[1])


async def test_renewal_is_one_row_and_release_gives_everything_back(conns: list[Any]) -> None:
    a, b = Claims(lease_s=30), Claims(lease_s=30)
    await a.register(conns[0])
    await b.register(conns[1])
    await a.claim(conns[0], 5)
    await conns[2].execute(
        "UPDATE replicas SET lease_until = now() + interval '1 second' WHERE id = %s", (a.me,)
    )
    cur = await conns[2].execute("SELECT xmin::text FROM watches WHERE owner = %s", (a.me,))
    versions = await cur.fetchall()
    assert await a.renew(conns[0])
    cur = await conns[2].execute(
        "SELECT count(*) FROM replicas WHERE id = %s AND lease_until > now() + interval '20 s'",
        (a.me,),
    )
    assert await cur.fetchone() == (1,)
    cur = await conns[2].execute("SELECT xmin::text FROM watches WHERE owner = %s", (a.me,))
    assert await cur.fetchall() == versions  # no watch row was written to renew
    assert len(await b.claim(conns[1], 30)) == 25  # a's five are still a's
    assert await a.release(conns[0]) == 5
    assert len(await b.claim(conns[1], 30)) == 5  # at once, not after a lease
    assert (await b.census(conns[1]))[1:] == (1, 30)  # one live replica, holding all 30


async def test_rules_are_held_by_one_replica_at_a_time(conns: list[Any]) -> None:
    a, b = Claims(lease_s=30), Claims(lease_s=30)
    await a.register(conns[0])
    await b.register(conns[1])
    assert await a.claim_rules(conns[0], ["nightly", "ci"]) == {"nightly", "ci"}
    assert await b.claim_rules(conns[1], ["nightly", "ci"]) == set()
    await conns[2].execute(EXPIRE, (a.me,))
    assert await b.claim_rules(conns[1], ["nightly"]) == {"nightly"}
    assert b.rules == {"nightly"}


async def test_a_store_that_lost_its_lease_commits_no_event(pg_url: str, conns: list[Any]) -> None:
    frozen, live = Claims(lease_s=30), Claims(lease_s=30)
    async with PostgresStore(pg_url, claims=frozen) as a, PostgresStore(pg_url, claims=live) as b:
        async with a._db().connection() as conn:
            await frozen.register(conn)
            await frozen.claim(conn, 30)
        await conns[2].execute(EXPIRE, (frozen.me,))  # frozen past its lease
        async with b._db().connection() as conn:
            await live.register(conn)
            await live.claim(conn, 30)
        with pytest.raises(LeaseLostError):
            await a.record_event(event(("ws", "ex-0"), "evt_stale"), ["hook"])
        assert ("ws", "ex-0") not in frozen.held
        await b.record_event(event(("ws", "ex-0"), "evt_live"), ["hook"])
        assert ("ws", "ex-0") not in live.held  # ended: no longer held
        assert [d.event_id for d in await b.open_deliveries()] == ["evt_live"]
        # The delivery is the live replica's: the frozen one's outcome is refused.
        await a.update_delivery("evt_live", "hook", "delivered", 1, 0.0, None, wait=True)
        assert frozen.lost_deliveries == {("evt_live", "hook")}
        assert [d.event_id for d in await b.open_deliveries()] == ["evt_live"]
        async with a._db().connection() as conn:
            await frozen.rejoin(conn)
            assert await frozen.claim_deliveries(conn, 10, ["hook"]) == []  # live holds it
        await conns[2].execute(EXPIRE, (live.me,))
        async with a._db().connection() as conn:
            # A replica without the sink leaves the delivery to one that has it.
            assert await frozen.claim_deliveries(conn, 10, ["other-sink"]) == []
            taken = await frozen.claim_deliveries(conn, 10, ["hook"])
        assert [(d.event_id, d.key) for d in taken] == [("evt_live", ("ws", "ex-0"))]
