"""Hand memory freed after a burst (start-up, a full-speed first round) back to the system.

Starting 100,000 watches builds large short-lived tables (the configured
keys against the store's history, the lists of watches to add); freed, they
stay in the C allocator's heap below live objects, so the process's RSS
keeps them: about 110 bytes per watch (BENCHMARKS.md). glibc's
``malloc_trim`` returns such free pages. Elsewhere (musl, macOS) it is a
no-op: memory is the same, only RSS is higher.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


def trim() -> bool:
    """Return free heap memory to the system; False where the C library cannot."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True
