"""JSON decoding for API bodies: orjson where it is installed, the standard library otherwise.

orjson decodes a Blink execution body about three times faster than ``json``,
a visible share of what a poll costs (BENCHMARKS.md). orjson is stricter than
``json`` (NaN, lone surrogates, and it has no separate "not UTF-8" error):
whatever it refuses is decoded again by ``json``, so the result, and the error
for a body that really is malformed, are the standard library's. The one
difference left: an integer beyond 64 bits decodes as a (rounded) float; no
field the daemon reads comes near that. ``BLINK_WATCHER_PURE_JSON=1`` forces
the standard library.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

loads: Callable[[bytes], Any]


def _choose() -> tuple[str, Callable[[bytes], Any]]:
    if os.environ.get("BLINK_WATCHER_PURE_JSON") == "1":
        return "json", json.loads
    try:
        import orjson
    except ImportError:  # optional: plain json decodes the same, only slower
        return "json", json.loads
    fast = orjson.loads

    def loads(body: bytes) -> Any:
        try:
            return fast(body)
        except ValueError:  # orjson.JSONDecodeError: let json decide, and say why
            return json.loads(body)

    return "orjson", loads


BACKEND, loads = _choose()
