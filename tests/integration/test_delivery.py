"""Webhook delivery through the real daemon: retries, dead letters, signatures, crashes."""

from __future__ import annotations

import json
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook

from tests.integration.harness import (
    API_KEY,
    WEBHOOK_SECRET,
    daemon_env,
    webhook_sink,
    write_config,
)
from tests.integration.test_observability import free_port, samples
from tests.waiting import until
from watcher.sim import Delivery, Simulator

WS = "ws-main"


def scripts(count: int, *steps: str) -> list[dict[str, Any]]:
    return [
        {"workspace_id": WS, "execution_id": f"ex-{i}", "steps": list(steps)} for i in range(count)
    ]


def ok_deliveries(sim: Simulator, name: str) -> dict[str, list[Delivery]]:
    """Deliveries answered 2xx, by webhook-id."""
    by_id: dict[str, list[Delivery]] = defaultdict(list)
    for d in sim.deliveries:
        if d.name == name and d.status is not None and 200 <= d.status < 300:
            by_id[d.headers["webhook-id"]].append(d)
    return by_id


async def test_every_event_arrives_signed_despite_receiver_faults(
    tmp_path: Path, run_daemon: Any
) -> None:
    # The first attempts meet every fault a receiver can throw; later ones succeed.
    faults = ["drop", "503", "500", "429:0.05", "slow:1", "408", "502", "200"]
    async with Simulator(
        api_key=API_KEY, scripts=scripts(6, "Running", "Completed"), hook_scripts={"main": faults}
    ) as sim:
        sinks = '[[sinks]]\ntype = "log"\n' + webhook_sink(sim, timeout=0.3, max_attempts=20)
        config = write_config(
            tmp_path / "config.toml", sim, [f"ex-{i}" for i in range(6)], sinks=sinks
        )
        run = await run_daemon(config)

        assert run.returncode == 0, run.stderr[-3000:]
        produced = {e["event_id"]: e for e in run.events}
        arrived = ok_deliveries(sim, "main")
        assert set(arrived) == set(produced)
        verifier = Webhook(WEBHOOK_SECRET)
        for event_id, deliveries in arrived.items():
            d = deliveries[0]
            assert json.loads(d.body) == produced[event_id]
            assert verifier.verify(d.body, d.headers) == produced[event_id]
            assert d.headers["content-type"] == "application/json"
            assert d.headers["user-agent"].startswith("blink-watcher/")
        # Failed attempts carried the same webhook-id as the one that succeeded.
        attempted_ids = {d.headers["webhook-id"] for d in sim.deliveries if d.name == "main"}
        assert attempted_ids == set(produced)
        assert len(sim.deliveries) > len(produced)
        assert run.diag("delivery.retry")
        run.assert_no_secrets()


async def test_rejected_delivery_is_dead_lettered_then_retried_on_request(
    tmp_path: Path, run_daemon: Any, start_daemon: Any
) -> None:
    async with Simulator(
        api_key=API_KEY, scripts=scripts(2, "Completed"), hook_scripts={"strict": ["400"]}
    ) as sim:
        sinks = webhook_sink(sim, "main") + webhook_sink(sim, "strict", name="strict")
        config = write_config(tmp_path / "config.toml", sim, ["ex-0", "ex-1"], sinks=sinks)
        run = await run_daemon(config)

        assert run.returncode == 0
        assert len(ok_deliveries(sim, "main")) == 2
        dead = run.diag("delivery.dead")
        assert len(dead) == 2
        assert all(d["sink"] == "strict" and "HTTP 400" in d["reason"] for d in dead)
        # One attempt each: a 400 is not worth retrying.
        assert sum(1 for d in sim.deliveries if d.name == "strict") == 2

        listing = await (await start_daemon("deliveries", "-c", str(config), "--json")).finish()
        rows = json.loads(listing.stdout)
        assert [r["status"] for r in rows] == ["dead", "dead"]
        assert all(r["sink"] == "strict" and "HTTP 400" in r["last_error"] for r in rows)

        sim.set_hook_script("strict", ["200"])
        requeue = await (
            await start_daemon("deliveries", "-c", str(config), "--retry-dead")
        ).finish()
        assert requeue.returncode == 0
        rerun = await run_daemon(config)
        assert rerun.returncode == 0
        assert len(ok_deliveries(sim, "strict")) == 2
        assert rerun.events == []  # nothing produced again: only the outbox moved


