"""The service's chores besides polling: resume, prune, outside changes, metric gauges."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from watcher import memtrim
from watcher.blink import BlinkClient
from watcher.config import Config
from watcher.delivery import Outbox
from watcher.discovery.manager import Discovery
from watcher.errors import StoreError
from watcher.metrics import Metrics
from watcher.scheduler import Scheduler
from watcher.store.base import StateStore

log = structlog.get_logger("watcher.service")


async def resume(
    config: Config, store: StateStore, scheduler: Scheduler, outbox: Outbox, discovery: Discovery
) -> dict[str, int]:
    """Schedule the configured watches, resuming stored ones; counts for the log.

    A function of its own: its frame dies when it returns, and with it the
    start-up maps (100,000 stored rows), which the service's frame would keep.
    """
    executions = config.executions
    reported = await store.reported_keys(executions)
    # Each key once, as the config spelled it: watches share the config's
    # tuples instead of holding copies of the strings the store returns.
    todo = {k: k for k in executions if k not in reported}
    already_finished = len(executions) - len(todo)
    del reported
    resumed = 0
    # Watches handed over at run time (the watch API, discovery) are kept
    # though the config does not list them.
    handed_over = await store.watch_sources()
    discovery.resumed(handed_over)
    async for rows in store.watch_batches():
        for ws, ex, state, polls, first_seen_at in rows:
            key = todo.pop((ws, ex), None)
            if key is None and (ws, ex) in handed_over:
                key = (ws, ex)
            if key is None:  # left the config while the daemon was down
                store.forget_watch((ws, ex))
                continue
            scheduler.resume(key, state, polls, first_seen_at)
            resumed += 1
    scheduler.add_many(list(todo), {})
    del todo
    restored = outbox.restore(await store.open_deliveries())
    memtrim.trim()  # the tables above are garbage now: give their pages back
    return {
        "watching": len(scheduler),
        "resumed": resumed,
        "already_finished": already_finished,
        "pending_deliveries": restored,
    }


async def pick_up_outside_changes(
    store: StateStore, outbox: Outbox, metrics: Metrics, every_s: float
) -> None:
    """Pick up deliveries another process re-queued (``deliveries --retry-dead``)."""
    await store.changed_elsewhere()  # the baseline
    while True:
        await asyncio.sleep(every_s)
        try:
            if not await store.changed_elsewhere():
                continue
            requeued = outbox.restore(await store.open_deliveries())
            metrics.set_dead_letters(await store.dead_letters())
        except StoreError as exc:
            log.warning("store.read_failed", reason=str(exc))
            continue
        if requeued:
            log.info("delivery.requeued", deliveries=requeued, by="another process")


async def prune(store: StateStore, keep_s: Callable[[], float], every_s: float) -> None:
    """Prune reported history past ``state.keep_reported`` (docs/contract.md, "Retention")."""
    while True:
        try:
            await store.prune(keep_s())
        except StoreError as exc:
            # The disk is in trouble; the store says so on /readyz. Try again later.
            log.warning("store.prune_failed", reason=str(exc))
        await asyncio.sleep(every_s)


def bind_metrics(
    metrics: Metrics, scheduler: Scheduler, outbox: Outbox, client: Callable[[], BlinkClient]
) -> None:
    """Connect the gauges to the live service (``client``: whichever a reload made current)."""

    def oldest_age() -> float:
        oldest = outbox.oldest_pending_at()
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    metrics.bind(
        watching=lambda: len(scheduler),
        finished=lambda: scheduler.finished,
        rate_limit=lambda: client().limiter.rate,
        last_ok=lambda: scheduler.last_ok_at or 0.0,
        outbox_depth=lambda: outbox.outstanding,
        oldest_pending_age=oldest_age,
    )
