"""The watch API: hand executions to the running daemon over HTTP (docs/api.md).

Every ``/v1`` route needs the configured bearer token. A 201 is answered only
once the watch is committed to the store, so ``kill -9`` right after it loses
nothing, and a restart or reload keeps it though the config does not list it.
Bad input is refused whole with ``{"error": "..."}``; nothing changes.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from watcher.api_input import InputError, parse_key, parse_watches
from watcher.models import ExecutionKey, Reported, WatchRow, format_key
from watcher.store.postgres import PostgresStore

if TYPE_CHECKING:
    from watcher.service import Service

PREFIX: Final = "/v1/"
MAX_BODY: Final = 1 << 20  # 1 MiB: a request larger than this is refused unread
# /v1 requests handled at once; more get 503 + Retry-After at once, so that a
# flood of API calls never holds up polling or deliveries behind it.
MAX_IN_FLIGHT: Final = 32
PAGE_DEFAULT: Final = 100
PAGE_MAX: Final = 1000

Observe = Callable[[str, int], None]


def error(status: int, message: str, **headers: str) -> web.Response:
    """The API's one error shape: ``{"error": "..."}``."""
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def auth_middleware(service: Service, observe: Observe | None = None) -> Middleware:
    """Refuse any ``/v1`` request without the token; other routes pass untouched.

    The token is read from the running config at each request, so a reload
    that changes it takes effect at once. /metrics, /healthz and /readyz never
    need it: a remote Prometheus scrape keeps working without a credential.
    """
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        server = service.config.server
        token = None if server is None else server.api_token
        if token is None:
            return error(
                403,
                "the watch API is off: set server.api_token_env or server.api_token_file",
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # Constant time, on bytes: the comparison must not reveal how much matched.
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.reveal().encode()
        )
        if not ok:
            return error(401, "missing or wrong bearer token")
        if gate.locked():
            return error(503, "too many API requests at once; retry", **{"Retry-After": "1"})
        async with gate:
            try:
                return await handler(request)
            except web.HTTPException as exc:  # aiohttp's own: 404, 405, 413
                return error(exc.status, exc.reason)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not (request.path == PREFIX.rstrip("/") or request.path.startswith(PREFIX)):
            return await handler(request)
        response = await guarded(request, handler)
        if observe is not None:
            observe(_route_of(request), response.status)
        return response

    return middleware


def _reported_view(key: ExecutionKey, reported: Reported) -> dict[str, Any]:
    return {
        "workspace_id": key[0],
        "execution_id": key[1],
        "phase": "reported",
        "status": "reported",
        "event_id": reported.event_id,
        "event": reported.event,
        "state": reported.state,
        "reported_at": reported.reported_at,
    }


