"""The reference clients: the bare aiohttp loop (the denominator) and a naive ``requests`` loop.

Run as ``python -m bench.clients {bare,naive} --base-url URL --workspace WS
--executions N --polls P``; each makes the same ``N * P`` polls the daemon
makes (every execution answers Running ``P - 1`` times, then Completed) and
prints one JSON line with what it did. The harness measures the process's CPU
from outside (``os.wait4``), so nothing here times itself.

The bare loop is what "GET + JSON decode with 64 in flight" means with no
product around it: the daemon's own event loop type (plain asyncio), its
JSON library (stdlib ``json``), its session headers and connection limit,
and ``await resp.read()`` + ``json.loads`` as in ``watcher.blink``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any

API_KEY = "bench-key"
HEADERS = {"BLINK-API-KEY": API_KEY, "accept": "application/json", "user-agent": "bench/0"}


def poll_urls(base_url: str, workspace: str, executions: int, polls: int) -> Iterator[str]:
    """Every URL to GET, round-robin: each execution's k-th poll before any (k+1)-th."""
    urls = [f"{base_url}/workspace/{workspace}/executions/ex-{i}" for i in range(executions)]
    for _ in range(polls):
        yield from urls


async def bare_loop(urls: Iterator[str], concurrency: int, json_lib: str = "json") -> int:
    """GET + decode every URL with ``concurrency`` requests in flight; returns the count."""
    import aiohttp

    loads: Any = json.loads
    if json_lib == "orjson":  # bench-only experiment, see inproc.py
        import orjson

        loads = orjson.loads
    done = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=HEADERS, connector=connector) as session:

        async def worker() -> None:
            nonlocal done
            for url in urls:  # one shared iterator: workers take the next URL as they free up
                async with session.get(url, allow_redirects=False) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"GET {url}: HTTP {resp.status}")
                obj = loads(body)
                if not isinstance(obj, dict):
                    raise RuntimeError(f"GET {url}: not a JSON object")
                done += 1

        async with asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(worker())
    return done


def naive_loop(base_url: str, workspace: str, executions: int) -> int:
    """What a first script looks like: one session, poll each execution until it ends."""
    import requests

    done = 0
    with requests.Session() as session:
        session.trust_env = False  # loopback only: no proxy from the environment
        session.headers.update(HEADERS)
        for i in range(executions):
            url = f"{base_url}/workspace/{workspace}/executions/ex-{i}"
            while True:
                resp = session.get(url, timeout=10)
                resp.raise_for_status()
                done += 1
                if resp.json().get("state_ui") == "Completed":
                    break
    return done


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.clients``."""
    parser = argparse.ArgumentParser(prog="python -m bench.clients")
    parser.add_argument("kind", choices=["bare", "naive"])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--executions", type=int, required=True)
    parser.add_argument("--polls", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--json", dest="json_lib", choices=["json", "orjson"], default="json")
    args = parser.parse_args(argv)
    if args.kind == "naive":
        done = naive_loop(args.base_url, args.workspace, args.executions)
    else:
        urls = poll_urls(args.base_url, args.workspace, args.executions, args.polls)
        coro = bare_loop(urls, args.concurrency, args.json_lib)
        if args.loop == "uvloop":
            import uvloop

            done = uvloop.run(coro)
        else:
            done = asyncio.run(coro)
    print(json.dumps({"requests": done}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
