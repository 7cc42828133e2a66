"""Several real daemons sharing one real PostgreSQL: shared work, handover, failover, fencing."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.harness import API_KEY, Daemon, daemon_env, webhook_sink, write_config
from tests.integration.test_postgres import on_postgres
from tests.pg import PgServer, free_port, pg_server, pg_url
from tests.waiting import until
from watcher.sim import Simulator

__all__ = ["pg_server", "pg_url"]

pytest.importorskip("psycopg")

LEASE_S = 2.0
# Rounds of chaos: a few in the suite; more to measure failover times.
CHAOS_ROUNDS = int(os.environ.get("BLINK_WATCHER_CHAOS_ROUNDS", "6"))


def timeline_scripts(count: int, done_after_s: float, prefix: str = "ex-") -> list[dict[str, Any]]:
    return [
        {
            "workspace_id": "ws-main",
            "execution_id": f"{prefix}{n}",
            "timeline": [[0, "Running"], [done_after_s, "Completed" if n % 4 else "Failed"]],
        }
        for n in range(count)
    ]


def replica_config(tmp_path: Path, sim: Simulator, url: str, ids: list[str], name: str) -> Path:
    """A replica's config: the same list, database and webhook for all; its own directory."""
    home = tmp_path / name
    home.mkdir()
    config = write_config(
        home / "config.toml",
        sim,
        ids,
        poll={"interval": 0.05, "max_interval": 0.2},
        sinks=webhook_sink(sim, max_attempts=1000),
    )
    return on_postgres(config, url, lease=LEASE_S)


async def start(start_daemon: Any, config: Path) -> Daemon:
    daemon: Daemon = await start_daemon("run", "-c", str(config))
    await until(lambda: daemon.logged("service.started"), limit_s=20)
    return daemon


