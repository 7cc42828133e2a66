"""The outbox worker: delivers each stored event to each sink, retries, dead-letters.

Every delivery is in the store (``pending``) before its first attempt; each
attempt's outcome is written back, so a restart resumes exactly where the
outbox was. Retries are scheduled here rather than in a tenacity loop because
the schedule has to outlive the process: the next attempt time is stored.
Each sink has its own lane and concurrency cap, so one slow receiver never
holds up another sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NoReturn

import structlog

from watcher.config import accepts
from watcher.duequeue import DueQueue, work_off
from watcher.errors import DeliveryError, StoreError
from watcher.http import backoff_delay
from watcher.models import DeliveryRow, Event, EventRecord, ExecutionKey, WatchRow, key_fields
from watcher.sinks import Sink
from watcher.store import StateStore

log = structlog.get_logger("watcher.delivery")

# (sink name, "delivered" | "retried" | "dead")
DeliveryObserver = Callable[[str, str], None]


class Delivery:
    """One event on its way to one sink."""

    __slots__ = ("attempts", "body", "created_at", "event_id", "key", "sink")

    def __init__(
        self,
        event_id: str,
        sink: str,
        body: bytes,
        key: ExecutionKey | None,
        attempts: int = 0,
        created_at: float = 0.0,
    ) -> None:
        self.event_id = event_id
        self.sink = sink
        self.body = body
        self.key = key
        self.attempts = attempts
        self.created_at = created_at


@dataclass(slots=True)
class _Lane:
    sink: Sink
    queue: DueQueue[Delivery]
    task: asyncio.Task[NoReturn] | None = None


class Outbox:
    """Works off pending deliveries per sink until cancelled (``run``)."""

    def __init__(
        self,
        store: StateStore,
        sinks: Iterable[Sink],
        *,
        observer: DeliveryObserver | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._observer = observer
        self._wall = wall
        self._lanes: dict[str, _Lane] = {s.name: _Lane(s, DueQueue()) for s in sinks}
        self._pending: dict[tuple[str, str], Delivery] = {}  # (event_id, sink) -> delivery
        self._in_flight = 0
        self._tg: asyncio.TaskGroup | None = None
        self.idle = asyncio.Event()
        self.idle.set()
        self._progress = asyncio.Event()

    @property
    def outstanding(self) -> int:
        """Deliveries neither delivered nor dead, in memory."""
        return len(self._pending)

    def oldest_pending_at(self) -> float | None:
        return min((d.created_at for d in self._pending.values()), default=None)

    def current_sinks(self) -> list[Sink]:
        return [lane.sink for lane in self._lanes.values()]

    # --- intake ---------------------------------------------------------------------------

    async def publish(self, event: Event, watch: WatchRow | None = None) -> list[str]:
        """Store ``event`` with one pending delivery per accepting sink, then start them.

        Returns the names of those sinks. The event and its deliveries are
        committed in one transaction before the first attempt (at-least-once:
        docs/contract.md, "Guarantees"); a ``StoreError`` propagates unstored.
        """
        sinks = [
            lane.sink.name
            for lane in self._lanes.values()
            if accepts(lane.sink.config, event.state, event.event)
        ]
        body = event.to_json()
        record = EventRecord(
            event.event_id, event.key, event.event, event.state, body, event.observed_at_s
        )
        if watch is not None:  # a state change: stored with the watch's new state
            await self._store.record_change(record, sinks, watch)
        else:
            await self._store.record_event(record, sinks)
        self.enqueue(event.event_id, body, sinks, event.key)
        return sinks

    def enqueue(
        self, event_id: str, body: bytes, sinks: Iterable[str], key: ExecutionKey | None
    ) -> None:
        """Start delivering a stored event to ``sinks`` now."""
        now = self._wall()
        for name in sinks:
            self._add(Delivery(event_id, name, body, key, 0, now), 0.0)

    def restore(self, rows: Iterable[DeliveryRow]) -> int:
        """Queue stored pending deliveries; rows for sinks no longer configured stay stored."""
        loop_now = asyncio.get_running_loop().time()
        wall_now = self._wall()
        orphans: dict[str, int] = {}
        restored = 0
        for row in rows:
            if row.sink not in self._lanes:
                orphans[row.sink] = orphans.get(row.sink, 0) + 1
                continue
            if (row.event_id, row.sink) in self._pending:
                continue
            delivery = Delivery(
                row.event_id, row.sink, row.body, row.key, row.attempts, row.created_at
            )
            self._add(delivery, loop_now + max(0.0, row.next_attempt_at - wall_now))
            restored += 1
        for sink, count in orphans.items():
            log.warning(
                "delivery.orphaned",
                sink=sink,
                pending=count,
                hint="no sink of this name is configured; they stay in the store",
            )
        return restored

    def _add(self, delivery: Delivery, due: float) -> None:
        lane = self._lanes.get(delivery.sink)
        if lane is None:
            return
        self._pending[(delivery.event_id, delivery.sink)] = delivery
        self.idle.clear()
        lane.queue.push(due, delivery)

    def drop(self, keys: Iterable[tuple[str, str]]) -> int:
        """Stop delivering these (event_id, sink) here: another replica took them over.

        They stay in the store; an attempt in flight finishes, and its outcome
        is refused there.
        """
        dropped = 0
        for key in keys:
            if self._pending.pop(key, None) is not None:
                dropped += 1
        self._update_idle()
        return dropped

    def pending_keys(self) -> list[tuple[str, str]]:
        return list(self._pending)

    # --- sinks ----------------------------------------------------------------------------

    def replace_sinks(self, sinks: Iterable[Sink]) -> list[Sink]:
        """Apply a reloaded sink list; returns the sink objects no longer used (to close).

        A sink whose name stays keeps its queue (new settings apply from the next
        attempt); a removed sink's deliveries stay pending in the store.
        """
        new = {s.name: s for s in sinks}
        retired: list[Sink] = []
        for name in list(self._lanes):
            lane = self._lanes[name]
            if name in new:
                if new[name] is not lane.sink:
                    retired.append(lane.sink)
                    restart = new[name].config.max_in_flight != lane.sink.config.max_in_flight
                    lane.sink = new[name]
                    if restart:
                        self._restart_lane(lane)
                continue
            retired.append(lane.sink)
            del self._lanes[name]
            if lane.task is not None:
                lane.task.cancel()
            lane.queue.drain_items()
            # Not only the queued ones: an attempt in flight (or handed to a worker)
            # goes back into this dead lane's queue when cancelled, never to run.
            for pending_key in [k for k in self._pending if k[1] == name]:
                del self._pending[pending_key]
        for name, sink in new.items():
            if name not in self._lanes:
                lane = self._lanes[name] = _Lane(sink, DueQueue())
                self._start_lane(lane)
        self._update_idle()
        return retired

    def _start_lane(self, lane: _Lane) -> None:
        if self._tg is not None:
            lane.task = self._tg.create_task(
                work_off(lane.queue, self._attempt, lane.sink.config.max_in_flight)
            )

    def _restart_lane(self, lane: _Lane) -> None:
        if lane.task is not None:
            lane.task.cancel()
        self._start_lane(lane)

    async def close_sinks(self) -> None:
        for lane in self._lanes.values():
            with contextlib.suppress(Exception):
                await lane.sink.close()

    # --- work -----------------------------------------------------------------------------

    async def run(self) -> NoReturn:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for lane in self._lanes.values():
                self._start_lane(lane)
            await asyncio.Future()  # until cancelled; the lanes do the work
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, delivery: Delivery) -> None:
        lane = self._lanes.get(delivery.sink)
        if lane is None or (delivery.event_id, delivery.sink) not in self._pending:
            return
        sink = lane.sink
        delivery.attempts += 1
        self._in_flight += 1
        try:
            await sink.deliver(delivery.event_id, delivery.body)
        except asyncio.CancelledError:
            # Shutdown or a lane restart: the attempt did not count; try again later.
            delivery.attempts -= 1
            lane.queue.push(0.0, delivery)
            raise
        except DeliveryError as exc:
            await self._failed(lane, delivery, str(exc), exc.retryable, exc.retry_after_s)
        except Exception as exc:
            # A sink bug must not lose the event: treat it as a failure worth retrying.
            log.exception("delivery.crashed", sink=sink.name, event_id=delivery.event_id)
            await self._failed(lane, delivery, f"internal error: {type(exc).__name__}", True, None)
        else:
            await self._store.update_delivery(
                delivery.event_id, sink.name, "delivered", delivery.attempts, self._wall(), None
            )
            self._settled(delivery, "delivered")
            log.debug(
                "delivery.delivered",
                sink=sink.name,
                event_id=delivery.event_id,
                **({} if delivery.key is None else key_fields(delivery.key)),
                attempts=delivery.attempts,
            )
        finally:
            self._in_flight -= 1
            self._progress.set()

    async def _failed(
        self,
        lane: _Lane,
        delivery: Delivery,
        reason: str,
        retryable: bool,
        retry_after_s: float | None,
    ) -> None:
        cfg = lane.sink.config
        fields = {
            "sink": cfg.name,
            "event_id": delivery.event_id,
            **({} if delivery.key is None else key_fields(delivery.key)),
            "attempts": delivery.attempts,
            "reason": reason,
        }
        if retryable and delivery.attempts < cfg.max_attempts:
            delay = backoff_delay(
                delivery.attempts, cfg.backoff_initial_s, cfg.backoff_max_s, retry_after_s
            )
            await self._store.update_delivery(
                delivery.event_id,
                cfg.name,
                "pending",
                delivery.attempts,
                self._wall() + delay,
                reason,
            )
            log.warning("delivery.retry", **fields, retry_in_s=round(delay, 3))
            if self._observer is not None:
                self._observer(cfg.name, "retried")
            lane.queue.push(asyncio.get_running_loop().time() + delay, delivery)
            return
        try:
            await self._store.update_delivery(
                delivery.event_id,
                cfg.name,
                "dead",
                delivery.attempts,
                self._wall(),
                reason,
                wait=True,
            )
        except StoreError as exc:
            # Not recorded as dead means still pending: try again later, never drop it.
            log.error("delivery.store_failed", **fields, store_error=str(exc))
            lane.queue.push(asyncio.get_running_loop().time() + cfg.backoff_max_s, delivery)
            return
        why = "not retryable" if not retryable else f"gave up after {delivery.attempts} attempts"
        log.error(
            "delivery.dead",
            **fields,
            why=why,
            hint="kept in the store: blink-watcher deliveries --retry-dead",
        )
        self._settled(delivery, "dead")

    def _settled(self, delivery: Delivery, result: str) -> None:
        self._pending.pop((delivery.event_id, delivery.sink), None)
        if self._observer is not None:
            self._observer(delivery.sink, result)
        self._update_idle()

    def _update_idle(self) -> None:
        if not self._pending:
            self.idle.set()

    async def drain(self, timeout_s: float) -> None:
        """Let attempts in flight, and those falling due within ``timeout_s``, finish."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            now = loop.time()
            dues = [d for lane in self._lanes.values() if (d := lane.queue.peek_due()) is not None]
            next_due = min(dues, default=None)
            if self._in_flight == 0 and (next_due is None or next_due > deadline):
                return
            if now >= deadline:
                return
            self._progress.clear()
            wake = deadline if next_due is None or self._in_flight else max(next_due, now) + 0.01
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), max(0.0, min(wake, deadline) - now))
