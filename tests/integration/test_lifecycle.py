"""Process lifecycle: the systemd notify protocol, SIGHUP reload, and signals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import API_KEY, daemon_env, write_config
from tests.waiting import until
from watcher.sim import Simulator

WS = "ws-main"


class NotifySocket:
    """The service manager's end of ``$NOTIFY_SOCKET``: records every datagram."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)

    def count(self, key: str, value: str | None = None) -> int:
        return sum(1 for m in self.messages if key in m and (value is None or m[key] == value))

    def index(self, key: str, start: int = 0) -> int:
        for i, m in enumerate(self.messages[start:], start):
            if key in m:
                return i
        raise AssertionError(f"no {key} after message {start}: {self.messages}")

    def close(self) -> None:
        self._task.cancel()
        self.sock.close()


@pytest.fixture
async def notify(tmp_path: Path) -> AsyncIterator[NotifySocket]:
    ns = NotifySocket(tmp_path / "notify.sock")
    yield ns
    ns.close()


RUNNING = {"workspace_id": WS, "execution_id": "running", "steps": ["Running"]}


async def test_notify_protocol_ready_watchdog_reload_stopping(
    tmp_path: Path, start_daemon: Any, notify: NotifySocket
) -> None:
    async with Simulator(api_key=API_KEY, scripts=[RUNNING]) as sim:
        config = write_config(tmp_path / "config.toml", sim, ["running"])
        env = daemon_env(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="100000")
        daemon = await start_daemon("run", "-c", str(config), env=env)

        await until(lambda: notify.count("READY") == 1, what="READY=1")
        ready = notify.messages[notify.index("READY")]
        assert ready["STATUS"].startswith("watching 1, finished 0")
        await until(lambda: notify.count("WATCHDOG", "1") >= 5, what="watchdog pings")

        daemon.signal(signal.SIGHUP)
        await until(lambda: notify.count("READY") == 2, what="READY=1 after reload")
        reloading = notify.index("RELOADING")
        assert notify.messages[reloading]["RELOADING"] == "1"
        assert int(notify.messages[reloading]["MONOTONIC_USEC"]) > 0
        assert notify.index("READY", reloading) > reloading

        daemon.signal(signal.SIGTERM)
        run = await daemon.finish()
        assert run.returncode == 0
        await until(lambda: notify.count("STOPPING") == 1, what="STOPPING=1")


async def test_no_notify_socket_means_no_notifications(tmp_path: Path, run_daemon: Any) -> None:
    done = {"workspace_id": WS, "execution_id": "a", "steps": ["Completed"]}
    async with Simulator(api_key=API_KEY, scripts=[done]) as sim:
        config = write_config(tmp_path / "config.toml", sim, ["a"])
        run = await run_daemon(config)
        assert run.returncode == 0
        assert not run.diag("systemd.notify_failed")


