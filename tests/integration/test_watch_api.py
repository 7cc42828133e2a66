"""The watch API of the real running daemon: routes, tokens, durability, and add/remove."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.harness import API_KEY, Daemon, daemon_env, write_config
from tests.integration.test_observability import free_port, samples
from tests.waiting import until
from watcher.sim import Simulator

WS = "ws-main"
TOKEN = "wapi-7d1c0ffee0ddba11-token"
SCRIPTS = [
    {"workspace_id": WS, "execution_id": "cfg", "steps": ["Running"]},
    {"workspace_id": WS, "execution_id": "slow", "steps": ["Running"]},
    {"workspace_id": WS, "execution_id": "ok", "steps": ["Running", "Running", "Completed"]},
    {"workspace_id": WS, "execution_id": "bad", "steps": ["Running", "Running", "Failed"]},
]


@dataclass
class Api:
    """A daemon with its listener, and an HTTP client that carries the token."""

    daemon: Daemon
    config: Path
    base: str
    http: aiohttp.ClientSession
    env: dict[str, str]

    async def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = TOKEN, **kw: Any
    ) -> tuple[int, Any]:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        if body is not None:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            kw["data"] = io.BytesIO(raw)
        async with self.http.request(method, self.base + path, headers=headers, **kw) as resp:
            text = await resp.text()
            if resp.content_type != "application/json":
                return resp.status, text
            return resp.status, json.loads(text) if text else None

    async def watching(self) -> list[str]:
        status, page = await self.call("GET", "/v1/watches?limit=1000")
        assert status == 200
        return [w["execution_id"] for w in page["watches"]]

    async def cli(self, *args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "watcher",
            *args,
            "-c",
            str(self.config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={k: v for k, v in self.env.items() if k != "BLINK_API_KEY"},  # not needed
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(api_key=API_KEY, scripts=SCRIPTS) as sim:
        yield sim


@pytest.fixture
async def api(tmp_path: Path, sim: Simulator, start_daemon: Any) -> AsyncIterator[Api]:
    port = free_port()
    config = write_config(
        tmp_path / "config.toml",
        sim,
        ["cfg"],
        poll={"interval": 0.02, "max_interval": 0.05},
        extra=f'[server]\nlisten = "127.0.0.1:{port}"\napi_token_env = "WATCH_API_TOKEN"',
    )
    env = daemon_env(WATCH_API_TOKEN=TOKEN)
    daemon = await start_daemon("run", "-c", str(config), env=env)
    async with aiohttp.ClientSession() as http:
        api = Api(daemon, config, f"http://127.0.0.1:{port}", http, env)
        await until(lambda: daemon.logged("service.started"), what="the daemon to start")
        await until(_answers(api), what="the listener")
        yield api


def _answers(api: Api) -> Any:
    async def check() -> bool:
        try:
            status, _ = await api.call("GET", "/v1/watches")
        except aiohttp.ClientConnectionError:
            return False
        return status == 200

    return check


def _events(daemon: Daemon) -> list[dict[str, Any]]:
    return [json.loads(line) for line in daemon.stdout.decode().splitlines() if line.strip()]


async def test_an_added_execution_is_watched_reported_and_not_watched_again(api: Api) -> None:
    status, view = await api.call("POST", "/v1/watches", {"execution_id": "ok"})
    assert status == 201
    assert view["status"] == "added"
    assert view["workspace_id"] == WS  # the config's workspace by default
    status, view = await api.call("POST", "/v1/watches", {"execution_id": "ok"})
    assert (status, view["status"]) == (200, "watching")

    await until(lambda: any(e["execution_id"] == "ok" for e in _events(api.daemon)), what="event")
    event = next(e for e in _events(api.daemon) if e["execution_id"] == "ok")
    status, view = await api.call("GET", f"/v1/watches/{WS}/ok")
    assert status == 200
    assert view["phase"] == "reported"
    assert view["event_id"] == event["event_id"]
    assert view["state"] == "Completed"
    # Already reported: 200 with its event, and no second watch or event.
    status, view = await api.call("POST", "/v1/watches", {"executions": [{"execution_id": "ok"}]})
    assert status == 200
    assert view["executions"][0]["event_id"] == event["event_id"]
    assert "ok" not in await api.watching()
    assert [e["execution_id"] for e in _events(api.daemon)].count("ok") == 1


async def test_get_delete_and_their_not_found_answers(api: Api) -> None:
    assert (await api.call("POST", "/v1/watches", {"execution_id": "slow"}))[0] == 201
    status, view = await api.call("GET", f"/v1/watches/{WS}/slow")
    assert (status, view["phase"], view["source"]) == (200, "watching", "api")
    assert (await api.call("GET", f"/v1/watches/{WS}/nobody"))[0] == 404
    assert (await api.call("DELETE", f"/v1/watches/{WS}/slow"))[0] == 204
    assert (await api.call("GET", f"/v1/watches/{WS}/slow"))[0] == 404
    assert (await api.call("DELETE", f"/v1/watches/{WS}/slow"))[0] == 404
    # A watch the config lists is the config's to drop: 409 saying so, still watched.
    status, answer = await api.call("DELETE", f"/v1/watches/{WS}/cfg")
    assert status == 409
    assert "config.toml" in answer["error"]
    assert "cfg" in await api.watching()


async def test_pages_of_watches(api: Api) -> None:
    body = {"executions": [{"execution_id": f"page-{i:02d}"} for i in range(5)]}
    assert (await api.call("POST", "/v1/watches", body))[0] == 201
    status, page = await api.call("GET", "/v1/watches?limit=4")
    assert status == 200
    seen = [w["execution_id"] for w in page["watches"]]
    status, rest = await api.call("GET", f"/v1/watches?limit=4&after={page['next']}")
    seen += [w["execution_id"] for w in rest["watches"]]
    assert rest["next"] is None
    assert sorted(seen) == ["cfg", *(f"page-{i:02d}" for i in range(5))]
    assert (await api.call("GET", "/v1/watches?limit=0"))[0] == 400
    assert (await api.call("GET", "/v1/watches?phase=reported"))[0] == 400


@pytest.mark.parametrize(
    ("token", "status"), [(None, 401), ("wrong-token", 401), (TOKEN + "x", 401), (TOKEN, 200)]
)
async def test_every_v1_route_needs_the_token_and_health_does_not(
    api: Api, token: str | None, status: int
) -> None:
    assert (await api.call("GET", "/v1/watches", token=token))[0] == status
    assert (await api.call("GET", f"/v1/watches/{WS}/cfg", token=token))[0] == status
    posted = 201 if status == 200 else status
    assert (await api.call("POST", "/v1/watches", {"execution_id": "x"}, token=token))[0] == posted
    for path in ("/metrics", "/healthz", "/readyz"):
        assert (await api.call("GET", path, token=None))[0] in (200, 503), path
    assert TOKEN.encode() not in api.daemon.stderr + api.daemon.stdout


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        ({"execution_id": 42}, 400),
        ({"execution_id": ""}, 400),
        ({"execution_id": "x" * 257}, 400),
        ({"execution_id": "a#b"}, 400),
        ({"execution_id": "ok", "colour": "red"}, 400),
        ({"executions": [{"execution_id": f"e{i}"} for i in range(1001)]}, 400),
        ({"executions": [{"execution_id": "fine"}, {"execution_id": "bad id"}]}, 400),
        (b'{"execution_id": "' + b"x" * (1 << 20) + b'"}', 413),
    ],
)
async def test_bad_input_is_refused_whole_and_changes_nothing(
    api: Api, body: Any, status: int
) -> None:
    before = await api.watching()
    code, answer = await api.call("POST", "/v1/watches", body)
    assert code == status
    assert isinstance(answer["error"], str)
    assert await api.watching() == before


async def test_a_201_survives_kill_9_and_a_reload_does_not_drop_it(
    api: Api, start_daemon: Any
) -> None:
    assert (await api.call("POST", "/v1/watches", {"execution_id": "slow"}))[0] == 201
    api.daemon.signal(signal.SIGKILL)  # at once: only what was committed remains
    await api.daemon.proc.wait()
    api.daemon = await start_daemon("run", "-c", str(api.config), env=api.env)
    await until(_answers(api), what="the restarted listener")
    assert sorted(await api.watching()) == ["cfg", "slow"]

    api.daemon.signal(signal.SIGHUP)  # the config still lists only "cfg"
    await until(lambda: api.daemon.logged("config.reloaded"), what="the reload")
    assert sorted(await api.watching()) == ["cfg", "slow"]
    code, out, _ = await api.cli("status")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(WS)}
    assert rows[f"{WS}/slow"][-1] == "api"  # status says where each watch came from
    assert rows[f"{WS}/cfg"][-1] == "config"
    _, text = await api.call("GET", "/metrics", token=None)
    metrics = samples(text)
    key = (
        "blink_watcher_watch_api_requests_total",
        (("route", "/v1/watches"), ("status", "200")),
    )
    assert metrics[key] >= 1


async def test_add_wait_exits_0_for_completed_and_1_for_failed(api: Api) -> None:
    code, out, err = await api.cli("add", "--wait", "ok")
    assert code == 0, err
    assert f"{WS}/ok: added" in out
    assert f"{WS}/ok: reported Completed" in out
    code, out, _ = await api.cli("add", "--wait", "--json", "bad")
    assert code == 1
    assert json.loads(out)["executions"][0]["state"] == "Failed"
    assert TOKEN not in out


async def test_add_and_remove_say_why_they_fail(api: Api, tmp_path: Path, sim: Simulator) -> None:
    assert (await api.cli("add", "slow"))[0] == 0
    code, out, _ = await api.cli("remove", "slow")
    assert (code, out.strip()) == (0, f"{WS}/slow: removed")
    code, _, err = await api.cli("remove", "slow")
    assert code == 1
    assert "HTTP 404" in err
    code, _, err = await api.cli("add", "a#b")
    assert code == 2  # a usage error, caught before any request

    other = write_config(
        tmp_path / "other.toml",
        sim,
        ["cfg"],
        extra=f'[server]\nlisten = "127.0.0.1:{free_port()}"\napi_token_env = "WATCH_API_TOKEN"',
    )
    api.config = other
    code, _, err = await api.cli("add", "slow")
    assert code == 1
    assert "cannot reach the daemon" in err
    assert len(err.strip().splitlines()) == 1
