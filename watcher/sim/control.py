"""The ``/_sim/*`` endpoints that drive a simulator running in another process.

No API key is needed: the simulator is a loopback test tool.

    GET  /_sim/stats          Simulator.stats() as JSON
    POST /_sim/scripts        a JSON list of scripts, added all or nothing
    POST /_sim/hooks/{name}   a JSON list of receiver tokens for ``name``
    POST /_sim/api-key        {"key": "..."}: the key the API accepts from now on

A request the simulator cannot take is answered 400 with ``{"error": "..."}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from watcher.sim.api import json_response

if TYPE_CHECKING:
    from watcher.sim.simulator import Simulator


class Control:
    """The control endpoints of one simulator."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Serve the ``/_sim/*`` endpoints on ``router``."""
        router.add_get("/_sim/stats", self._handle_stats)
        router.add_post("/_sim/scripts", self._handle_add_scripts)
        router.add_post("/_sim/hooks/{name}", self._handle_set_hook)
        router.add_post("/_sim/api-key", self._handle_set_key)

    async def _handle_stats(self, request: web.Request) -> web.StreamResponse:
        return json_response(self._sim.stats())

    async def _handle_add_scripts(self, request: web.Request) -> web.StreamResponse:
        try:
            scripts = await request.json()
            if not isinstance(scripts, list):
                raise ValueError("expected a JSON list of scripts")
            self._sim.add_scripts(scripts)
        except ValueError as exc:  # JSONDecodeError is a ValueError
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True, "added": len(scripts)})

    async def _handle_set_hook(self, request: web.Request) -> web.StreamResponse:
        try:
            tokens = await request.json()
            self._sim.set_hook_script(request.match_info["name"], tokens)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _handle_set_key(self, request: web.Request) -> web.StreamResponse:
        try:
            payload = await request.json()
            key = payload.get("key") if isinstance(payload, dict) else None
            if not isinstance(key, str):
                raise ValueError('expected {"key": "..."}')
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self._sim.set_api_key(key)
        return web.json_response({"ok": True})
