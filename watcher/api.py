"""The watch API's gate: every ``/v1`` request needs the configured bearer token."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

if TYPE_CHECKING:
    from watcher.service import Service

PREFIX: Final = "/v1/"


def error(status: int, message: str) -> web.Response:
    """The API's one error shape: ``{"error": "..."}``."""
    return web.json_response({"error": message}, status=status)


def auth_middleware(service: Service) -> Middleware:
    """Refuse any ``/v1`` request without the token; other routes pass untouched.

    The token is read from the running config at each request, so a reload
    that changes it takes effect at once. /metrics, /healthz and /readyz never
    need it: a remote Prometheus scrape keeps working without a credential.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not (request.path == PREFIX.rstrip("/") or request.path.startswith(PREFIX)):
            return await handler(request)
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
        return await handler(request)

    return middleware
