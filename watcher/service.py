"""Wiring and lifecycle: open the store, resume, run, reload on SIGHUP, stop gracefully.

Signal handlers only queue a command; ``run`` does the work. On SIGTERM/SIGINT
polling stops, deliveries get up to ``DRAIN_S`` seconds, and what is left stays
pending in the store for the next start. A second signal skips the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterable
from typing import Final, Literal

import structlog

from watcher import logs as wlogging
from watcher.blink import BlinkClient
from watcher.config import Config, SinkConfig, accepts, load_config
from watcher.delivery import Outbox
from watcher.errors import ConfigError, StoreError
from watcher.metrics import Metrics
from watcher.models import Event, EventRecord, key_fields
from watcher.scheduler import Scheduler
from watcher.sinks import Sink, build_sink
from watcher.store import Store
from watcher.systemd import Notifier

log = structlog.get_logger("watcher.service")

DRAIN_S: Final = 10.0
STATUS_EVERY_S: Final = 5.0

Command = Literal["stop", "reload", "done"]


def register_secrets(config: Config) -> None:
    """Teach the log scrubber every secret this config holds."""
    if config.blink.api_key is not None:
        wlogging.register_secret(config.blink.api_key.reveal())
    for sink in config.sinks:
        secret = getattr(sink, "secret", None)
        if secret is not None:
            wlogging.register_secret(secret.reveal())


class Service:
    """The daemon: one instance per ``blink-watcher run``."""

    def __init__(
        self,
        config: Config,
        *,
        exit_when_done: bool = False,
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.exit_when_done = exit_when_done
        self.notifier = notifier or Notifier(None)
        self.metrics = metrics or Metrics()
        self.started_at = time.time()
        self._commands: asyncio.Queue[Command] = asyncio.Queue()
        self._signals = 0
        self._force = asyncio.Event()
        self.store: Store
        self.scheduler: Scheduler
        self.outbox: Outbox
        self.client: BlinkClient
        self._tasks: list[asyncio.Task[object]] = []
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
            async with Store(self.config.state_path) as store:
                self.store = store
                return await self._run_with_store()
        except StoreError as exc:
            log.error("store.failed", reason=str(exc))
            return 1
        finally:
            loop = asyncio.get_running_loop()
            for sig in installed:
                loop.remove_signal_handler(sig)
            self.notifier.close()

    async def _run_with_store(self) -> int:
        config = self.config
        self.client = self._new_client(config)
        await self.client.__aenter__()
        sinks = [build_sink(s) for s in config.sinks]
        self.outbox = Outbox(self.store, sinks, observer=self.metrics.delivery)
        self.scheduler = Scheduler(
            config.poll,
            self.client,
            self.store,
            self._on_event,
            concurrency=config.blink.max_concurrency,
        )
        # In its own frame: this frame lives as long as the daemon, and the
        # start-up maps (100,000 stored rows, every finished key) must not.
        counts = await self._resume()
        self._bind_metrics()
        log.info("service.started", **counts, state_path=str(config.state_path))
        server = None
        try:
            if config.server is not None:
                from watcher.server import start_server

                try:
                    server = await start_server(self, config.server)
                except OSError as exc:
                    log.error("server.failed", reason=str(exc), key="server.listen")
                    return 1
            self.notifier.ready(self.status_text())
            return await self._supervise()
        finally:
            if server is not None:
                await server.cleanup()
            await self.outbox.close_sinks()
            await self.client.close()

    async def _resume(self) -> dict[str, int]:
        """Schedule the configured watches, resuming stored ones; counts for the log."""
        executions = self.config.executions
        finished = await self.store.reported_keys(executions)
        # Each key once, as the config spelled it: watches share the config's
        # tuples instead of holding copies of the strings the store returns.
        todo = {k: k for k in executions if k not in finished}
        already_finished = len(executions) - len(todo)
        del finished
        resumed = 0
        async for rows in self.store.watch_batches():
            for ws, ex, state, polls, first_seen_at in rows:
                key = todo.pop((ws, ex), None)
                if key is None:  # left the config while the daemon was down
                    self.store.forget_watch((ws, ex))
                    continue
                self.scheduler.resume(key, state, polls, first_seen_at)
                resumed += 1
        self.scheduler.add_many(list(todo), {})
        restored = self.outbox.restore(await self.store.open_deliveries())
        return {
            "watching": len(self.scheduler),
            "resumed": resumed,
            "already_finished": already_finished,
            "pending_deliveries": restored,
        }

    async def _supervise(self) -> int:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._tasks = [
                    tg.create_task(self.scheduler.run(), name="scheduler"),
                    tg.create_task(self.outbox.run(), name="outbox"),
                    tg.create_task(self.notifier.watchdog(), name="watchdog"),
                    tg.create_task(self._report_status(), name="status"),
                ]
                if self.exit_when_done:
                    self._tasks.append(tg.create_task(self._done_watcher(), name="done"))
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
        poller = self._tasks[0]  # the scheduler's task (replaced when the pool is resized)
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        if command == "stop" and self.outbox.outstanding:
            log.info(
                "service.draining", pending_deliveries=self.outbox.outstanding, within_s=DRAIN_S
            )
            drain: asyncio.Task[object] = asyncio.create_task(self.outbox.drain(DRAIN_S))
            force: asyncio.Task[object] = asyncio.create_task(self._force.wait())
            await asyncio.wait({drain, force}, return_when=asyncio.FIRST_COMPLETED)
            for task in (drain, force):
                task.cancel()
        for task in self._tasks:
            task.cancel()
        await self.store.flush()
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
            if self.scheduler.all_done.is_set() and self.outbox.idle.is_set():
                self._commands.put_nowait("done")
                return
            await asyncio.sleep(0)

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

    async def _on_event(self, event: Event) -> None:
        body = event.to_json()
        sinks = [s.name for s in self.config.sinks if accepts(s, event.state)]
        record = EventRecord(
            event.event_id, event.key, event.event, event.state, body, event.observed_at_s
        )
        await self.store.record_event(record, sinks)
        self.outbox.enqueue(event.event_id, body, sinks, event.key)
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

    def _new_client(self, config: Config) -> BlinkClient:
        register_secrets(config)
        return BlinkClient(
            config.blink, observer=self.metrics.api_response, on_retry=self.metrics.api_retries.inc
        )

    async def _reload_safely(self) -> None:
        try:
            await self._reload()
        except Exception as exc:
            # A reload must never take the daemon down: keep running as we were.
            log.exception("config.reload_failed", reason=f"{type(exc).__name__}: {exc}")
            self.notifier.ready(self.status_text())

    async def _reload(self) -> None:
        self.notifier.reloading()
        try:
            new = load_config(self.config.file)
        except ConfigError as exc:
            log.error("config.reload_failed", reason=str(exc), kept="the running configuration")
            self.notifier.ready(self.status_text())
            return
        old = self.config
        self.config = new
        wlogging.configure(new.log_level, new.log_format)
        register_secrets(new)
        if new.blink != old.blink:
            client = self._new_client(new)
            await client.__aenter__()
            retired, self.client = self.client, client
            self.scheduler.client = client
            # Requests in flight finish on the old session before it closes.
            self._spawn(_close_later(retired, new.blink.request_timeout_s + 1))
        self.scheduler.poll = new.poll
        if new.blink.max_concurrency != self.scheduler.concurrency:
            self.scheduler.concurrency = new.blink.max_concurrency
            self._restart_scheduler()
        self._apply_sinks(old.sinks, new.sinks)
        added, removed = await self._apply_executions(new)
        self.outbox.restore(await self.store.open_deliveries())  # e.g. --retry-dead
        log.info(
            "config.reloaded",
            added=added,
            removed=removed,
            watching=len(self.scheduler),
            sinks=[s.name for s in new.sinks],
        )
        self.notifier.ready(self.status_text())

    def _spawn(self, coro: object) -> None:
        assert self._tg is not None
        self._tasks.append(self._tg.create_task(coro))  # type: ignore[arg-type]

    def _restart_scheduler(self) -> None:
        old = self._tasks[0]
        old.cancel()  # polls in flight put their watch back in the queue
        assert self._tg is not None
        self._tasks[0] = self._tg.create_task(self.scheduler.run(), name="scheduler")

    def _apply_sinks(self, old: Iterable[SinkConfig], new: Iterable[SinkConfig]) -> None:
        current = {s.name: s for s in self.outbox.current_sinks()}
        old_cfg = {s.name: s for s in old}
        sinks: list[Sink] = []
        for cfg in new:
            keep = current.get(cfg.name)
            sinks.append(
                keep if keep is not None and old_cfg.get(cfg.name) == cfg else build_sink(cfg)
            )
        for retired in self.outbox.replace_sinks(sinks):
            self._spawn(retired.close())

    async def _apply_executions(self, new: Config) -> tuple[int, int]:
        wanted = dict.fromkeys(new.executions)
        removed = [k for k in self.scheduler.watched_keys() if k not in wanted]
        for key in removed:
            self.scheduler.remove(key)
        candidates = [k for k in wanted if k not in self.scheduler]
        finished = await self.store.reported_keys(candidates)
        added = [k for k in candidates if k not in finished]
        resumed = {row.key: row for row in await self.store.load_watches() if row.key in added}
        self.scheduler.add_many(added, resumed)
        return len(added), len(removed)

    # --- observability --------------------------------------------------------------------

    def _bind_metrics(self) -> None:
        def oldest_age() -> float:
            oldest = self.outbox.oldest_pending_at()
            return 0.0 if oldest is None else max(0.0, time.time() - oldest)

        self.metrics.bind(
            watching=lambda: len(self.scheduler),
            finished=lambda: self.scheduler.finished,
            rate_limit=lambda: self.client.limiter.rate,
            last_ok=lambda: self.scheduler.last_ok_at or 0.0,
            outbox_depth=lambda: self.outbox.outstanding,
            oldest_pending_age=oldest_age,
        )

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason) for /readyz."""
        if self.scheduler.auth_failing:
            return False, "the Blink API rejects the API key (401/403)"
        if not self.store.healthy:
            return False, "the state store is not writable"
        if len(self.scheduler) and self.scheduler.last_ok_at is None:
            return False, "no successful Blink API response yet"
        return True, "ok"


async def _close_later(client: BlinkClient, delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    await client.close()