def delivered_ids(sim: Simulator) -> dict[str, set[str]]:
    """execution_id -> the distinct event_ids the receiver got for it (2xx answers)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for event in sim.delivered_events():
        seen[event["execution_id"]].add(event["event_id"])
    return seen


def produced(daemons: list[Daemon]) -> list[dict[str, Any]]:
    lines = []
    for d in daemons:
        for line in d.stderr.decode().splitlines():
            if '"event": "event.produced"' in line:
                lines.append(json.loads(line))
    return lines


def holders(server: PgServer, url: str) -> dict[str, int]:
    """replica id -> watches it holds, from the database."""
    out = server.psql(
        "SELECT owner, count(*) FROM watches WHERE owner IS NOT NULL GROUP BY owner",
        url.rsplit("/", 1)[1],
    )
    return {line.split("|")[0]: int(line.split("|")[1]) for line in out.splitlines() if line}


async def test_two_replicas_share_the_watches_and_hand_over_on_sigterm(
    tmp_path: Path, start_daemon: Any, pg_server: PgServer, pg_url: str
) -> None:
    # Long enough that b joins while a still holds more than its share (a slow CI too).
    scripts = timeline_scripts(60, done_after_s=6.0)
    ids = [s["execution_id"] for s in scripts]
    async with Simulator(api_key=API_KEY, scripts=scripts) as sim:
        a = await start(start_daemon, replica_config(tmp_path, sim, pg_url, ids, "a"))
        b = await start(start_daemon, replica_config(tmp_path, sim, pg_url, ids, "b"))
        # Both poll: a gave part of its share back when b joined.
        await until(lambda: a.logged("replica.rebalanced"), limit_s=10)
        await until(lambda: all(sim.requests_for("ws-main", i) for i in ids), limit_s=10)
        await until(lambda: len(holders(pg_server, pg_url)) == 2, limit_s=10)
        shown = await start_daemon("status", "--json", "-c", str(tmp_path / "b" / "config.toml"))
        status = json.loads((await shown.finish()).stdout)
        assert sorted(r["id"] for r in status["replicas"]) == sorted(holders(pg_server, pg_url))
        assert {w["owner"] for w in status["watching"]} == set(holders(pg_server, pg_url))
        a.signal(signal.SIGTERM)
        stopped = await a.finish(timeout=20)
        assert stopped.returncode == 0, stopped.stderr[-2000:]
        left = stopped.diag("replica.left")
        assert left
        assert left[0]["released_watches"] > 0
        await until(lambda: len(delivered_ids(sim)) == len(ids), limit_s=20)
        b.signal(signal.SIGTERM)
        await b.finish(timeout=20)
    events = produced([a, b])
    by_execution = defaultdict(set)
    for e in events:
        by_execution[e["execution_id"]].add(e["kind"])
    assert sorted(by_execution) == sorted(ids)  # every execution reported ...
    assert len(events) == len(ids)  # ... once, by one replica
    assert all(len(found) == 1 for found in delivered_ids(sim).values())
    assert len(produced([b])) == len(ids)  # a gave its share back before its runs ended


def replica_of(daemon: Daemon) -> str:
    """The id the replica joined under (its latest, after a lost lease)."""
    ids = []
    for line in daemon.stderr.decode().splitlines():
        if '"replica.joined"' in line:
            ids.append(json.loads(line)["replica"])
        elif '"replica.lease_lost"' in line:
            ids.append(json.loads(line)["rejoined_as"])
    return ids[-1]


def flapping(count: int) -> list[str]:
    """A receiver that fails about a third of the time, in bursts, then recovers."""
    cycle = ["200", "500", "200", "drop", "503", "200", "429:0", "200", "500", "500", "200"]
    return [*(cycle * (count // len(cycle) + 1))[:count], "200"]


async def test_chaos_three_replicas_killed_and_frozen_lose_nothing(
    tmp_path: Path, start_daemon: Any, pg_server: PgServer, pg_url: str
) -> None:
    """Replicas die (kill -9) and freeze (SIGSTOP) at random; every run reported, once."""
    rng = random.Random(1207)
    ends_by = 1.2 * CHAOS_ROUNDS + 1  # runs end while the chaos goes on
    scripts = [
        {
            "workspace_id": "ws-main",
            "execution_id": f"ex-{n}",
            "timeline": [
                [0, "Running"],
                [rng.uniform(1, ends_by), rng.choice(["Completed", "Failed"])],
            ],
        }
        for n in range(300)
    ]
    ids = [s["execution_id"] for s in scripts]
    db = pg_url.rsplit("/", 1)[1]
    async with Simulator(api_key=API_KEY, scripts=scripts) as sim:
        sim.set_hook_script("main", flapping(1500))
        configs = [replica_config(tmp_path, sim, pg_url, ids, name) for name in "abc"]
        live = [await start(start_daemon, c) for c in configs]
        everyone = list(live)
        repoll_s: list[float] = []
        froze = 0
        for round_ in range(CHAOS_ROUNDS):
            await asyncio.sleep(rng.uniform(0.2, 0.8))  # chaos at random moments, not a wait
            slot = rng.randrange(3)
            victim = live[slot]
            me = replica_of(victim)
            held = pg_server.psql(
                f"SELECT execution_id FROM watches WHERE owner = '{me}'", db
            ).split()
            before = {i: sim.requests_for("ws-main", i) for i in held}
            if round_ % 2 == 0:
                victim.signal(signal.SIGKILL)
                died = time.monotonic()
                await victim.proc.wait()
                live[slot] = await start(start_daemon, configs[slot])
                everyone.append(live[slot])
            else:
                victim.signal(signal.SIGSTOP)  # frozen past its lease
                died = time.monotonic()
                froze += 1

            def repolled(before: dict[str, int] = before) -> bool:
                return all(sim.requests_for("ws-main", i) > n for i, n in before.items())

            await until(repolled, limit_s=20, what="the victim's watches polled again")
            if before:
                repoll_s.append(time.monotonic() - died)
            if round_ % 2:

                def expired(me: str = me) -> bool:
                    sql = f"SELECT lease_until < now() FROM replicas WHERE id = '{me}'"
                    return pg_server.psql(sql, db) == "t"

                await until(expired, limit_s=20, what="the frozen replica's lease ran out")
                victim.signal(signal.SIGCONT)
                await until(lambda v=victim: v.logged("replica.lease_lost"), limit_s=20)
        await until(lambda: len(delivered_ids(sim)) == len(ids), limit_s=60, what="all delivered")
        for d in live:
            d.signal(signal.SIGTERM)
        for d in live:
            await d.finish(timeout=20)
    assert all(len(found) == 1 for found in delivered_ids(sim).values())  # one event_id each
    assert pg_server.psql("SELECT count(*) FROM reported", db) == str(len(ids))
    assert (
        pg_server.psql(
            "SELECT count(*) FROM (SELECT execution_id FROM events GROUP BY execution_id "
            "HAVING count(*) > 1) twice",
            db,
        )
        == "0"
    )
    assert pg_server.psql("SELECT count(*) FROM deliveries WHERE status != 'delivered'", db) == "0"
    assert froze == CHAOS_ROUNDS // 2
    repoll_s.sort()
    print(
        f"\nrepolled after a replica's death: median {repoll_s[len(repoll_s) // 2]:.2f} s, "
        f"worst {repoll_s[-1]:.2f} s over {len(repoll_s)} (lease {LEASE_S:g} s)"
    )


async def test_the_database_going_away_loses_nothing_and_readyz_says_why(
    tmp_path: Path, start_daemon: Any, pg_server: PgServer, pg_url: str
) -> None:
    scripts = timeline_scripts(20, done_after_s=2.5)
    ids = [s["execution_id"] for s in scripts]
    port = free_port()
    async with Simulator(api_key=API_KEY, scripts=scripts) as sim, aiohttp.ClientSession() as http:

        async def ready() -> tuple[int, str]:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                return resp.status, await resp.text()

        config = replica_config(tmp_path, sim, pg_url, ids, "a")
        config.write_text(config.read_text() + f'\n[server]\nlisten = "127.0.0.1:{port}"\n')
        daemon = await start(start_daemon, config)
        await until(lambda: all(sim.requests_for("ws-main", i) for i in ids), limit_s=10)
        pg_server.stop()
        try:
            await until(lambda: daemon.logged("replica.database_unreachable"), limit_s=20)
            status, text = await ready()
            assert status == 503
            assert "state database is unreachable" in text
            # Results seen while the database is away are not stored, so not yet
            # delivered: they are asked for again once it is back.
            await until(lambda: all(sim.terminal_at("ws-main", i) for i in ids), limit_s=20)
            await until(lambda: daemon.logged("replica.lease_expired"), limit_s=20)
            assert sim.delivered_events() == []
        finally:
            pg_server.start()
        await until(lambda: len(delivered_ids(sim)) == len(ids), limit_s=30, what="delivered")
        assert daemon.proc.returncode is None  # never crashed
        assert (await ready())[0] == 200
        async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            metrics = await resp.text()
        assert 'blink_watcher_leases_held{kind="watches"}' in metrics
        assert "blink_watcher_lease_losses_total 1.0" in metrics
        assert "blink_watcher_claim_seconds_count" in metrics
        daemon.signal(signal.SIGTERM)
        run = await daemon.finish(timeout=20)
    assert run.returncode == 0
    assert all(len(found) == 1 for found in delivered_ids(sim).values())
    assert len(sim.delivered_events()) == len(ids)
    run.assert_no_secrets()


TOKEN = "wapi-replicas-5eed-token"


async def test_the_watch_api_sees_every_replicas_watches(
    tmp_path: Path, start_daemon: Any, pg_url: str
) -> None:
    scripts = [
        {"workspace_id": "ws-main", "execution_id": name, "steps": ["Running"]}
        for name in ("handed", "listed")
    ]
    ports = [free_port(), free_port()]
    env = daemon_env(API_TOKEN=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with Simulator(api_key=API_KEY, scripts=scripts) as sim, aiohttp.ClientSession() as http:
        daemons = []
        for name, port in zip("ab", ports, strict=True):
            config = replica_config(tmp_path, sim, pg_url, ["listed"], name)
            server = f'\n[server]\nlisten = "127.0.0.1:{port}"\napi_token_env = "API_TOKEN"\n'
            config.write_text(config.read_text() + server)
            daemon: Daemon = await start_daemon("run", "-c", str(config), env=env)
            await until(lambda d=daemon: d.logged("service.started"), limit_s=20)
            daemons.append(daemon)
        for port in ports:

            async def answers(port: int = port) -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await until(answers, limit_s=10, what="the listener")
        a, b = (f"http://127.0.0.1:{p}/v1/watches" for p in ports)
        async with http.post(a, json={"execution_id": "handed"}, headers=auth) as resp:
            assert resp.status == 201  # stored, and held by a, which polls it at once
        await until(lambda: sim.requests_for("ws-main", "handed") > 0, limit_s=10)
        async with http.get(f"{b}/ws-main/handed", headers=auth) as resp:
            seen = await resp.json()
        assert resp.status == 200
        assert seen["source"] == "api"
        assert seen["replica"] == replica_of(daemons[0])
        async with http.get(b, headers=auth) as resp:
            listed = await resp.json()
        assert [w["execution_id"] for w in listed["watches"]] == ["handed", "listed"]
        for url in (a, b):  # whichever replica holds it: the config is where it is removed
            async with http.delete(f"{url}/ws-main/listed", headers=auth) as resp:
                assert resp.status == 409
                assert "config.toml" in (await resp.json())["error"]
        async with http.post(b, json={"execution_id": "handed"}, headers=auth) as resp:
            assert resp.status == 200  # already watched, by the other replica
        async with http.delete(f"{b}/ws-main/handed", headers=auth) as resp:
            assert resp.status == 204

        async def gone_from_a() -> bool:
            async with http.get(f"{a}/ws-main/handed", headers=auth) as resp:
                return resp.status == 404

        await until(gone_from_a, limit_s=10, what="a dropped the watch b removed")
        polls = sim.requests_for("ws-main", "handed")
        for d in daemons:
            d.signal(signal.SIGTERM)
        for d in daemons:
            assert (await d.finish(timeout=20)).returncode == 0
        assert sim.requests_for("ws-main", "handed") == polls


async def test_one_replica_lists_a_rule_and_another_takes_it_over(
    tmp_path: Path, start_daemon: Any, pg_server: PgServer, pg_url: str
) -> None:
    now_ms = int(time.time() * 1000)
    scripts = [
        {
            "workspace_id": "ws-main",
            "id_prefix": "found-",
            "count": 300,
            "steps": ["Running", "Completed"],
            "created_at": now_ms - 1000,
            "created_every": 10,  # started over three seconds
        }
    ]
    db = pg_url.rsplit("/", 1)[1]
    discover = '[[discover]]\nname = "all"\ninterval = 0.05\noverlap = 5.0\nstart = "1h"\n'
    async with Simulator(api_key=API_KEY, scripts=scripts) as sim:
        configs = []
        for name in "ab":
            config = replica_config(tmp_path, sim, pg_url, [], name)
            config.write_text(config.read_text() + "\n" + discover)
            configs.append(config)
        daemons = [await start(start_daemon, c) for c in configs]

        def holder() -> str:
            return pg_server.psql("SELECT coalesce(owner, '') FROM cursors WHERE rule = 'all'", db)

        await until(lambda: holder() != "" and len(delivered_ids(sim)) >= 30, limit_s=15)
        first = holder()
        victim = next(d for d in daemons if replica_of(d) == first)
        victim.signal(signal.SIGKILL)  # mid-listing: the other replica resumes its cursor
        await victim.proc.wait()
        await until(lambda: holder() not in ("", first), limit_s=15, what="the rule taken over")
        await until(lambda: len(delivered_ids(sim)) == 300, limit_s=30, what="all 300 found")
        survivor = next(d for d in daemons if d is not victim)
        survivor.signal(signal.SIGTERM)
        assert (await survivor.finish(timeout=20)).returncode == 0
    assert all(len(found) == 1 for found in delivered_ids(sim).values())
    assert pg_server.psql("SELECT count(*) FROM reported", db) == "300"