@pytest.mark.parametrize("kill_after_attempts", [1, 4, 9])
async def test_kill_9_mid_flight_loses_nothing(
    tmp_path: Path, start_daemon: Any, run_daemon: Any, kill_after_attempts: int
) -> None:
    count = 12
    # Staggered executions, so a kill finds some finished, some mid-watch.
    execs = [
        {
            "workspace_id": WS,
            "execution_id": f"ex-{i}",
            "steps": ["Running"] * (1 + i) + ["Completed"],
        }
        for i in range(count)
    ]
    # The receiver is unhealthy at first, so deliveries are pending at the kill.
    async with Simulator(
        api_key=API_KEY, scripts=execs, hook_scripts={"main": ["503"] * 6 + ["200"]}
    ) as sim:
        config = write_config(
            tmp_path / "config.toml",
            sim,
            [f"ex-{i}" for i in range(count)],
            poll={"interval": 0.03, "max_interval": 0.03},
            sinks=webhook_sink(sim, backoff_initial=0.02, backoff_max=0.05),
        )
        daemon = await start_daemon("run", "-c", str(config), env=daemon_env())
        await until(lambda: len(sim.deliveries) >= kill_after_attempts, what="deliveries")
        daemon.signal(signal.SIGKILL)
        await daemon.finish()

        second = await run_daemon(config)
        assert second.returncode == 0, second.stderr[-3000:]
        arrived = ok_deliveries(sim, "main")
        assert set(arrived) == {d.headers["webhook-id"] for d in sim.deliveries}, (
            "an event attempted before the crash never arrived"
        )
        assert len(arrived) == count
        executions = {json.loads(ds[0].body)["execution_id"] for ds in arrived.values()}
        assert executions == {f"ex-{i}" for i in range(count)}

        requests_before = sim.total_requests
        deliveries_before = len(sim.deliveries)
        third = await run_daemon(config)
        assert third.returncode == 0
        assert third.events == []
        assert sim.total_requests == requests_before
        assert len(sim.deliveries) == deliveries_before


async def test_second_sigterm_skips_the_drain_and_pending_deliveries_resume(
    tmp_path: Path, start_daemon: Any, run_daemon: Any
) -> None:
    # The receiver hangs, so attempts are in flight when SIGTERM arrives: the
    # first signal starts the drain, the second cuts it short.
    async with Simulator(
        api_key=API_KEY,
        scripts=[
            *scripts(3, "Completed"),
            {"workspace_id": WS, "execution_id": "long", "steps": ["Running"]},
        ],
        hook_scripts={"main": ["slow:30"]},
    ) as sim:
        config = write_config(
            tmp_path / "config.toml",
            sim,
            ["ex-0", "ex-1", "ex-2", "long"],
            sinks=webhook_sink(sim, timeout=60),
        )
        daemon = await start_daemon("run", "-c", str(config))
        await until(lambda: len(sim.deliveries) >= 3, what="first attempts")
        daemon.signal(signal.SIGTERM)
        await until(lambda: daemon.logged("service.draining"), what="the drain")
        daemon.signal(signal.SIGTERM)
        stopped = await daemon.finish()
        assert stopped.returncode == 0
        assert stopped.diag("service.stopped")[0]["pending_deliveries"] == 3, stopped.stderr

        sim.set_hook_script("main", ["200"])
        long_requests = sim.requests_for(WS, "long")
        # "long" left the config: it is not polled again and gets no event.
        config.write_text(config.read_text().replace('"long"', '"ex-0"'))
        resumed = await run_daemon(config)
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.events == []
        assert len(ok_deliveries(sim, "main")) == 3
        assert sim.requests_for(WS, "long") == long_requests


async def test_a_running_daemon_picks_up_retried_dead_letters_and_shows_them_in_metrics(
    tmp_path: Path, start_daemon: Any
) -> None:
    port = free_port()
    async with (
        Simulator(
            api_key=API_KEY, scripts=scripts(1, "Completed"), hook_scripts={"strict": ["400"]}
        ) as sim,
        aiohttp.ClientSession() as http,
    ):
        config = write_config(
            tmp_path / "config.toml",
            sim,
            ["ex-0"],
            sinks=webhook_sink(sim, "strict", name="strict"),
            extra=f'[server]\nlisten = "127.0.0.1:{port}"',
        )
        daemon = await start_daemon("run", "-c", str(config))
        gauge = ("blink_watcher_dead_letters", (("sink", "strict"),))

        async def dead_letters() -> float | None:
            try:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    return samples(await resp.text()).get(gauge)
            except aiohttp.ClientConnectionError:
                return None

        async def dead_is(value: float) -> bool:
            return await dead_letters() == value

        await until(lambda: dead_is(1.0), what="the dead letter in /metrics")
        sim.set_hook_script("strict", ["200"])

        requeue = await (
            await start_daemon("deliveries", "-c", str(config), "--retry-dead")
        ).finish()

        assert requeue.returncode == 0
        assert "queued 1 dead letter(s) again" in requeue.stderr
        # No reload, no restart: the running daemon notices the store changed.
        await until(lambda: len(ok_deliveries(sim, "strict")) == 1, what="the redelivery")
        await until(lambda: dead_is(0.0), what="the gauge back to 0")
        again = await (await start_daemon("deliveries", "-c", str(config), "--retry-dead")).finish()
        assert "no dead letters to retry" in again.stderr
        daemon.signal(signal.SIGTERM)
        run = await daemon.finish()
        assert run.diag("delivery.requeued")[0]["deliveries"] == 1
