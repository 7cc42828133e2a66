"""sd_notify without libsystemd: READY, STATUS, WATCHDOG, RELOADING, STOPPING.

Messages are datagrams to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace). Everything is a no-op when the variable is unset, so the
daemon runs the same outside systemd.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import NoReturn

import structlog

log = structlog.get_logger("watcher.systemd")


class Notifier:
    """Talks to the service manager, if there is one."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address: str | bytes | None = None
        self._sock: socket.socket | None = None
        if address:
            # Abstract sockets are spelled "@name" in the variable and start with NUL.
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.watchdog_interval_s = watchdog_usec / 2e6 if watchdog_usec else None

    @classmethod
    def from_env(cls) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``."""
        usec_text = os.environ.get("WATCHDOG_USEC", "")
        pid_text = os.environ.get("WATCHDOG_PID", "")
        usec = int(usec_text) if usec_text.isdigit() and int(usec_text) > 0 else None
        # The watchdog is meant for WATCHDOG_PID alone (a wrapper may have set it).
        if pid_text.isdigit() and int(pid_text) != os.getpid():
            usec = None
        return cls(os.environ.get("NOTIFY_SOCKET"), usec)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *fields: str) -> None:
        if self._sock is None or self._address is None:
            return
        try:
            self._sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            # Losing a notification must not take the daemon down.
            log.warning("systemd.notify_failed", reason=str(exc))

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    async def watchdog(self) -> NoReturn:
        """Ping from the event loop itself: a blocked loop misses pings and gets restarted."""
        if self.watchdog_interval_s is None or not self.enabled:
            await asyncio.Future()
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval_s)  # type: ignore[arg-type]

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
