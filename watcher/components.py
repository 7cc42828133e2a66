"""Build the daemon's parts from a config; a reload builds all of its parts before any is used.

The service (``service.py``) only starts, supervises and stops what is built
here. Every piece that holds a resource is opened inside an
``AsyncExitStack``, so a failure halfway closes whatever was already opened
and leaves nothing behind (docs/architecture.md, "Build, then run").
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from watcher.blink import BlinkClient
from watcher.config import Config, SinkConfig, WebhookSinkConfig
from watcher.lock import StateLock
from watcher.metrics import Metrics
from watcher.models import DeliveryRow, ExecutionKey, WatchRow
from watcher.redact import register_secret
from watcher.sinks import Sink, build_sink
from watcher.sinks.webhook import url_secrets
from watcher.store import StateStore
from watcher.store.postgres import open_shared

log = structlog.get_logger("watcher.components")

ClientFactory = Callable[[Config, Metrics], BlinkClient]
SinkFactory = Callable[[SinkConfig], Sink]

# Settings that are bound once at start: the listener socket and the state file.
# A reload that changes them warns and keeps the running values.
RESTART_ONLY = (("server", "server"), ("state_path", "state.path"))


def register_secrets(config: Config) -> None:
    """Teach the scrubber every secret this config holds, before anything can log them."""
    if config.blink.api_key is not None:
        register_secret(config.blink.api_key.reveal())
    if config.server is not None and config.server.api_token is not None:
        register_secret(config.server.api_token.reveal())
    for sink in config.sinks:
        if isinstance(sink, WebhookSinkConfig):
            if sink.secret is not None:
                register_secret(sink.secret.reveal())
            for part in url_secrets(sink.url):
                register_secret(part)


def new_client(config: Config, metrics: Metrics) -> BlinkClient:
    """The Blink client for ``config`` (not yet opened)."""
    register_secrets(config)
    return BlinkClient(
        config.blink, observer=metrics.api_response, on_retry=metrics.api_retries.inc
    )


def keep_restart_only(old: Config, new: Config) -> Config:
    """``new`` with the running values of settings that need a restart, warning if they differ."""
    changed = [key for field, key in RESTART_ONLY if getattr(old, field) != getattr(new, field)]
    if not changed:
        return new
    log.warning(
        "config.restart_needed",
        keys=changed,
        hint="these settings apply only at start; restart the service to use the new values",
        kept="the running values",
    )
    return dataclasses.replace(new, **{field: getattr(old, field) for field, _ in RESTART_ONLY})


@dataclass(slots=True)
class ReloadPlan:
    """Everything a reload changes, built and read before anything is swapped in."""

    config: Config
    client: BlinkClient | None  # the new client, or None to keep the running one
    sinks: list[Sink]  # the whole new sink list: unchanged sinks are the running objects
    removed: list[ExecutionKey]
    added: list[ExecutionKey]
    resumed: dict[ExecutionKey, WatchRow]
    deliveries: list[DeliveryRow]  # pending deliveries to (re)queue, e.g. after --retry-dead


async def plan_reload(
    stack: contextlib.AsyncExitStack,
    *,
    old: Config,
    new: Config,
    metrics: Metrics,
    store: StateStore,
    running_sinks: Sequence[Sink],
    watched: Iterable[ExecutionKey],
    client_factory: ClientFactory = new_client,
    sink_factory: SinkFactory = build_sink,
) -> ReloadPlan:
    """Build and read everything ``new`` needs; what is opened is closed by ``stack``.

    The caller pops the stack only once this returns, so a failure anywhere
    (a sink that cannot be built, a store read that fails) closes the new
    pieces and the running ones are untouched.
    """
    client = None
    if new.blink != old.blink:
        client = await stack.enter_async_context(client_factory(new, metrics))
    current = {s.name: s for s in running_sinks}
    old_cfg = {s.name: s for s in old.sinks}
    sinks: list[Sink] = []
    for cfg in new.sinks:
        keep = current.get(cfg.name)
        if keep is not None and old_cfg.get(cfg.name) == cfg:
            sinks.append(keep)
            continue
        sink = sink_factory(cfg)
        stack.push_async_callback(sink.close)
        sinks.append(sink)
    wanted = dict.fromkeys(new.executions)
    watched = list(watched)
    handed_over = await store.watch_sources()  # not the config's to drop (the watch API)
    removed = [k for k in watched if k not in wanted and k not in handed_over]
    held = set(watched)
    candidates = [k for k in wanted if k not in held]
    reported = await store.reported_keys(candidates)
    added = [k for k in candidates if k not in reported]
    adding = set(added)
    resumed = {row.key: row for row in await store.load_watches() if row.key in adding}
    deliveries = await store.open_deliveries()
    return ReloadPlan(new, client, sinks, removed, added, resumed, deliveries)


async def open_state(
    stack: contextlib.AsyncExitStack, config: Config, factory: Callable[[Path], StateStore]
) -> tuple[StateStore, dict[str, str]]:
    """The state store into ``stack``, and where it is (for the start-up log line)."""
    if config.shared_state is not None:  # PostgreSQL shared by replicas (docs/replicas.md)
        pg = await stack.enter_async_context(open_shared(config.shared_state))
        return pg, {"database": pg.where}
    stack.enter_context(StateLock(config.state_path))  # before the store touches the file
    store = await stack.enter_async_context(factory(config.state_path))
    return store, {"state_path": str(config.state_path)}