async def test_sighup_adds_and_removes_executions_and_keeps_a_broken_config_out(
    tmp_path: Path, start_daemon: Any, notify: NotifySocket
) -> None:
    scripts = [
        RUNNING,
        {"workspace_id": WS, "execution_id": "removed", "steps": ["Running"]},
        {"workspace_id": WS, "execution_id": "added", "steps": ["Running", "Completed"]},
    ]
    async with Simulator(api_key=API_KEY, scripts=scripts) as sim:
        path = tmp_path / "config.toml"
        write_config(path, sim, ["running", "removed"])
        env = daemon_env(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="100000")
        daemon = await start_daemon("run", "-c", str(path), env=env)
        await until(lambda: sim.requests_for(WS, "removed") >= 2, what="first polls")

        write_config(path, sim, ["running", "added"])
        daemon.signal(signal.SIGHUP)
        await until(lambda: daemon.logged("config.reloaded"), what="reload")
        removed_polls = sim.requests_for(WS, "removed")
        await until(lambda: b'"execution_id":"added"' in daemon.stdout, what="added's event")
        # Plenty of polls of the execution still watched, none more of the removed one
        # (one poll may have been in flight when the reload landed).
        baseline = sim.requests_for(WS, "running")
        await until(lambda: sim.requests_for(WS, "running") >= baseline + 10, what="polls")
        assert sim.requests_for(WS, "removed") <= removed_polls + 1

        # A broken file is reported and the running configuration kept.
        path.write_text("[blink\nthis is not toml")
        watchdogs = notify.count("WATCHDOG")
        daemon.signal(signal.SIGHUP)
        await until(lambda: daemon.logged("config.reload_failed"), what="reload failure")
        await until(lambda: notify.count("READY") == 3, what="READY after failed reload")
        baseline = sim.requests_for(WS, "running")
        await until(lambda: sim.requests_for(WS, "running") >= baseline + 5, what="polls")
        await until(lambda: notify.count("WATCHDOG") >= watchdogs + 3, what="watchdog")

        daemon.signal(signal.SIGTERM)
        run = await daemon.finish()
        assert run.returncode == 0
        failure = run.diag("config.reload_failed")[0]
        assert str(path) in failure["reason"]
        assert "line 1" in failure["reason"]
        events = [json.loads(line) for line in run.stdout.splitlines()]
        assert [e["execution_id"] for e in events] == ["added"]
        run.assert_no_secrets()


