"""Simulator: the API, the receiver and the control endpoints on one loopback aiohttp server."""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from aiohttp import web

from watcher.sim.api import API_PREFIX, BlinkApi
from watcher.sim.control import Control
from watcher.sim.receiver import Delivery, Receiver
from watcher.sim.script import Script


class Simulator:
    """The simulated Blink API and webhook receiver on one loopback aiohttp server.

    Use as an async context manager; ``port=0`` picks a free port. Scripts and
    hook scripts may be added while it runs. Stopping twice is harmless.
    """

    def __init__(
        self,
        *,
        api_key: str,
        scripts: Iterable[Script] = (),
        hook_scripts: Mapping[str, list[str]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._ssl_context = ssl_context  # serve https (tests of certificates and tunnels)
        self._api = BlinkApi(api_key=api_key)
        self._receiver = Receiver()
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self.add_scripts(scripts)
        for name, tokens in (hook_scripts or {}).items():
            self.set_hook_script(name, tokens)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Simulator:
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        # 16 MiB: a control POST of scripts may be large; events are small.
        app = web.Application(client_max_size=16 << 20)
        self._api.add_routes(app.router)
        self._receiver.add_routes(app.router)
        Control(self).add_routes(app.router)
        # No access log: it would cost more than the simulated GET in a benchmark.
        # handler_cancellation: a client that gives up (timeout during !slow or
        # slow:S) cancels the handler, so the delivery is not recorded as answered.
        # shutdown_timeout: do not wait out a long !slow when stopping.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port, ssl_context=self._ssl_context)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop serving; harmless when already stopped."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def port(self) -> int:
        """The port listened on (the real one when constructed with ``port=0``)."""
        if self._bound_port is None:
            raise RuntimeError("simulator not started")
        return self._bound_port

    @property
    def origin(self) -> str:
        """``http://HOST:PORT`` (``https://`` when serving TLS)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API base URL, ``http://HOST:PORT/api/v1``."""
        return self.origin + API_PREFIX

    @property
    def hooks_base(self) -> str:
        """``http://HOST:PORT/hooks``; a receiver's URL is this plus ``/NAME``."""
        return self.origin + "/hooks"

    def hook_url(self, name: str) -> str:
        """The URL of the webhook receiver called ``name``."""
        return f"{self.hooks_base}/{name}"

    # ---------------------------------------------------------------- scripting

    def add_scripts(self, scripts: Iterable[Script]) -> None:
        """Add (or replace) execution scripts; all are validated before any is added.

        An exact execution script wins over a bulk range covering the same ID;
        among bulk ranges the newest wins. Replacing a script resets its counters.
        """
        self._api.add_scripts(scripts)

    def set_hook_script(self, name: str, tokens: list[str]) -> None:
        """Set the receiver ``name``'s answers, one token per request, last repeated."""
        self._receiver.set_hook_script(name, tokens)

    def reject_list_filter(self, field: str, message: str) -> None:
        """Make the list endpoint answer 400 with ``message`` to any filter on ``field``."""
        self._api.listing.rejected[field] = message

    def accept_list_filter(self, field: str) -> None:
        """Undo ``reject_list_filter``."""
        self._api.listing.rejected.pop(field, None)

    @property
    def list_requests(self) -> int:
        """Requests to the list endpoint, 400s included."""
        return self._api.listing.requests

    def set_api_key(self, key: str) -> None:
        """Change the key the API accepts (to turn auth failures on and off)."""
        self._api.set_api_key(key)

    # ------------------------------------------------------------------ inspection

    @property
    def total_requests(self) -> int:
        """Every GET of an execution, including 401s and 404s."""
        return self._api.total_requests

    @property
    def auth_failures(self) -> int:
        """GETs answered 401 because of a missing or wrong key (a scripted !401 is not one)."""
        return self._api.auth_failures

    @property
    def apply_view_seen(self) -> bool:
        """Whether any GET asked for ``withApplyView=true``."""
        return self._api.apply_view_seen

    @property
    def deliveries(self) -> list[Delivery]:
        """Every request the webhook receivers got, in arrival order."""
        return self._receiver.deliveries

    @property
    def hooks_in_flight(self) -> int:
        """Receiver requests still being handled (e.g. waiting out ``slow:S``)."""
        return self._receiver.in_flight

    def requests_for(self, workspace_id: str, execution_id: str) -> int:
        """GETs received for this execution, faults included, 401s excluded."""
        return self._api.requests_for(workspace_id, execution_id)

    def requests_after_terminal(self, workspace_id: str, execution_id: str) -> int:
        """GETs received after a 200 with a terminal state was served for it."""
        return self._api.requests_after_terminal(workspace_id, execution_id)

    def terminal_at(self, workspace_id: str, execution_id: str) -> float | None:
        """Wall time the execution became terminal, or None (not yet / never).

        Timeline form: its first GET plus the offset of the first terminal
        entry. Steps form: when the first terminal 200 was served.
        """
        return self._api.terminal_at(workspace_id, execution_id)

    def delivered_events(self) -> list[Any]:
        """Decoded bodies of the deliveries answered 2xx, in arrival order.

        Raises ValueError if one of them is not JSON: the watcher must only send JSON.
        """
        return self._receiver.delivered_events()

    def stats(self) -> dict[str, Any]:
        """A JSON-able summary (also served at ``GET /_sim/stats``).

        ``requests``, ``after_terminal`` and ``terminal_at`` map ``"ws/id"``
        to a value for every execution requested at least once (bulk ranges
        included; unscripted IDs appear in ``requests`` only).
        """
        return {**self._api.stats(), "deliveries": self._receiver.stats()}
