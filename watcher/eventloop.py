"""The daemon's event loop: uvloop where it is installed, asyncio's own otherwise.

uvloop runs the same aiohttp code on a libuv loop for less CPU per poll
(BENCHMARKS.md has the figures). It is a dependency on Linux; where it is
missing (another platform, a hand-made install) the daemon runs on plain
asyncio, identically. ``BLINK_WATCHER_EVENT_LOOP=asyncio`` forces asyncio's
loop, for a comparison or in case of a loop-specific problem.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """("uvloop", its loop factory) when available and not refused, else ("asyncio", None)."""
    if os.environ.get("BLINK_WATCHER_EVENT_LOOP", "").strip().lower() == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError:
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop ``loop_factory`` picks."""
    _, factory = loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
