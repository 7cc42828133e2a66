"""Discovery against the simulator's list endpoint, with the real daemon."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.integration.harness import API_KEY, Daemon, write_config
from tests.waiting import until
from watcher.sim import Simulator

WS = "ws-main"
DONE = ["Running", "Completed"]


def now_ms() -> int:
    return int(time.time() * 1000)


def rule(name: str = "all", **keys: Any) -> str:
    keys.setdefault("interval", 0.05)
    keys.setdefault("overlap", 5.0)
    keys.setdefault("start", "1h")
    lines = ["[[discover]]", f'name = "{name}"'] + [
        f"{k} = {json.dumps(v)}" for k, v in keys.items()
    ]
    return "\n".join(lines) + "\n"


def events_of(*outputs: bytes | str) -> list[dict[str, Any]]:
    text = "".join(o.decode() if isinstance(o, bytes) else o for o in outputs)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def found(daemon: Daemon) -> set[str]:
    return {e["execution_id"] for e in events_of(bytes(daemon.stdout))}


async def test_a_rule_finds_what_its_filters_name_and_events_say_which(
    tmp_path: Path, run_daemon: Any
) -> None:
    created = now_ms() - 60_000
    scripts = [
        {
            "workspace_id": WS,
            "id_prefix": "iso-",
            "count": 3,
            "steps": DONE,
            "playbook_id": "pb-isolate",
            "trigger_type": "api",
            "created_at": created,
        },
        {
            "workspace_id": WS,
            "id_prefix": "cron-",
            "count": 2,
            "steps": DONE,
            "playbook_id": "pb-isolate",
            "trigger_type": "schedule",
            "created_at": created,
        },
        {
            "workspace_id": WS,
            "id_prefix": "other-",
            "count": 2,
            "steps": DONE,
            "playbook_id": "pb-other",
            "trigger_type": "api",
            "created_at": created,
        },
    ]
    async with Simulator(api_key=API_KEY, scripts=scripts) as sim:
        config = write_config(
            tmp_path / "config.toml",
            sim,
            [],
            extra=rule("isolation", playbook_ids=["pb-isolate"], trigger_types=["api"]),
        )
        run = await run_daemon(config)
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(e["execution_id"] for e in run.events) == ["iso-0", "iso-1", "iso-2"]
    assert {e["discovered_by"] for e in run.events} == {"isolation"}
    run.assert_no_secrets()


async def test_start_now_skips_history_and_takes_what_starts_later(
    tmp_path: Path, start_daemon: Any
) -> None:
    scripts = [
        {
            "workspace_id": WS,
            "id_prefix": "old-",
            "count": 5,
            "steps": DONE,
            "created_at": now_ms() - 30_000,
        },
        {
            "workspace_id": WS,
            "id_prefix": "new-",
            "count": 3,
            "steps": DONE,
            "created_at": now_ms() + 1500,
            "created_every": 100,
        },
    ]
    async with Simulator(api_key=API_KEY, scripts=scripts) as sim:
        config = write_config(tmp_path / "config.toml", sim, [], extra=rule(start="now"))
        daemon = await start_daemon("run", "-c", str(config))
        await until(lambda: found(daemon) >= {"new-0", "new-1", "new-2"}, what="the new runs")
        daemon.signal(signal.SIGTERM)
        run = await daemon.finish()
    assert sorted(e["execution_id"] for e in run.events) == ["new-0", "new-1", "new-2"]


async def test_downtime_and_kill_9_lose_nothing_and_report_nothing_twice(
    tmp_path: Path, start_daemon: Any
) -> None:
    base = now_ms() - 10_000
    scripts = [
        # 2,500: three pages, so a kill lands between the pages' commits.
        {
            "workspace_id": WS,
            "id_prefix": "a-",
            "count": 2500,
            "steps": DONE,
            "created_at": base,
            "created_every": 1,
        },
        # Started and ended while the daemon was down.
        {
            "workspace_id": WS,
            "id_prefix": "down-",
            "count": 20,
            "steps": ["Completed"],
            "created_at": now_ms() + 4000,
        },
    ]
    async with Simulator(api_key=API_KEY, scripts=scripts) as sim:
        config = write_config(tmp_path / "config.toml", sim, [], extra=rule())
        first = await start_daemon("run", "-c", str(config))
        await until(lambda: len(found(first)) >= 100, what="the first events")
        first.signal(signal.SIGKILL)
        await first.proc.wait()
        before = bytes(first.stdout)
        await until(lambda: now_ms() > base + 10_000 + 4500, what="the downtime to pass")
        second = await start_daemon("run", "-c", str(config), "--exit-when-done")
        run = await second.finish(60)
    assert run.returncode == 0, run.stderr[-2000:]
    ids: dict[str, set[str]] = {}
    for e in events_of(before, run.stdout):
        ids.setdefault(e["execution_id"], set()).add(e["event_id"])
    expected = {f"a-{i}" for i in range(2500)} | {f"down-{i}" for i in range(20)}
    assert set(ids) == expected
    # One event each. (A line written just before the kill may be written again
    # after the restart: the same event, with the same event_id.)
    assert {len(v) for v in ids.values()} == {1}


async def test_ties_and_late_visibility_are_all_taken_once(tmp_path: Path, run_daemon: Any) -> None:
    start = now_ms()
    scripts = [
        # 1,500 in one millisecond: more than a page shares one created_at.
        {
            "workspace_id": WS,
            "id_prefix": "tie-",
            "count": 1500,
            "steps": DONE,
            "created_at": start - 3000,
        },
        # Listed at once, created after the late ones below ...
        {
            "workspace_id": WS,
            "id_prefix": "after-",
            "count": 3,
            "steps": DONE,
            "created_at": start - 500,
        },
        # ... which show in the list only a second from now, behind the cursor.
        {
            "workspace_id": WS,
            "id_prefix": "late-",
            "count": 5,
            "steps": DONE,
            "created_at": start - 1500,
            "listed_after": 2.5,
        },
        # Keeps the run going until the late ones have shown.
        {
            "workspace_id": WS,
            "execution_id": "anchor",
            "timeline": [[0, "Running"], [3.0, "Completed"]],
            "created_at": start - 99_000_000,
        },
    ]
    async with Simulator(api_key=API_KEY, scripts=scripts) as sim:
        config = write_config(tmp_path / "config.toml", sim, ["anchor"], extra=rule())
        run = await run_daemon(config, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    counts = Counter(e["execution_id"] for e in run.events)
    wanted = {f"tie-{i}" for i in range(1500)} | {f"late-{i}" for i in range(5)}
    assert wanted | {"after-0", "after-1", "after-2", "anchor"} == set(counts)
    assert max(counts.values()) == 1


async def test_at_max_watches_discovery_waits_and_loses_nothing(
    tmp_path: Path, run_daemon: Any
) -> None:
    scripts = [
        {
            "workspace_id": WS,
            "id_prefix": "cap-",
            "count": 40,
            "steps": ["Running", "Running", "Completed"],
            "created_at": now_ms() - 5000,
        },
    ]
    async with Simulator(api_key=API_KEY, scripts=scripts) as sim:
        config = write_config(tmp_path / "config.toml", sim, [], extra=rule())
        text = config.read_text().replace("[watch]\n", "[watch]\nmax_watches = 7\n")
        config.write_text(text)
        run = await run_daemon(config, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(e["execution_id"] for e in run.events) == sorted(f"cap-{i}" for i in range(40))
    waits = run.diag("discover.at_capacity")
    assert waits
    assert waits[0]["rule"] == "all"


async def test_a_rejected_query_is_named_and_retried_while_watches_go_on(
    tmp_path: Path, start_daemon: Any
) -> None:
    scripts = [
        {"workspace_id": WS, "execution_id": "cfg", "steps": DONE},
        {
            "workspace_id": WS,
            "id_prefix": "r-",
            "count": 2,
            "steps": DONE,
            "playbook_id": "pb-1",
            "created_at": now_ms() - 5000,
        },
    ]
    async with Simulator(api_key=API_KEY, scripts=scripts) as sim:
        sim.reject_list_filter("playbook_id", "filter on playbook_id is not supported here")
        config = write_config(
            tmp_path / "config.toml", sim, ["cfg"], extra=rule("pb", playbook_ids=["pb-1"])
        )
        daemon = await start_daemon("run", "-c", str(config))
        await until(lambda: daemon.logged("discover.query_rejected"), what="the diagnostic")
        await until(lambda: "cfg" in found(daemon), what="the configured watch's event")
        sim.accept_list_filter("playbook_id")
        await until(lambda: found(daemon) >= {"r-0", "r-1"}, what="the rule to recover")
        daemon.signal(signal.SIGTERM)
        run = await daemon.finish()
    rejected = run.diag("discover.query_rejected")[0]
    assert rejected["rule"] == "pb"
    assert "filter on playbook_id is not supported here" in rejected["reason"]
    assert rejected["level"] == "error"


async def test_reload_adds_and_removes_rules_and_keeps_what_they_found(
    tmp_path: Path, start_daemon: Any
) -> None:
    scripts = [
        {
            "workspace_id": WS,
            "id_prefix": "one-",
            "count": 2,
            "steps": ["Running"],
            "playbook_id": "pb-1",
            "created_at": now_ms() - 5000,
        },
        {
            "workspace_id": WS,
            "id_prefix": "two-",
            "count": 2,
            "steps": DONE,
            "playbook_id": "pb-2",
            "created_at": now_ms() - 5000,
        },
    ]
    async with Simulator(api_key=API_KEY, scripts=scripts) as sim:
        path = tmp_path / "config.toml"
        write_config(path, sim, [], extra=rule("one", playbook_ids=["pb-1"]))
        daemon = await start_daemon("run", "-c", str(path))
        await until(lambda: sim.requests_for(WS, "one-1") > 0, what="rule one's watches")
        write_config(path, sim, [], extra=rule("two", playbook_ids=["pb-2"]))
        daemon.signal(signal.SIGHUP)
        await until(lambda: found(daemon) >= {"two-0", "two-1"}, what="rule two's events")
        # Rule one is gone, and what it found is still watched to the end.
        sim.add_scripts(
            [
                {
                    "workspace_id": WS,
                    "id_prefix": "one-",
                    "count": 2,
                    "steps": ["Completed"],
                    "playbook_id": "pb-1",
                    "created_at": now_ms() - 5000,
                }
            ]
        )
        await until(lambda: found(daemon) >= {"one-0", "one-1"}, what="rule one's watches to end")
        daemon.signal(signal.SIGTERM)
        run = await daemon.finish()
    by_id = {e["execution_id"]: e for e in run.events}
    assert by_id["one-0"]["discovered_by"] == "one"
    assert by_id["two-0"]["discovered_by"] == "two"
    assert run.diag("discover.rule_removed")[0]["rule"] == "one"


async def test_20000_runs_started_over_a_few_seconds_are_each_reported_once(
    tmp_path: Path, start_daemon: Any
) -> None:
    scripts = [
        {
            "workspace_id": WS,
            "id_prefix": "load-",
            "count": 20_000,
            "steps": ["Completed"],
            "created_at": now_ms() - 2000,
            "created_every": 0.25,
        },
    ]
    async with Simulator(api_key=API_KEY, scripts=scripts) as sim:
        config = write_config(
            tmp_path / "config.toml",
            sim,
            [],
            blink={"max_concurrency": 64},
            extra=rule(interval=0.5, overlap=1.0),
        )
        daemon = await start_daemon("run", "-c", str(config))
        # Looked at every 0.2 s: counting lines of a 10 MB output every millisecond
        # would take the CPU the simulator in this process needs.
        for _ in range(450):
            if daemon.stdout.count(b"\n") >= 20_000:
                break
            await asyncio.sleep(0.2)
        assert daemon.stdout.count(b"\n") >= 20_000, "20,000 events within 90 s"
        daemon.signal(signal.SIGTERM)
        run = await daemon.finish()
        gets, lists = sim.total_requests, sim.list_requests
    counts = Counter(e["execution_id"] for e in run.events)
    assert len(counts) == 20_000
    assert max(counts.values()) == 1
    # Each found once by the list and polled once (it has ended): no more.
    assert gets <= 20_000 + 100
    print(f"\nlist requests {lists}, GETs {gets}, per execution {(lists + gets) / 20_000:.3f}")
