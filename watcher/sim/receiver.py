"""The webhook receiver: records every POST as a Delivery and answers as its hook script says.

``POST /hooks/{name}`` is recorded as a :class:`Delivery`, and a per-name
token list decides the answer, one token per request, the last repeated
(default ``["200"]``)::

    200 204 400 410 500 503 ...   that status (any of 200-599)
    429 / 429:S                   429, Retry-After: S (default "1", sent verbatim)
    drop                          the connection is aborted without a response
    slow:S                        wait S seconds, then 200; a client that gives up
                                  meanwhile is not answered (status stays None)
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from watcher.sim.script import parse_seconds

_HOOK_STATUSES: Final = frozenset(range(200, 600))


@dataclass(frozen=True, slots=True)
class HookStep:
    """One compiled receiver token."""

    status: int | None  # None: drop the connection
    retry_after: str | None = None
    delay_s: float = 0.0


def parse_hook_step(token: object) -> HookStep:
    """Compile one webhook receiver token; raises ValueError naming an unknown token."""
    if not isinstance(token, str):
        raise ValueError(f"hook token {token!r} is not a string")
    word, _, arg = token.partition(":")
    if word == "429":
        retry_after = arg if arg else "1"
        parse_seconds(token, retry_after)
        return HookStep(429, retry_after=retry_after)
    if word == "slow" and arg:
        return HookStep(200, delay_s=parse_seconds(token, arg))
    if token == "drop":
        return HookStep(None)
    if not arg and word.isdigit() and int(word) in _HOOK_STATUSES:
        return HookStep(int(word))
    raise ValueError(f"unknown hook token {token!r}")


_DEFAULT_HOOK_SCRIPT: Final = (HookStep(200),)


@dataclass(slots=True)
class Delivery:
    """One request the webhook receiver got.

    ``headers`` keys are lower-cased; ``status`` is the status answered, or
    None when no response reached the client (``drop``, or the client gave up
    during ``slow``).
    """

    name: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    status: int | None = None

    def event(self) -> Any:
        """The decoded JSON body (raises ValueError when it is not JSON)."""
        return json.loads(self.body)


class Receiver:
    """Every webhook receiver, by name: their hook scripts and the deliveries they got."""

    def __init__(self) -> None:
        self._hook_steps: dict[str, tuple[HookStep, ...]] = {}
        self._hook_cursor: dict[str, int] = {}
        self.deliveries: list[Delivery] = []
        self.in_flight = 0
        """Requests being handled right now (a ``slow:S`` one until it answers or is cancelled)."""

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Serve ``POST /hooks/{name}`` on ``router``."""
        router.add_post("/hooks/{name}", self._handle_hook)

    def set_hook_script(self, name: str, tokens: list[str]) -> None:
        """Set the receiver ``name``'s answers, one token per request, last repeated."""
        if not isinstance(tokens, list) or not tokens:
            raise ValueError(f"hook script for {name!r} must be a non-empty list of tokens")
        self._hook_steps[name] = tuple(parse_hook_step(token) for token in tokens)
        self._hook_cursor[name] = 0

    def delivered_events(self) -> list[Any]:
        """Decoded bodies of the deliveries answered 2xx, in arrival order."""
        return [
            d.event() for d in self.deliveries if d.status is not None and 200 <= d.status < 300
        ]

    def stats(self) -> list[dict[str, Any]]:
        """The deliveries, summarised for :meth:`watcher.sim.Simulator.stats`."""
        deliveries = []
        for d in self.deliveries:
            try:
                body = d.event()
            except ValueError:
                body = None
            event_id = body.get("event_id") if isinstance(body, dict) else None
            deliveries.append(
                {
                    "name": d.name,
                    "status": d.status,
                    "event_id": event_id,
                    "webhook_id": d.headers.get("webhook-id"),
                    "received_at": d.received_at,
                }
            )
        return deliveries

    async def _handle_hook(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        received_at = time.time()
        name = request.match_info["name"]
        body = await request.read()
        delivery = Delivery(
            name=name,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            received_at=received_at,
        )
        self.deliveries.append(delivery)
        steps = self._hook_steps.get(name, _DEFAULT_HOOK_SCRIPT)
        cursor = self._hook_cursor.get(name, 0)
        self._hook_cursor[name] = cursor + 1
        step = steps[min(cursor, len(steps) - 1)]
        if step.status is None:
            if request.transport is not None:
                request.transport.abort()
            return web.Response()  # never written
        if step.delay_s:
            # Cancelled here (handler_cancellation) if the client gives up,
            # leaving status None: the delivery never got an answer.
            await asyncio.sleep(step.delay_s)
        delivery.status = step.status
        if step.status == 204:
            return web.Response(status=204)
        if step.status == 200:
            return web.json_response({"ok": True})
        headers = {"Retry-After": step.retry_after} if step.retry_after is not None else None
        return web.json_response(
            {"ok": False, "error": f"receiver answered {step.status}"},
            status=step.status,
            headers=headers,
        )
