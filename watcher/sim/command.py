"""The ``python -m watcher.sim`` command line: load scripts, serve until SIGTERM/SIGINT.

It prints one JSON line (``base_url``, ``hooks_base``, ``port``) once
listening, and exits 0 when stopped by a signal, 2 on a bad argument or
scripts file, 1 when it cannot listen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from watcher.sim.demo import demo_scripts
from watcher.sim.script import Script
from watcher.sim.simulator import Simulator


def _load_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


async def _serve(args: argparse.Namespace, api_key: str) -> None:
    scripts: list[Script] = []
    if args.scripts:
        loaded = _load_json(args.scripts)
        scripts.extend(loaded if isinstance(loaded, list) else [loaded])
    if args.demo:
        scripts.extend(demo_scripts())
    hook_scripts = _load_json(args.hook_scripts) if args.hook_scripts else None
    if hook_scripts is not None and not isinstance(hook_scripts, dict):
        raise ValueError(f"{args.hook_scripts}: expected an object of name -> tokens")
    sim = Simulator(
        api_key=api_key, scripts=scripts, hook_scripts=hook_scripts, host=args.host, port=args.port
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Signal handlers only set state; the coroutine below does the stopping.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with sim:
        line = {"base_url": sim.base_url, "hooks_base": sim.hooks_base, "port": sim.port}
        print(json.dumps(line), flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m watcher.sim``: serve the simulator until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m watcher.sim", description="Simulated Blink API and webhook receiver."
    )
    parser.add_argument("--scripts", help="JSON file: a list of execution scripts")
    parser.add_argument("--hook-scripts", help="JSON file: {receiver name: [tokens]}")
    parser.add_argument(
        "--api-key-env", default="BLINK_API_KEY", help="env var holding the accepted API key"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--demo", action="store_true", help="also load demo_scripts()")
    args = parser.parse_args(argv)
    api_key = os.environ.get(args.api_key_env)
    if not api_key:
        print(f"sim: error: ${args.api_key_env} is not set", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args, api_key))
    except ValueError as exc:
        print(f"sim: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken
        print(f"sim: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
