"""A lean canned-response Blink API for throughput measurements.

``python -m bench.server`` prints one JSON line (``{"port": N, "base_url": ...}``)
once listening and serves until SIGTERM/SIGINT.

Why not ``watcher.sim``: the simulator builds a fresh, realistic JSON body per
request, which costs more CPU than the client under test spends on it, so at
tens of thousands of requests per second it, not the client, would set the
pace (a slow server makes every client wake more often for fewer responses,
which inflates CPU per request on both sides of the ratio). This server
answers with bytes prepared once, so it outpaces any Python client on the
other CPU. The bodies are the simulator's own, fetched from an in-process
``Simulator`` at start-up, so the client decodes exactly what the sim serves.

What an execution answers is chosen by its workspace ID, so one server serves
every scenario without a control API::

    GET /api/v1/workspace/{tag}-d{N}/executions/{id}
        N > 0: Running for the first N-1 GETs of that (workspace, id), then Completed
        N = 0: Running forever (no per-execution counter is kept)

``GET /_bench/stats`` answers ``{"total": T, "workspaces": {ws: count}}``.
HTTP/1.1 keep-alive, GET only, no request bodies: all the clients here need.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from typing import Final

import aiohttp

from watcher.sim import Simulator

API_PREFIX: Final = b"/api/v1/workspace/"
_KEY: Final = "bench-key"
# The request head is never larger than this; anything bigger is a broken client.
_MAX_HEAD: Final = 64 * 1024


def _response(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"\r\n" + body
    )


def polls_to_complete(workspace: str) -> int:
    """``N`` from a workspace named ``TAG-dN`` (0, Running forever, when absent)."""
    _, sep, digits = workspace.rpartition("-d")
    return int(digits) if sep and digits.isdigit() else 0


class CannedApi:
    """The request counters and canned responses shared by every connection."""

    def __init__(self, running: bytes, completed: bytes) -> None:
        self.running = _response(b"200 OK", running)
        self.completed = _response(b"200 OK", completed)
        self.not_found = _response(
            b"404 Not Found", b'{"message": "not found", "status": 404, "details": ""}'
        )
        self.total = 0
        self.per_workspace: dict[bytes, int] = {}
        self._polls: dict[bytes, int] = {}  # path -> GETs so far (only for "-dN", N > 0)
        self._limits: dict[bytes, int] = {}  # workspace -> N, parsed once

    def answer(self, target: bytes) -> bytes:
        """The full response bytes for a GET of ``target``."""
        path = target.split(b"?", 1)[0]
        if path.startswith(API_PREFIX):
            parts = path[len(API_PREFIX) :].split(b"/")
            if len(parts) == 3 and parts[1] == b"executions" and parts[2]:
                return self._execution(parts[0], path)
        if path == b"/_bench/stats":
            stats = {
                "total": self.total,
                "workspaces": {k.decode(): v for k, v in self.per_workspace.items()},
            }
            return _response(b"200 OK", json.dumps(stats).encode())
        return self.not_found

    def _execution(self, workspace: bytes, path: bytes) -> bytes:
        self.total += 1
        self.per_workspace[workspace] = self.per_workspace.get(workspace, 0) + 1
        limit = self._limits.get(workspace)
        if limit is None:
            limit = self._limits[workspace] = polls_to_complete(workspace.decode())
        if limit == 0:
            return self.running
        n = self._polls.get(path, 0) + 1
        self._polls[path] = n
        return self.completed if n >= limit else self.running


class _Connection(asyncio.Protocol):
    def __init__(self, api: CannedApi) -> None:
        self.api = api
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        out: list[bytes] = []
        close = False
        # Several requests may arrive in one read (pipelining); answer all in order.
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _MAX_HEAD:
                    self.transport.close()
                    return
                break
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            line, _, headers = head.partition(b"\r\n")
            try:
                _method, target, _version = line.split(b" ", 2)
            except ValueError:
                self.transport.close()
                return
            out.append(self.api.answer(target))
            if b"connection: close" in headers.lower():
                close = True
                break
        if out:
            self.transport.write(b"".join(out))
        if close:
            self.transport.close()


async def sim_bodies() -> tuple[bytes, bytes]:
    """A Running and a Completed 200 body exactly as ``watcher.sim`` serves them."""
    scripts = [
        {
            "workspace_id": "ws-bench",
            "execution_id": f"01HZBENCH{state.upper()}",
            "steps": [state],
            "fields": {"playbook_name": "Isolate compromised host"},
        }
        for state in ("Running", "Completed")
    ]
    async with (
        Simulator(api_key=_KEY, scripts=scripts) as sim,
        aiohttp.ClientSession(headers={"BLINK-API-KEY": _KEY}) as session,
    ):
        bodies = []
        for script in scripts:
            url = f"{sim.base_url}/workspace/ws-bench/executions/{script['execution_id']}"
            async with session.get(url) as resp:
                resp.raise_for_status()
                bodies.append(await resp.read())
    return bodies[0], bodies[1]


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT, after printing the listening line."""
    running, completed = await sim_bodies()
    api = CannedApi(running, completed)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(api), host, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    line = {
        "port": bound,
        "base_url": f"http://{host}:{bound}/api/v1",
        "body_bytes": [len(running), len(completed)],
    }
    print(json.dumps(line), flush=True)
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.server``."""
    parser = argparse.ArgumentParser(prog="python -m bench.server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
