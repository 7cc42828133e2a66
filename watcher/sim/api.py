"""The simulated Blink GET route: auth, which script answers, the faults, per-execution counters.

It answers ``GET /api/v1/workspace/{ws_id}/executions/{id}`` the way the real
API does: the ``BLINK-API-KEY`` header is checked first, an unscripted ID is a
404, and a scripted one answers its next step (see :mod:`watcher.sim.script`).
"""

from __future__ import annotations

import asyncio
import bisect
import hmac
import time
from array import array
from collections.abc import Iterable
from typing import Any, Final

from aiohttp import web

from watcher.sim.bodies import (
    HTML_502,
    NOT_JSON,
    ExecutionBodies,
    dumps,
    error_body,
    wrong_types_body,
)
from watcher.sim.listing import Listing
from watcher.sim.script import Group, Program, Script, compile_script

API_PREFIX: Final = "/api/v1"
HUGE_BODY_BYTES: Final = 8 << 20


def json_response(obj: object) -> web.Response:
    """A 200 with ``obj`` as its JSON body."""
    return web.Response(body=dumps(obj), content_type="application/json")


def _error_response(status: int, retry_after: str | None = None) -> web.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return web.Response(
        status=status,
        body=dumps(error_body(status)),
        content_type="application/json",
        headers=headers,
    )


async def _truncated_response(request: web.Request, body: bytes) -> web.StreamResponse:
    # Promise the whole body, send half, close: the client sees a payload
    # error ("not enough data to satisfy content length"), not a clean EOF.
    response = web.StreamResponse()
    response.content_type = "application/json"
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.close()
    return response


def _nonzero(counts: array[int]) -> Iterable[int]:
    return (i for i, c in enumerate(counts) if c)


