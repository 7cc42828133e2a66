"""execution.state_changed for the sinks that ask for it: Paused alerts, once, through restarts."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from tests.integration.harness import API_KEY, webhook_sink, write_config
from tests.waiting import until
from watcher.sim import Simulator

WS = "ws-main"
ALL = [
    "execution.state_changed",
    "execution.finished",
    "execution.not_found",
    "execution.invalid",
    "execution.watch_timeout",
]


async def test_an_approval_channel_gets_the_pause_and_the_default_sink_only_the_end(
    tmp_path: Path, run_daemon: Any
) -> None:
    steps = ["Running", "Paused", "Paused", "Running", "Completed"]
    scripts = [{"workspace_id": WS, "execution_id": "ex", "steps": steps}]
    async with Simulator(api_key=API_KEY, scripts=scripts) as sim:
        sinks = '[[sinks]]\ntype = "log"\n' + webhook_sink(
            sim, "approvals", events=["execution.state_changed"], states=["Paused"]
        )
        config = write_config(tmp_path / "config.toml", sim, ["ex"], sinks=sinks)
        run = await run_daemon(config)
        hooks = [json.loads(d.body) for d in sim.deliveries if d.name == "approvals"]
    assert run.returncode == 0, run.stderr[-2000:]
    assert [e["event"] for e in run.events] == ["execution.finished"]  # as today
    assert len(hooks) == 1
    paused = hooks[0]
    assert (paused["event"], paused["state"], paused["previous_state"]) == (
        "execution.state_changed",
        "Paused",
        "Running",
    )
    assert paused["event_id"] != run.events[0]["event_id"]


async def test_each_change_is_sent_under_one_id_through_a_kill_9(
    tmp_path: Path, start_daemon: Any
) -> None:
    steps = ["Running", "Paused", *["Paused"] * 30, "Running", "Completed"]
    scripts = [{"workspace_id": WS, "execution_id": "ex", "steps": steps}]
    async with Simulator(api_key=API_KEY, scripts=scripts) as sim:
        sinks = f'[[sinks]]\ntype = "log"\nevents = {json.dumps(ALL)}\n'
        config = write_config(
            tmp_path / "config.toml", sim, ["ex"], sinks=sinks, poll={"max_interval": 0.02}
        )
        first = await start_daemon("run", "-c", str(config))
        await until(lambda: b'"state":"Paused"' in first.stdout, what="the pause")
        first.signal(signal.SIGKILL)
        await first.proc.wait()
        second = await start_daemon("run", "-c", str(config), "--exit-when-done")
        run = await second.finish()
        before = bytes(first.stdout).decode()
    assert run.returncode == 0, run.stderr[-2000:]
    events = [json.loads(line) for line in (before + run.stdout).splitlines() if line.strip()]
    changes: dict[tuple[Any, Any], set[str]] = {}
    for e in events:
        if e["event"] == "execution.state_changed":
            changes.setdefault((e["previous_state"], e["state"]), set()).add(e["event_id"])
    assert set(changes) == {(None, "Running"), ("Running", "Paused"), ("Paused", "Running")}
    assert all(len(ids) == 1 for ids in changes.values()), changes
    assert [e["state"] for e in events if e["event"] == "execution.finished"] == ["Completed"]
