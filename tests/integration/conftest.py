"""Fixtures that start the real ``blink-watcher`` process and always clean it up."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Daemon, Run, daemon_env


@pytest.fixture
async def start_daemon() -> AsyncIterator[Callable[..., Any]]:
    """Start ``blink-watcher ARGS...``; every process is killed at teardown."""
    procs: list[asyncio.subprocess.Process] = []

    async def start(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> Daemon:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "watcher",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env or daemon_env(),
            **kwargs,
        )
        procs.append(proc)
        return Daemon(proc)

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()


@pytest.fixture
async def run_daemon(start_daemon: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``blink-watcher run -c CONFIG --exit-when-done`` to completion."""

    async def run(config: Path, *extra: str, timeout: float = 30.0, **kwargs: Any) -> Run:
        daemon = await start_daemon("run", "-c", str(config), "--exit-when-done", *extra, **kwargs)
        result: Run = await daemon.finish(timeout)
        return result

    return run