async def test_sigint_stops_like_sigterm(tmp_path: Path, start_daemon: Any) -> None:
    async with Simulator(api_key=API_KEY, scripts=[RUNNING]) as sim:
        config = write_config(tmp_path / "config.toml", sim, ["running"])
        daemon = await start_daemon("run", "-c", str(config))
        await until(lambda: sim.requests_for(WS, "running") >= 1, what="a poll")
        daemon.signal(signal.SIGINT)
        run = await daemon.finish()
        assert run.returncode == 0
        assert run.diag("service.stopped")[0]["reason"] == "stop"


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ('[blink]\nbase_url = "http://127.0.0.1:1/api/v1"\nrate_limt = 3\n', "blink.rate_limt"),
        ("[poll]\ninterval = -1\n", "poll.interval"),
        ("[blink\n", "line 1"),
    ],
)
async def test_config_errors_exit_78_with_one_line(
    tmp_path: Path, start_daemon: Any, content: str, key: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(content)
    for command in ("run", "check-config"):
        run = await (await start_daemon(command, "-c", str(path))).finish()
        assert run.returncode == 78
        assert run.stdout == ""
        lines = run.stderr.splitlines()
        assert len(lines) == 1, run.stderr
        assert str(path) in lines[0]
        assert key in lines[0]


async def test_missing_config_file_exits_78(tmp_path: Path, start_daemon: Any) -> None:
    run = await (await start_daemon("run", "-c", str(tmp_path / "nope.toml"))).finish()
    assert run.returncode == 78
    assert "nope.toml" in run.stderr
    assert "Traceback" not in run.stderr


async def test_check_config_prints_effective_config_without_secrets(
    tmp_path: Path, start_daemon: Any
) -> None:
    async with Simulator(api_key=API_KEY) as sim:
        config = write_config(tmp_path / "config.toml", sim, ["a"])
        run = await (await start_daemon("check-config", "-c", str(config))).finish()
        assert run.returncode == 0
        assert "api_key" in run.stdout
        assert "redacted" in run.stdout
        run.assert_no_secrets()


async def test_check_config_warns_about_a_placeholder_webhook_host(
    tmp_path: Path, start_daemon: Any
) -> None:
    async with Simulator(api_key=API_KEY) as sim:
        sinks = '[[sinks]]\ntype = "webhook"\nurl = "https://hooks.example.com/blink"\n'
        config = write_config(tmp_path / "config.toml", sim, ["a"], sinks=sinks)
        run = await (await start_daemon("check-config", "-c", str(config))).finish()

    assert run.returncode == 0  # a warning, not an error
    assert "# warning: " in run.stderr
    assert "sinks[0].url: https://hooks.example.com is a placeholder host" in run.stderr


async def test_usage_error_exits_2(start_daemon: Any) -> None:
    run = await (await start_daemon("run", "--no-such-flag")).finish()
    assert run.returncode == 2


async def test_a_taken_listen_port_is_one_clear_error(tmp_path: Path, start_daemon: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with Simulator(api_key=API_KEY, scripts=[RUNNING]) as sim:
            config = write_config(
                tmp_path / "config.toml",
                sim,
                ["running"],
                extra=f'[server]\nlisten = "127.0.0.1:{port}"',
            )
            run = await (await start_daemon("run", "-c", str(config))).finish()
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    failure = run.diag("server.failed")[0]
    assert str(port) in failure["reason"]


async def test_reload_with_new_api_settings_keeps_every_watch(
    tmp_path: Path, start_daemon: Any
) -> None:
    scripts = [
        {"workspace_id": WS, "execution_id": f"ex-{i}", "steps": ["Running"] * 30 + ["Completed"]}
        for i in range(6)
    ]
    async with Simulator(api_key=API_KEY, scripts=scripts) as sim:
        path = tmp_path / "config.toml"
        ids = [f"ex-{i}" for i in range(6)]
        write_config(path, sim, ids, poll={"interval": 0.01, "max_interval": 0.01})
        daemon = await start_daemon("run", "-c", str(path), "--exit-when-done")
        await until(lambda: sim.total_requests >= 30, what="polls under way")
        # A resized worker pool and a new API session, mid-flight.
        write_config(
            path,
            sim,
            ids,
            blink={"max_concurrency": 2, "request_timeout": 3.0},
            poll={"interval": 0.01, "max_interval": 0.01},
        )
        daemon.signal(signal.SIGHUP)
        run = await daemon.finish()
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.diag("config.reloaded")
        assert sorted(e["execution_id"] for e in run.events) == ids
        assert {e["state"] for e in run.events} == {"Completed"}
        # A poll cut short by the pool resize is not counted, but its step was served.
        assert all(29 <= e["polls"] <= 31 for e in run.events), [e["polls"] for e in run.events]


def state_files(directory: Path) -> dict[str, int]:
    """Each state file (the database, its WAL, the lock) and when it last changed."""
    return {p.name: p.stat().st_mtime_ns for p in directory.glob("state.db*")}


async def test_a_second_daemon_on_the_same_state_file_refuses_to_start(
    tmp_path: Path, start_daemon: Any, run_daemon: Any
) -> None:
    async with Simulator(api_key=API_KEY, scripts=[RUNNING]) as sim:
        config = write_config(tmp_path / "config.toml", sim, ["running"])
        first = await start_daemon("run", "-c", str(config))
        state = tmp_path / "state.db"

        def first_state_saved() -> bool:
            # After this the first daemon writes nothing more (its polls change nothing),
            # so any change to the files below would be the second daemon's doing.
            try:
                with contextlib.closing(
                    sqlite3.connect(f"{state.as_uri()}?mode=ro", uri=True)
                ) as db:
                    return bool(db.execute("SELECT count(*) FROM watches").fetchone()[0])
            except sqlite3.Error:  # not created, or not migrated yet
                return False

        await until(lambda: state.exists() and first_state_saved(), what="the first state")
        files = state_files(tmp_path)

        second = await run_daemon(config, timeout=15)

        assert second.returncode == 1
        [refusal] = second.diag("store.in_use")
        assert str(state) in refusal["reason"]
        assert f"process {first.pid}" in refusal["reason"]
        assert second.events == []
        assert state_files(tmp_path) == files
        assert first.proc.returncode is None  # the first one runs on
        first.signal(signal.SIGTERM)
        assert (await first.finish()).returncode == 0
