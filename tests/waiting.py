"""Waiting in unit tests without wall-clock luck: bounded polls and loop turns."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(condition: Callable[[], bool], *, limit_s: float = 10.0) -> None:
    """Wait for ``condition``; fail (rather than hang) if it never holds."""
    # Polling, not an Event: the conditions are on the fakes' counters, and an
    # Event for each one would hide what the test waits for.
    async with asyncio.timeout(limit_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.0005)


async def settle(turns: int = 50) -> None:
    """Let the loop turn ``turns`` times: whatever is ready to run has run."""
    for _ in range(turns):
        await asyncio.sleep(0)