class WatchApi:
    """The ``/v1/watches`` routes of one service."""

    def __init__(self, service: Service) -> None:
        self._service = service

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/watches", self.post)
        router.add_get("/v1/watches", self.index)
        router.add_get("/v1/watches/{ws}/{id}", self.get)
        router.add_delete("/v1/watches/{ws}/{id}", self.delete)

    def _watch_view(self, key: ExecutionKey, status: str) -> dict[str, Any]:
        watch = self._service.scheduler.get(key)
        return {
            "workspace_id": key[0],
            "execution_id": key[1],
            "phase": "watching",
            "status": status,
            "state": None if watch is None else watch.state,
            "polls": 0 if watch is None else watch.polls,
        }

    async def post(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()  # stops at client_max_size (MAX_BODY)
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"the body is over {MAX_BODY} bytes")
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return error(400, f"the body is not JSON: {exc}")
        try:
            keys, single = parse_watches(data, self._service.config.blink.workspace_id)
        except InputError as exc:
            return error(400, str(exc))
        views, added = await self._add(keys)
        status = 201 if added else 200
        if single:
            return web.json_response(views[0], status=status)
        return web.json_response({"executions": views}, status=status)

    async def _add(self, keys: list[ExecutionKey]) -> tuple[list[dict[str, Any]], int]:
        service = self._service
        reported = await service.store.reported(keys)
        fresh = [k for k in keys if k not in reported]
        now = time.time()
        # Committed before the answer: a 201 survives kill -9. Watches the config
        # already follows become the API's too, so a reload dropping them from
        # the config does not stop the watch the caller is waiting on.
        await service.store.add_watches(
            [WatchRow(k, None, 0, now, now) for k in fresh], "api", take_over=True
        )
        new = [k for k in fresh if k not in service.scheduler]
        service.scheduler.add_many(new, {})  # replicas: only those stored by this one
        added = {k for k in new if k in service.scheduler}
        views = [
            _reported_view(k, reported[k])
            if k in reported
            else self._watch_view(k, "added" if k in added else "watching")
            for k in keys
        ]
        return views, len(added)

    async def _elsewhere(self, key: ExecutionKey) -> tuple[str | None, int, str, str | None] | None:
        """With replicas, the shared row of ``key``: (state, polls, source, replica), or None."""
        store = self._service.store
        if self._service.replica is None or not isinstance(store, PostgresStore):
            return None
        return await store.find_watch(key)

    async def get(self, request: web.Request) -> web.Response:
        try:
            key = parse_key(request.match_info["ws"], request.match_info["id"])
        except InputError as exc:
            return error(400, str(exc))
        if key in self._service.scheduler:
            view = self._watch_view(key, "watching")
            view["source"] = (await self._service.store.watch_sources()).get(key, "config")
            return web.json_response(view)
        elsewhere = await self._elsewhere(key)
        if elsewhere is not None:
            state, polls, source, owner = elsewhere
            view = {**self._watch_view(key, "watching"), "state": state, "polls": polls}
            return web.json_response({**view, "source": source, "replica": owner})
        reported = await self._service.store.reported([key])
        if key in reported:
            return web.json_response(_reported_view(key, reported[key]))
        return error(404, f"{format_key(key)} is neither watched nor reported")

    async def index(self, request: web.Request) -> web.Response:
        query = request.query
        if query.get("phase", "watching") != "watching":
            return error(400, "phase: only 'watching' is listed (GET one execution for the rest)")
        try:
            limit = int(query.get("limit", PAGE_DEFAULT))
        except ValueError:
            return error(400, "limit must be an integer")
        if not 1 <= limit <= PAGE_MAX:
            return error(400, f"limit must be between 1 and {PAGE_MAX}")
        after = query.get("after", "")
        store = self._service.store
        if self._service.replica is not None and isinstance(store, PostgresStore):
            return await self._shared_index(store, after, limit)
        keys = sorted(format_key(k) for k in self._service.scheduler.watched_keys())
        page = [k for k in keys if k > after][: limit + 1]
        more = len(page) > limit
        page = page[:limit]
        views = []
        for text in page:
            ws, _, ex = text.partition("/")
            views.append(self._watch_view((ws, ex), "watching"))
        return web.json_response({"watches": views, "next": page[-1] if more else None})

    async def _shared_index(self, store: PostgresStore, after: str, limit: int) -> web.Response:
        """Every replica's watches (the shared database), a page at a time."""
        rows = await store.watch_page(after, limit + 1)
        page = rows[:limit]
        views = [
            {
                "workspace_id": ws,
                "execution_id": ex,
                "phase": "watching",
                "status": "watching",
                "state": state,
                "polls": polls,
                "replica": owner,
            }
            for ws, ex, state, polls, owner in page
        ]
        more = len(rows) > limit
        return web.json_response(
            {"watches": views, "next": format_key(page[-1][:2]) if more else None}
        )

    async def delete(self, request: web.Request) -> web.Response:
        try:
            key = parse_key(request.match_info["ws"], request.match_info["id"])
        except InputError as exc:
            return error(400, str(exc))
        service = self._service
        stored = await self._elsewhere(key)  # replicas: the shared database's row
        if key not in service.scheduler and stored is None:
            return error(404, f"{format_key(key)} is not watched")
        listed = key in service.config.executions if stored is None else stored[2] == "config"
        if listed:
            return error(
                409,
                f"{format_key(key)} is listed in {service.config.file}: remove it there and reload",
            )
        if key in service.scheduler:
            service.scheduler.remove(key)
        else:  # held by another replica: it drops the watch at its next renewal
            service.store.forget_watch(key)
        await service.store.flush()  # gone for good before the answer
        return web.Response(status=204)
