"""Run the daemon's ``Service`` inside this process, to count what only the process sees.

``python -m bench.inproc -c FILE [--loop uvloop] [--json orjson] [--profile OUT]``
does what ``blink-watcher run -c FILE --exit-when-done`` does, then prints one
JSON line: the store's committed transactions (``Store.writes``) and how
often each kind of store write was queued. It is a separate process so its
instrumentation never touches the figures measured on the real daemon.

``--loop uvloop`` / ``--json orjson`` are bench-only experiments: they swap
the event loop, or the JSON decoder ``watcher.blink`` uses for API bodies,
without changing the daemon. ``--profile`` writes a cProfile of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import sys
import types
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any


def _count_calls(cls: type, names: Sequence[str], counts: Counter[str]) -> None:
    """Wrap ``cls.<name>`` for each name so every call is counted (this process only)."""
    for name in names:
        original = getattr(cls, name)

        def wrapper(
            self: Any, *args: Any, __f: Callable[..., Any] = original, __n: str = name, **kw: Any
        ) -> Any:
            counts[__n] += 1
            return __f(self, *args, **kw)

        setattr(cls, name, wrapper)


def _use_orjson() -> None:
    import orjson

    import watcher.blink

    # watcher.blink calls json.loads(body) on every API response; nothing else changes.
    shim = types.SimpleNamespace(loads=orjson.loads, dumps=json.dumps)
    watcher.blink.json = shim  # type: ignore[attr-defined,assignment]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.inproc``."""
    parser = argparse.ArgumentParser(prog="python -m bench.inproc")
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--json", dest="json_lib", choices=["json", "orjson"], default="json")
    parser.add_argument("--profile", help="write a cProfile of the run here")
    args = parser.parse_args(argv)

    from watcher import logs as wlogging
    from watcher.config import load_config
    from watcher.service import Service
    from watcher.store import Store

    counts: Counter[str] = Counter()
    _count_calls(Store, ["save_watch", "forget_watch", "record_event", "update_delivery"], counts)
    if args.json_lib == "orjson":
        _use_orjson()
    config = load_config(args.config)
    wlogging.configure(config.log_level, config.log_format)
    service = Service(config, exit_when_done=True)

    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    if args.loop == "uvloop":
        import uvloop

        code = uvloop.run(service.run())
    else:
        code = asyncio.run(service.run())
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    report = {
        "exit_code": code,
        "executions": len(config.executions),
        "store_transactions": service.store.writes,
        "finished": service.scheduler.finished,
        **{f"calls_{name}": n for name, n in sorted(counts.items())},
    }
    print(json.dumps(report), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
