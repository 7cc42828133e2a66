"""Helpers for whole-process tests: the real ``blink-watcher`` against the simulator."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from watcher.sim import Simulator

# Distinctive values, so a leak anywhere in the output is easy to find.
API_KEY = "bk_live_9f8e7d6c5b4a3921_integration"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"integration-webhook-signing-key!").decode()
SECRETS = (API_KEY, WEBHOOK_SECRET, WEBHOOK_SECRET.removeprefix("whsec_"))


def daemon_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    env.pop("BLINK_WATCHER_CONFIG", None)
    env.update(BLINK_API_KEY=API_KEY, WEBHOOK_SECRET=WEBHOOK_SECRET, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def toml_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


BLINK_DEFAULTS: dict[str, Any] = {
    "rate_limit": 0,
    "request_timeout": 2.0,
    "retry_backoff": 0.01,
    "retry_backoff_max": 0.05,
}
POLL_DEFAULTS: dict[str, Any] = {
    "interval": 0.02,
    "max_interval": 0.1,
    "jitter": 0.1,
    "not_found_grace": 2,
}


def _table(values: dict[str, Any]) -> str:
    return "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items())


def write_config(
    path: Path,
    sim: Simulator,
    executions: Iterable[str],
    *,
    workspace: str = "ws-main",
    blink: dict[str, Any] | None = None,
    poll: dict[str, Any] | None = None,
    sinks: str | None = None,
    extra: str = "",
) -> Path:
    """A config for a run against ``sim``: tiny intervals, no rate limit, log sink on stdout.

    ``blink`` and ``poll`` override single keys of the defaults above.
    """
    if sinks is None:
        sinks = '[[sinks]]\ntype = "log"\n'
    blink_values = {"base_url": sim.base_url, "workspace_id": workspace, **BLINK_DEFAULTS}
    path.write_text(
        f"""
[blink]
{_table({**blink_values, **(blink or {})})}

[poll]
{_table({**POLL_DEFAULTS, **(poll or {})})}

[watch]
executions = {toml_list(executions)}

[state]
path = "{path.parent / "state.db"}"

{extra}

{sinks}
""",
        encoding="utf-8",
    )
    return path


def webhook_sink(sim: Simulator, hook: str = "main", **settings: Any) -> str:
    lines = ["[[sinks]]", 'type = "webhook"', f'url = "{sim.hook_url(hook)}"']
    lines.append('secret_env = "WEBHOOK_SECRET"')
    settings.setdefault("backoff_initial", 0.01)
    settings.setdefault("backoff_max", 0.05)
    for key, value in settings.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@dataclass
class Run:
    """A finished daemon process and what it printed."""

    returncode: int
    stdout: str
    stderr: str

    @classmethod
    def parse(cls, returncode: int, stdout: bytes, stderr: bytes) -> Run:
        return cls(returncode, stdout.decode(), stderr.decode())

    @property
    def events(self) -> list[dict[str, Any]]:
        # Every stdout line of `run` must be one event: nothing else may go there.
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def diagnostics(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stderr.splitlines() if line.startswith("{")]

    def by_execution(self) -> dict[str, dict[str, Any]]:
        return {f"{e['workspace_id']}/{e['execution_id']}": e for e in self.events}

    def diag(self, name: str) -> list[dict[str, Any]]:
        return [d for d in self.diagnostics if d.get("event") == name]

    def assert_no_secrets(self) -> None:
        for secret in SECRETS:
            assert secret not in self.stdout
            assert secret not in self.stderr


class Daemon:
    """A running ``blink-watcher`` subprocess whose output is read as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stdout = bytearray()
        self.stderr = bytearray()
        assert proc.stdout is not None
        assert proc.stderr is not None
        self._readers = [
            asyncio.ensure_future(self._pump(proc.stdout, self.stdout)),
            asyncio.ensure_future(self._pump(proc.stderr, self.stderr)),
        ]

    @staticmethod
    async def _pump(stream: asyncio.StreamReader, into: bytearray) -> None:
        while chunk := await stream.read(65536):
            into += chunk

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def logged(self, event: str) -> bool:
        """Whether a diagnostic with this ``event`` name has been written so far."""
        return f'"event": "{event}"'.encode() in self.stderr

    async def finish(self, timeout: float = 30.0) -> Run:
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            await asyncio.gather(*self._readers)
            tail = self.stderr.decode()[-3000:]
            pytest.fail(f"daemon did not exit within {timeout}s; stderr:\n{tail}")
        await asyncio.gather(*self._readers)
        assert self.proc.returncode is not None
        return Run.parse(self.proc.returncode, bytes(self.stdout), bytes(self.stderr))
