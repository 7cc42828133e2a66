"""Where events go. A sink takes the exact event bytes and either succeeds or
raises ``DeliveryError`` saying whether a retry may help; the outbox
(``delivery.py``) owns retries, backoff and dead letters.
"""

from __future__ import annotations

from typing import Protocol

from watcher.config import LogSinkConfig, SinkConfig, WebhookSinkConfig


class Sink(Protocol):
    """A destination for events."""

    @property
    def config(self) -> SinkConfig: ...

    @property
    def name(self) -> str: ...

    async def deliver(self, event_id: str, body: bytes) -> None:
        """Deliver one event; raise ``DeliveryError`` on failure."""

    async def close(self) -> None:
        """Release resources; closing twice is harmless."""


def build_sink(config: SinkConfig) -> Sink:
    """The sink for a config section."""
    if isinstance(config, LogSinkConfig):
        from watcher.sinks.log import LogSink

        return LogSink(config)
    if isinstance(config, WebhookSinkConfig):
        from watcher.sinks.webhook import WebhookSink

        return WebhookSink(config)
    raise TypeError(f"unknown sink config {type(config).__name__}")  # pragma: no cover
