"""Metrics, health and status from the real running daemon."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import API_KEY, webhook_sink, write_config
from tests.waiting import until
from watcher.sim import Simulator

WS = "ws-main"
SCRIPTS = [
    {"workspace_id": WS, "execution_id": "done", "steps": ["Running", "!503", "Failed"]},
    {"workspace_id": WS, "execution_id": "running", "steps": ["Running"]},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_readiness_and_status_follow_the_run(
    tmp_path: Path, start_daemon: Any
) -> None:
    port = free_port()
    async with Simulator(api_key=API_KEY, scripts=SCRIPTS) as sim, aiohttp.ClientSession() as http:
        config = write_config(
            tmp_path / "config.toml",
            sim,
            ["done", "running"],
            poll={"interval": 0.02, "max_interval": 0.05},
            extra=f'[server]\nlisten = "127.0.0.1:{port}"',
            sinks='[[sinks]]\ntype = "log"\n' + webhook_sink(sim),
        )
        daemon = await start_daemon("run", "-c", str(config))
        base = f"http://127.0.0.1:{port}"

        async def get(path: str) -> tuple[int, str]:
            try:
                async with http.get(base + path) as resp:
                    return resp.status, await resp.text()
            except aiohttp.ClientConnectionError:
                return 0, ""

        async def answered(path: str, status: int) -> str:
            last: list[str] = []

            async def answers() -> bool:
                code, body = await get(path)
                last[:] = [body]
                return code == status

            await until(answers, limit_s=15, what=f"{path} to answer {status}")
            return last[0]

        await answered("/healthz", 200)
        ready = json.loads(await answered("/readyz", 200))
        assert ready == {"ready": True, "reason": "ok"}
        await until(lambda: b'"execution_id":"done"' in daemon.stdout, what="the event")
        await until(lambda: len(sim.deliveries) >= 1, what="the delivery")

        _, text = await get("/metrics")
        m = samples(text)
        assert m[("blink_watcher_api_requests_total", (("outcome", "ok"),))] >= 3
        assert (
            m[
                (
                    "blink_watcher_events_total",
                    (("event", "execution.finished"), ("state", "Failed")),
                )
            ]
            == 1
        )
        assert m[("blink_watcher_watches", (("phase", "watching"),))] == 1
        assert m[("blink_watcher_watches", (("phase", "finished"),))] == 1
        assert m[("blink_watcher_api_last_success_timestamp_seconds", ())] > 0
        assert m[("blink_watcher_api_retries_total", ())] >= 1
        assert ("blink_watcher_api_request_duration_seconds_count", ()) in m
        sink_names = {labels for (name, labels) in m if name == "blink_watcher_deliveries_total"}
        assert any(("result", "delivered") in labels for labels in sink_names)

        # The key is rejected: not ready, with the reason; accepted again: ready.
        sim.set_api_key("a-rotated-key")
        not_ready = json.loads(await answered("/readyz", 503))
        assert "401" in not_ready["reason"]
        _, text = await get("/metrics")
        assert samples(text)[("blink_watcher_api_requests_total", (("outcome", "auth"),))] >= 1
        sim.set_api_key(API_KEY)
        await answered("/readyz", 200)

        status = await (await start_daemon("status", "-c", str(config), "--json")).finish()
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        assert [w["execution_id"] for w in data["watching"]] == ["running"]
        assert data["watching"][0]["state"] == "Running"
        assert [e["execution_id"] for e in data["recent_events"]] == ["done"]
        assert data["deliveries"]["delivered"] + data["deliveries"]["pending"] == 2

        human = await (await start_daemon("status", "-c", str(config))).finish()
        assert "Watching 1 execution(s)" in human.stdout
        assert "ws-main/running" in human.stdout

        daemon.signal(signal.SIGTERM)
        run = await daemon.finish()
        assert run.returncode == 0
        run.assert_no_secrets()


async def test_status_shows_every_watch_the_daemon_holds_even_without_an_answer(
    tmp_path: Path, start_daemon: Any
) -> None:
    # With 10,000 IDs, a rejected key or a 404 so far, status used to show only
    # the watches whose state was stored: "Watching 0" while /metrics said 10000.
    scripts = [{"workspace_id": WS, "execution_id": "running", "steps": ["Running"]}]
    async with Simulator(api_key=API_KEY, scripts=scripts) as sim:
        config = write_config(
            tmp_path / "config.toml",
            sim,
            ["running", "missing-so-far", *[f"never-{i}" for i in range(50)]],
            poll={"interval": 3600, "max_interval": 3600, "not_found_grace": 1000},
        )
        daemon = await start_daemon("run", "-c", str(config))
        await until(lambda: daemon.logged("service.started"), what="the daemon to start")
        await until(lambda: sim.requests_for(WS, "missing-so-far") >= 1, what="a 404")

        run = await (await start_daemon("status", "-c", str(config), "--json")).finish()
        data = json.loads(run.stdout)
        human = await (await start_daemon("status", "-c", str(config))).finish()

        assert data["daemon_pid"] == daemon.pid
        watching = {w["execution_id"]: w for w in data["watching"]}
        assert len(watching) == 52
        assert watching["missing-so-far"]["note"].startswith("no answer yet")
        assert f"daemon: running (pid {daemon.pid})" in human.stdout
        assert "Watching 52 execution(s)" in human.stdout
        daemon.signal(signal.SIGTERM)
        assert (await daemon.finish()).returncode == 0
        after = await (await start_daemon("status", "-c", str(config))).finish()
        assert "daemon: not running on this file" in after.stdout


async def test_a_reload_with_a_fixed_key_file_turns_ready_without_waiting_for_the_next_poll(
    tmp_path: Path, start_daemon: Any
) -> None:
    port = free_port()
    key_file = tmp_path / "blink-api-key"
    key_file.write_text("a-mistyped-key\n")
    async with Simulator(api_key=API_KEY, scripts=SCRIPTS) as sim, aiohttp.ClientSession() as http:
        config = write_config(
            tmp_path / "config.toml",
            sim,
            ["running"],
            blink={"api_key_file": str(key_file)},
            # After a 401 the next poll is an hour away: only the reload's probe can tell.
            poll={"interval": 3600, "max_interval": 3600},
            extra=f'[server]\nlisten = "127.0.0.1:{port}"',
        )
        daemon = await start_daemon("run", "-c", str(config))

        async def readyz(status: int) -> bool:
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    return resp.status == status
            except aiohttp.ClientConnectionError:
                return False

        await until(lambda: daemon.logged("api.auth_failed"), what="api.auth_failed")
        assert await readyz(503)
        key_file.write_text(API_KEY + "\n")
        daemon.signal(signal.SIGHUP)

        await until(lambda: readyz(200), limit_s=15, what="/readyz 200 after the reload")
        daemon.signal(signal.SIGTERM)
        run = await daemon.finish()
        assert run.returncode == 0
        assert run.diag("api.auth_recovered")
        assert sim.auth_failures == 1  # the first poll; the probe carried the new key
        run.assert_no_secrets()
