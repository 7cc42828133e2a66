"""The one way tests wait: for a condition, bounded, never for a length of time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    limit_s: float = 15.0,
    what: str = "",
    turns: int | None = None,
) -> None:
    """Wait for ``condition`` (sync or async); fail, never hang, if it does not hold in time.

    ``limit_s`` only bounds how long a broken run takes to fail; it never
    measures a healthy one. With ``turns``, wait by event-loop turns instead of
    time: for code that must get there without any timer firing.
    """

    # Polling, not an Event: the conditions are on fakes' counters or another
    # process's output, and an Event for each would hide what the test waits for.
    async def holds() -> bool:
        result = condition()
        return bool(await result) if inspect.isawaitable(result) else bool(result)

    if turns is not None:
        for _ in range(turns):
            if await holds():
                return
            await asyncio.sleep(0)
        raise AssertionError(f"{what or 'condition'} never held within {turns} loop turns")
    try:
        async with asyncio.timeout(limit_s):
            while not await holds():  # noqa: ASYNC110 (see above: polling on purpose)
                await asyncio.sleep(0.001)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {limit_s:g}s waiting for {what or condition}"
        ) from None


async def settle(turns: int = 50) -> None:
    """Let the loop turn ``turns`` times: whatever is ready to run has run."""
    for _ in range(turns):
        await asyncio.sleep(0)


def wait_for(
    condition: Callable[[], T | None],
    *,
    timeout_s: float,
    what: str,
    diagnostics: Callable[[], str] | None = None,
) -> T:
    """``until`` for code with no event loop (a test driving systemd from outside).

    Returns the first truthy value ``condition`` gives.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f"\n{diagnostics()}" if diagnostics else ""
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}{detail}")
        time.sleep(0.05)