class BlinkApi:
    """The simulated execution GET: scripts, the key it accepts, and what it was asked."""

    def __init__(self, *, api_key: str) -> None:
        self._api_key = api_key.encode()
        self._exact: dict[tuple[str, str], Group] = {}
        self._bulk: dict[str, list[Group]] = {}  # per workspace, newest first
        self._unknown_requests: dict[tuple[str, str], int] = {}
        self._bodies = ExecutionBodies()
        self.listing = Listing(self.groups)
        self._huge_padding: bytes | None = None
        self.total_requests = 0
        """Every GET of an execution, including 401s and 404s."""
        self.auth_failures = 0
        self.apply_view_seen = False

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Serve the execution GET on ``router``."""
        # allow_head=False: a HEAD must not consume a step.
        router.add_get(
            API_PREFIX + "/workspace/{ws_id}/executions/{id}", self._handle_get, allow_head=False
        )
        router.add_get(
            API_PREFIX + "/workspace/{ws_id}/executions", self._handle_list, allow_head=False
        )

    def groups(self, workspace_id: str) -> list[Group]:
        """Every script of a workspace, oldest first (what the list endpoint lists)."""
        exact = [g for (ws, _), g in self._exact.items() if ws == workspace_id]
        return exact + list(reversed(self._bulk.get(workspace_id, [])))

    async def _handle_list(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get("BLINK-API-KEY")
        if key is None or not hmac.compare_digest(key.encode(), self._api_key):
            self.auth_failures += 1
            return _error_response(401)
        return await self.listing.handle(request, request.match_info["ws_id"])

    # ---------------------------------------------------------------- scripting

    def add_scripts(self, scripts: Iterable[Script]) -> None:
        """Add (or replace) execution scripts; all are validated before any is added."""
        groups = [compile_script(script) for script in scripts]
        for group in groups:
            if group.execution_id is not None:
                self._exact[(group.workspace_id, group.execution_id)] = group
            else:
                self._bulk.setdefault(group.workspace_id, []).insert(0, group)

    def set_api_key(self, key: str) -> None:
        """Change the key the API accepts."""
        self._api_key = key.encode()

    # ------------------------------------------------------------------ inspection

    def _resolve(self, workspace_id: str, execution_id: str) -> tuple[Group, int] | None:
        group = self._exact.get((workspace_id, execution_id))
        if group is not None:
            return group, 0
        for group in self._bulk.get(workspace_id, ()):
            if not execution_id.startswith(group.prefix):
                continue
            digits = execution_id[len(group.prefix) :]
            # Only the canonical spelling: "ex-7", not "ex-07" or non-ASCII digits.
            if digits.isascii() and digits.isdigit() and (digits == "0" or digits[0] != "0"):
                index = int(digits)
                if index < group.count:
                    return group, index
        return None

    def requests_for(self, workspace_id: str, execution_id: str) -> int:
        """GETs received for this execution, faults included, 401s excluded."""
        found = self._resolve(workspace_id, execution_id)
        if found is None:
            return self._unknown_requests.get((workspace_id, execution_id), 0)
        group, index = found
        return group.requests[index]

    def requests_after_terminal(self, workspace_id: str, execution_id: str) -> int:
        """GETs received after a 200 with a terminal state was served for it."""
        found = self._resolve(workspace_id, execution_id)
        if found is None:
            return 0
        group, index = found
        return group.after_terminal[index]

    def terminal_at(self, workspace_id: str, execution_id: str) -> float | None:
        """Wall time the execution became terminal, or None (not yet / never)."""
        found = self._resolve(workspace_id, execution_id)
        return None if found is None else found[0].terminal_at(found[1])

    def stats(self) -> dict[str, Any]:
        """The API's part of :meth:`watcher.sim.Simulator.stats`."""
        requests: dict[str, int] = {}
        after_terminal: dict[str, int] = {}
        terminal_at: dict[str, float] = {}
        groups = [*self._exact.values(), *(g for gs in self._bulk.values() for g in gs)]
        for group in groups:
            counts = group.requests
            for index in _nonzero(counts):
                key = f"{group.workspace_id}/{group.execution_id_at(index)}"
                requests[key] = counts[index]
                after_terminal[key] = group.after_terminal[index]
                at = group.terminal_at(index)
                if at is not None:
                    terminal_at[key] = at
        for (workspace_id, execution_id), count in self._unknown_requests.items():
            requests[f"{workspace_id}/{execution_id}"] = count
        return {
            "total_requests": self.total_requests,
            "auth_failures": self.auth_failures,
            "apply_view_seen": self.apply_view_seen,
            "requests": requests,
            "after_terminal": after_terminal,
            "terminal_at": terminal_at,
        }

    # ---------------------------------------------------------------- the route

    async def _handle_get(self, request: web.Request) -> web.StreamResponse:
        self.total_requests += 1
        key = request.headers.get("BLINK-API-KEY")
        if key is None or not hmac.compare_digest(key.encode(), self._api_key):
            # Checked before anything else, like the real API, and without
            # consuming a step: auth failures are not polls of the execution.
            self.auth_failures += 1
            return _error_response(401)
        if request.query.get("withApplyView") == "true":
            self.apply_view_seen = True
        workspace_id = request.match_info["ws_id"]
        execution_id = request.match_info["id"]
        found = self._resolve(workspace_id, execution_id)
        if found is None:
            k = (workspace_id, execution_id)
            self._unknown_requests[k] = self._unknown_requests.get(k, 0) + 1
            return _error_response(404)

        group, index = found
        now = time.time()
        n = group.requests[index]
        group.requests[index] = n + 1
        if n == 0:
            group.first_at[index] = now
        if group.served_terminal_at[index]:
            group.after_terminal[index] += 1
        program = group.program
        if program.offsets is None:
            at = n if n < len(program.steps) else len(program.steps) - 1
        else:
            at = bisect.bisect_right(program.offsets, now - group.first_at[index]) - 1
        step = program.steps[at]
        kind = step.kind

        if kind == "state":
            body = self._bodies.execution(group, index, program.shown[at], n, now)
            self._served(group, index, program, at, now)
            return json_response(body)
        if kind == "error":
            return _error_response(step.status, step.retry_after)
        if kind == "slow":
            await asyncio.sleep(step.delay_s)
            now = time.time()
            body = self._bodies.execution(group, index, program.shown[at], n, now)
            self._served(group, index, program, at, now)
            return json_response(body)
        if kind == "reset":
            if request.transport is not None:
                request.transport.abort()
            return web.Response()  # never written: the transport is gone
        if kind == "html":
            return web.Response(status=502, body=HTML_502, content_type="text/html")
        if kind == "empty":
            return web.Response(status=500)
        if kind == "notjson":
            return web.Response(body=NOT_JSON, content_type="application/json")
        if kind == "wrongtypes":
            return json_response(wrong_types_body(workspace_id, execution_id))
        body = self._bodies.execution(group, index, program.shown[at], n, now)
        if kind == "nonutf8":
            # A lenient decoder still finds the state; a strict one must not crash.
            return web.Response(
                body=b'{"note": "caf\xe9 \xff\xfe", ' + dumps(body)[1:],
                content_type="application/json",
            )
        if kind == "huge":
            if self._huge_padding is None:
                self._huge_padding = b"x" * HUGE_BODY_BYTES
            return web.Response(
                body=dumps(body)[:-1] + b', "padding": "' + self._huge_padding + b'"}',
                content_type="application/json",
            )
        assert kind == "truncated", kind
        return await _truncated_response(request, dumps(body))

    @staticmethod
    def _served(group: Group, index: int, program: Program, at: int, now: float) -> None:
        if program.terminal[at] and not group.served_terminal_at[index]:
            group.served_terminal_at[index] = now
