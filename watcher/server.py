"""The optional HTTP listener: ``/metrics`` (Prometheus), ``/healthz``, ``/readyz``, ``/v1``."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from watcher.api import MAX_BODY, WatchApi, auth_middleware
from watcher.config import ServerConfig

if TYPE_CHECKING:
    from watcher.service import Service


def build_app(service: Service) -> web.Application:
    """The aiohttp application serving one service's health and metrics."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=service.metrics.render(), headers={"content-type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        # Answering at all proves the event loop is turning; that is the check.
        return web.json_response(
            {"status": "ok", "uptime_s": round(time.time() - service.started_at, 1)}
        )

    async def readyz(_: web.Request) -> web.Response:
        ready, reason = service.readiness()
        return web.Response(
            status=200 if ready else 503,
            text=json.dumps({"ready": ready, "reason": reason}),
            content_type="application/json",
        )

    # client_max_size: a larger body is refused (413) without being read further.
    app = web.Application(
        middlewares=[auth_middleware(service, service.metrics.watch_api_request)],
        client_max_size=MAX_BODY,
    )
    WatchApi(service).add_routes(app.router)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_server(service: Service, config: ServerConfig) -> web.AppRunner:
    """Start listening; the caller cleans the runner up."""
    runner = web.AppRunner(build_app(service), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from None
    return runner
