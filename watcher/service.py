"""The daemon's lifecycle: build the parts, run them, reload all or nothing, stop gracefully.

Signal handlers only queue a command; ``run`` does the work. On SIGTERM/SIGINT
polling stops, deliveries get up to ``DRAIN_S`` seconds, and what is left stays
pending in the store for the next start. A second signal skips the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import structlog

from watcher import chores, logs
from watcher.blink import BlinkClient
from watcher.components import (
    ClientFactory,
    ReloadPlan,
    SinkFactory,
    keep_restart_only,
    new_client,
    open_state,
    plan_reload,
    register_secrets,
)
from watcher.config import Config, load_config
from watcher.config.model import wants_state_changes
from watcher.delivery import Outbox
from watcher.discovery.manager import Discovery
from watcher.discovery.metrics import DiscoveryCollector
from watcher.errors import EX_CONFIG, ConfigError, NewerSchemaError, StoreError
from watcher.lock import StateInUseError
from watcher.metrics import Metrics
from watcher.models import Event, WatchRow, key_fields
from watcher.replica import Replica, listed_in_database, sync_config
from watcher.scheduler import Scheduler
from watcher.sinks import build_sink
from watcher.store import StateStore, Store
from watcher.store.postgres import PostgresStore
from watcher.systemd import Notifier

log = structlog.get_logger("watcher.service")

DRAIN_S: Final = 10.0
STATUS_EVERY_S: Final = 5.0
# Retention runs this often (and once right after start); each run prunes in
# small batches, so a large backlog after an upgrade costs no long lock.
PRUNE_EVERY_S: Final = 600.0
# How often the daemon looks for changes another process made to the store
# (``deliveries --retry-dead``): one cheap PRAGMA, so a re-queued dead letter
# is picked up within seconds.
OUTSIDE_CHANGES_EVERY_S: Final = 2.0

Command = Literal["stop", "reload", "done"]
StoreFactory = Callable[[Path], StateStore]


class _Closable(Protocol):
    async def close(self) -> None: ...


class Service:
    """The daemon: one instance per ``blink-watcher run``."""

    def __init__(
        self,
        config: Config,
        *,
        exit_when_done: bool = False,
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
        store_factory: StoreFactory = Store,
        client_factory: ClientFactory = new_client,
        sink_factory: SinkFactory = build_sink,
        prune_every_s: float = PRUNE_EVERY_S,
        outside_every_s: float = OUTSIDE_CHANGES_EVERY_S,
    ) -> None:
        self.config = config
        self._prune_every_s = prune_every_s
        self._outside_every_s = outside_every_s
        self.exit_when_done = exit_when_done
        self.notifier = notifier or Notifier(None)
        self.metrics = metrics or Metrics()
        self.started_at = time.time()
        self._store_factory = store_factory
        self._client_factory = client_factory
        self._sink_factory = sink_factory
        self._commands: asyncio.Queue[Command] = asyncio.Queue()
        self._signals = 0
        self._force = asyncio.Event()
        self._stopping = asyncio.Event()  # set at shutdown: retired resources close at once
        self.store: StateStore
        self.scheduler: Scheduler
        self.outbox: Outbox
        self.client: BlinkClient
        self.discovery: Discovery
        self.replica: Replica | None = None  # with [state] url: one of several replicas
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._tg: asyncio.TaskGroup | None = None
        # Called with each event once it is stored (the demo's live view listens here).
        self.listeners: list[Callable[[Event], None]] = []

    # --- signals --------------------------------------------------------------------------

    def request(self, command: str) -> None:
        """Ask the running service to stop, reload, or finish (safe from signal handlers)."""
        if command == "stop":
            self._signals += 1
            if self._signals > 1:
                self._force.set()
        if command in ("stop", "reload", "done"):
            self._commands.put_nowait(command)  # type: ignore[arg-type]

    def _install_signals(self) -> list[signal.Signals]:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig, command in (
            (signal.SIGTERM, "stop"),
            (signal.SIGINT, "stop"),
            (signal.SIGHUP, "reload"),
        ):
            try:
                loop.add_signal_handler(sig, self.request, command)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        return installed

    # --- run ------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped; the process exit code."""
        installed = self._install_signals()
        try:
            # Whatever _build opened is closed here, in reverse order, however it ends:
            # the listener first, then sinks and the client, the store (flushed) last.
            async with contextlib.AsyncExitStack() as stack:
                if not await self._build(stack):
                    return 1
                return await self._supervise()
        except StateInUseError as exc:
            log.error("store.in_use", reason=str(exc))
            return 1
        except NewerSchemaError as exc:
            log.error("store.newer_schema", reason=str(exc))
            return EX_CONFIG
        except StoreError as exc:
            log.error("store.failed", reason=str(exc))
            return 1
        finally:
            loop = asyncio.get_running_loop()
            for sig in installed:
                loop.remove_signal_handler(sig)
            self.notifier.close()

    async def _build(self, stack: contextlib.AsyncExitStack) -> bool:
        """Open every part of the daemon into ``stack``; False when it cannot start."""
        config = self.config
        shared = config.shared_state
        self.store, where = await open_state(stack, config, self._store_factory)
        pg = self.store if isinstance(self.store, PostgresStore) else None
        self.client = await self._client_factory(config, self.metrics).__aenter__()
        # Whichever client is current at the end: a reload may have replaced this one.
        stack.push_async_callback(lambda: self.client.close())
        self.outbox = Outbox(
            self.store,
            [self._sink_factory(s) for s in config.sinks],
            observer=self.metrics.delivery,
        )
        stack.push_async_callback(self.outbox.close_sinks)
        self.scheduler = Scheduler(
            config.poll,
            self.client,
            self.store,
            self._on_event,
            concurrency=config.blink.max_concurrency,
            on_change=self._on_event,
        )
        self.scheduler.state_events = wants_state_changes(config.sinks)
        claims = None if pg is None else pg.claims
        self.discovery = Discovery(
            client=lambda: self.client,
            store=self.store,
            scheduler=self.scheduler,
            max_watches=lambda: self.config.max_watches,
            spawn=self._start_task,
            holds=lambda rule: claims is None or rule in claims.rules,
        )
        if pg is not None and shared is not None:
            self.replica = Replica(
                pg,
                shared,
                scheduler=self.scheduler,
                outbox=self.outbox,
                rules=lambda: [r.name for r in self.config.discover],
                room=lambda: self.config.max_watches - len(self.scheduler),
                metrics=self.metrics,
            )
            counts = await self.replica.start(config.executions)
            where["replica"] = self.replica.claims.me
            self.config = listed_in_database(config)
        else:
            # In its own frame: this frame lives as long as the daemon, and the
            # start-up maps (100,000 stored rows) must not.
            counts = await chores.resume(
                config, self.store, self.scheduler, self.outbox, self.discovery
            )
        chores.bind_metrics(self.metrics, self.scheduler, self.outbox, lambda: self.client)
        self.metrics.registry.register(DiscoveryCollector(lambda: self.discovery.runners))
        self.metrics.set_dead_letters(await self.store.dead_letters())
        log.info("service.started", **counts, **where)
        for warning in config.warnings:
            log.warning("config.warning", reason=warning)
        if config.server is not None:
            from watcher.server import start_server

            try:
                runner = await start_server(self, config.server)
            except OSError as exc:
                log.error("server.failed", reason=str(exc), key="server.listen")
                return False
            stack.push_async_callback(runner.cleanup)
        self.notifier.ready(self.status_text())
        return True

    def _start_task(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        assert self._tg is not None
        task = self._tasks[name] = self._tg.create_task(coro, name=name)
        return task

    async def _supervise(self) -> int:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._start_task("scheduler", self.scheduler.run())
                self._start_task("outbox", self.outbox.run())
                self._start_task("watchdog", self.notifier.watchdog())
                self._start_task("status", self._report_status())
                self._start_task(
                    "retention",
                    chores.prune(
                        self.store, lambda: self.config.keep_reported_s, self._prune_every_s
                    ),
                )
                if self.replica is not None:  # claims pick up re-queued deliveries too
                    self._start_task("replica", self.replica.run())
                else:
                    self._start_task(
                        "outside changes",
                        chores.pick_up_outside_changes(
                            self.store, self.outbox, self.metrics, self._outside_every_s
                        ),
                    )
                self.discovery.start(self.config.discover)
                if self.exit_when_done:
                    self._start_task("done", self._done_watcher())
                while True:
                    command = await self._commands.get()
                    if command == "reload":
                        await self._reload_safely()
                        continue
                    break
                await self._shutdown(command)
        except* Exception as group:
            for exc in group.exceptions:
                log.error("service.crashed", reason=f"{type(exc).__name__}: {exc}", exc_info=exc)
            crashed = True
        else:
            crashed = False
        return 1 if crashed else 0

    async def _shutdown(self, command: Command) -> None:
        self.notifier.stopping()
        for name in ("replica", "scheduler"):  # claim nothing more, then poll no more
            task = self._tasks.pop(name, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if command == "stop" and self.outbox.outstanding:
            log.info(
                "service.draining", pending_deliveries=self.outbox.outstanding, within_s=DRAIN_S
            )
            drain = asyncio.ensure_future(self.outbox.drain(DRAIN_S))
            force = asyncio.ensure_future(self._force.wait())
            await asyncio.wait({drain, force}, return_when=asyncio.FIRST_COMPLETED)
            for task in (drain, force):
                task.cancel()
        for task in self._tasks.values():
            task.cancel()
        # Retired clients and sinks waiting out their grace period close now; the
        # task group waits for them instead of cancelling them half-closed.
        self._stopping.set()
        try:
            await self.store.flush()
        except StoreError as exc:
            # Events are awaited until stored, so what waits in the queue is watch
            # progress and delivery outcomes: the next start polls those watches
            # again and may send those deliveries once more, with the same event_id.
            log.error(
                "store.unsaved_at_stop",
                reason=str(exc),
                effect="the next start polls some watches again and may repeat some "
                "deliveries (same event_id); no event is lost",
            )
        if self.replica is not None:
            await self.replica.leave()  # the others take over now, not after a lease
        log.info(
            "service.stopped",
            reason=command,
            watching=len(self.scheduler),
            pending_deliveries=self.outbox.outstanding,
        )

    async def _done_watcher(self) -> None:
        while True:
            await self.scheduler.all_done.wait()
            await self.outbox.idle.wait()
            settled = self.discovery.settled()  # every rule listed to the end once
            if self.scheduler.all_done.is_set() and self.outbox.idle.is_set() and settled:
                self._commands.put_nowait("done")
                return
            await asyncio.sleep(0 if settled else 0.05)

    async def _report_status(self) -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            self.notifier.status(self.status_text())

    def status_text(self) -> str:
        text = (
            f"watching {len(self.scheduler)}, finished {self.scheduler.finished}, "
            f"pending deliveries {self.outbox.outstanding}"
        )
        if self.scheduler.auth_failing:
            text += "; API rejects the key (401/403)"
        return text

    # --- events ---------------------------------------------------------------------------

    async def _on_event(self, event: Event, watch: WatchRow | None = None) -> None:
        sinks = await self.outbox.publish(event, watch)
        self.metrics.event(event.event, event.state)
        for listener in self.listeners:
            listener(event)
        log.info(
            "event.produced",
            **key_fields(event.key),
            kind=event.event,
            state=event.state,
            polls=event.polls,
            sinks=sinks,
        )

    # --- reload ---------------------------------------------------------------------------

    async def _reload_safely(self) -> None:
        self.notifier.reloading()
        try:
            await self._reload()
        except Exception as exc:
            # Nothing was swapped in (see _reload): the daemon runs exactly as before.
            log.error(
                "config.reload_failed",
                reason=f"{type(exc).__name__}: {exc}",
                kept="the running configuration",
            )
            self.metrics.reload("failed")
        self.notifier.ready(self.status_text())

    async def _reload(self) -> None:
        """Build everything the new config needs, then swap it all in at once."""
        try:
            new = load_config(self.config.file)
        except ConfigError as exc:
            log.error("config.reload_failed", reason=str(exc), kept="the running configuration")
            self.metrics.reload("failed")
            return
        new = keep_restart_only(self.config, new)
        async with contextlib.AsyncExitStack() as stack:
            plan = await plan_reload(
                stack,
                old=self.config,
                new=new,
                metrics=self.metrics,
                store=self.store,
                running_sinks=self.outbox.current_sinks(),
                watched=self.scheduler.watched_keys(),
                client_factory=self._client_factory,
                sink_factory=self._sink_factory,
            )
            stack.pop_all()  # built: from here on the plan's pieces belong to the daemon
        self._apply(plan)
        if self.replica is not None and isinstance(self.store, PostgresStore):
            await sync_config(self.store, self.scheduler, plan.config.executions)
            self.config = listed_in_database(self.config)
        await self.discovery.apply(plan.config.discover)
        self.metrics.reload("ok")
        log.info(
            "config.reloaded",
            added=len(plan.added),
            removed=len(plan.removed),
            watching=len(self.scheduler),
            sinks=[s.name for s in new.sinks],
        )

    def _apply(self, plan: ReloadPlan) -> None:
        """Swap the built pieces in. No I/O and nothing that can fail halfway."""
        old, new = self.config, plan.config
        self.config = new
        logs.configure(new.log_level, new.log_format, journal=new.log_journal)
        register_secrets(new)
        if plan.client is not None:
            retired, self.client = self.client, plan.client
            self.scheduler.client = plan.client
            # Requests in flight finish on the old session before it closes.
            self._close_later(retired, old.blink.request_timeout_s + 1)
            if self.scheduler.auth_failing:  # perhaps a fixed key: find out now
                self._start_task("probe", self.scheduler.probe())
        self.scheduler.poll = new.poll
        self.scheduler.state_events = wants_state_changes(new.sinks)
        if new.blink.max_concurrency != self.scheduler.concurrency:
            self.scheduler.concurrency = new.blink.max_concurrency
            self._tasks.pop("scheduler").cancel()  # polls in flight put their watch back
            self._start_task("scheduler", self.scheduler.run())
        for sink in self.outbox.replace_sinks(plan.sinks):
            self._close_later(sink, 0.0)
        for key in plan.removed:
            self.scheduler.remove(key)
        self.scheduler.add_many(plan.added, plan.resumed)
        if self.replica is None:  # replicas take deliveries by claiming them
            self.outbox.restore(plan.deliveries)

    def _close_later(self, resource: _Closable, delay_s: float) -> None:
        async def close() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay_s)
            with contextlib.suppress(Exception):
                await resource.close()

        assert self._tg is not None
        self._tg.create_task(close(), name=f"close {type(resource).__name__}")

    # --- observability --------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason) for /readyz."""
        if self.scheduler.auth_failing:
            return False, "the Blink API rejects the API key (401/403)"
        if self.replica is not None and self.replica.unreachable is not None:
            return False, f"the state database is unreachable: {self.replica.unreachable}"
        if not self.store.healthy:
            return False, "the state store is not writable"
        if len(self.scheduler) and self.scheduler.last_ok_at is None:
            return False, "no successful Blink API response yet"
        return True, "ok"
