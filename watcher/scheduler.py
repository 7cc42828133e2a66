"""When each execution is polled next, what each answer means, and when a watch ends.

One ``DueQueue`` holds every watch by its next poll time and a fixed pool of
``max_concurrency`` workers polls them, earliest first; the client applies the
global rate limit. A watch ends with exactly one ``Event``, handed to
``on_event`` (which stores it durably) before the watch is forgotten.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Final, NoReturn, Protocol

import structlog

from watcher.config import PollConfig
from watcher.duequeue import DueQueue, work_off
from watcher.errors import (
    AuthError,
    LeaseLostError,
    PermanentApiError,
    StoreError,
    TransientApiError,
)
from watcher.models import Event, EventType, Execution, ExecutionKey, WatchRow, key_fields
from watcher.watches import ClaimedWatch, HeldWatches, Watch

log = structlog.get_logger("watcher.scheduler")

# States we know mean "not over yet"; anything else that is not terminal is
# still polled, but logged once so an operator can add it to terminal_states.
KNOWN_ACTIVE_STATES: Final = frozenset(
    s.casefold()
    for s in (
        "Pending", "Queued", "Scheduled", "Created", "New", "Starting", "Started", "Running",
        "In Progress", "InProgress", "Waiting", "Paused", "Suspended", "Cancelling", "Canceling",
        "Retrying", "Resuming",
    )
)  # fmt: skip


class Fetcher(Protocol):
    async def get_execution(self, key: ExecutionKey) -> Execution: ...


class WatchStore(Protocol):
    def save_watch(self, row: WatchRow) -> None: ...
    async def room(self) -> None: ...  # backpressure: wait while the write backlog is full
    def forget_watch(self, key: ExecutionKey) -> None: ...
    async def last_response(self, key: ExecutionKey) -> dict[str, object] | None: ...


EventHandler = Callable[[Event], Awaitable[None]]
# A state change, with the watch's new state to store in the same transaction.
ChangeHandler = Callable[[Event, WatchRow], Awaitable[None]]


async def _no_change_handler(event: Event, row: WatchRow) -> None:
    raise AssertionError("state_events is on without a change handler")


def poll_delay_s(poll: PollConfig, level: int, rng: Callable[[], float] = random.random) -> float:
    """The wait before the next poll: ``interval * backoff**level``, capped, +/- jitter."""
    base = min(poll.max_interval_s, poll.interval_s * poll.backoff**level)
    return base * (1.0 + poll.jitter * (2.0 * rng() - 1.0))


class Scheduler:
    """Polls every watched execution until it ends. ``run()`` works until cancelled."""

    def __init__(
        self,
        poll: PollConfig,
        client: Fetcher,
        store: WatchStore,
        on_event: EventHandler,
        *,
        concurrency: int,
        wall: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        on_change: ChangeHandler | None = None,
    ) -> None:
        self.poll = poll
        self.client = client
        self.concurrency = concurrency
        self._store = store
        self._on_event = on_event
        self._on_change = on_change or _no_change_handler
        # Whether any sink takes execution.state_changed (else none is produced).
        self.state_events = on_change is not None
        self._wall = wall
        self._rng = rng
        self._due: DueQueue[Watch] = DueQueue()
        self._watches: dict[ExecutionKey, Watch] = {}
        self._unknown_states: set[str] = set()
        # Which [[discover]] rule found a watch (its events say so); only those are here.
        self.discovered_by: dict[ExecutionKey, str] = {}
        # Replicas sharing a database: which keys this one may poll (those it holds),
        # and the fence of each claim, kept on the watches themselves.
        self.admit: Callable[[ExecutionKey], bool] | None = None
        self.held: HeldWatches | None = None
        self._watch_type: type[Watch] = Watch
        self.auth_failing = False
        self.last_ok_at: float | None = None
        self.finished = 0
        self.all_done = asyncio.Event()
        self.all_done.set()

    # --- what is watched -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._watches)

    def __contains__(self, key: object) -> bool:
        return key in self._watches

    def watched_keys(self) -> list[ExecutionKey]:
        return list(self._watches)

    def get(self, key: ExecutionKey) -> Watch | None:
        """The live watch for ``key`` (read-only use: progress views)."""
        return self._watches.get(key)

    def add(self, key: ExecutionKey, resume: WatchRow | None = None) -> None:
        """Start watching ``key`` (first poll right away), resuming stored progress."""
        self.add_many([key], {} if resume is None else {key: resume})

    def add_many(self, keys: list[ExecutionKey], resumed: dict[ExecutionKey, WatchRow]) -> None:
        """Start watching each of ``keys``, resuming those found in ``resumed``."""
        now = self._wall()  # one float shared by every new watch
        admit = self.admit
        for key in keys:
            if admit is not None and not admit(key):
                continue  # another replica holds it
            row = resumed.get(key)
            if row is not None:
                self.resume(key, row.state, row.polls, row.first_seen_at)
            elif key not in self._watches:
                # First poll right away: the global rate limit is what keeps
                # 100,000 of them from flooding the API.
                watch = self._watches[key] = self._watch_type(key, now)
                if self.held is not None:
                    self.held.scheduled(watch)
                self._due.push(0.0, watch)
        if self._watches:
            self.all_done.clear()

    def resume(
        self, key: ExecutionKey, state: str | None, polls: int, first_seen_at: float
    ) -> None:
        """Resume a stored watch (first poll right away)."""
        if key in self._watches:
            return
        state = None if state is None else sys.intern(state)
        watch = self._watches[key] = self._watch_type(key, first_seen_at, state, polls)
        if self.held is not None:
            self.held.scheduled(watch)
        self.all_done.clear()
        self._due.push(0.0, watch)

    def remove(self, key: ExecutionKey) -> None:
        """Stop watching ``key`` without an event (it left the configuration)."""
        watch = self._watches.pop(key, None)
        if watch is not None:
            if self.held is not None:
                self.held.unscheduled(watch)
            watch.active = False  # its heap entry is skipped when it falls due
            self._store.forget_watch(key)
            self._check_done()

    def hold_claims(self) -> HeldWatches:
        """Poll only the watches this replica claims, keeping each claim on its watch."""
        assert not self._watches, "before the first watch"
        self._watch_type = ClaimedWatch
        self.held = HeldWatches(self._watches)  # type: ignore[arg-type]
        self.admit = self.held.__contains__
        return self.held

    def drop(self, key: ExecutionKey) -> None:
        """Stop polling ``key`` here, leaving it stored: another replica holds it now."""
        watch = self._watches.pop(key, None)
        if watch is not None:
            if self.held is not None:
                self.held.unscheduled(watch)
            watch.active = False
            self.discovered_by.pop(key, None)
            self._check_done()

    def _check_done(self) -> None:
        if not self._watches:
            self.all_done.set()

    # --- polling -------------------------------------------------------------------------

    async def run(self) -> NoReturn:
        await work_off(self._due, self._poll, self.concurrency)

    def _schedule(self, watch: Watch, delay_s: float, since: float | None = None) -> None:
        """Poll ``watch`` again ``delay_s`` after loop time ``since`` (default: now)."""
        now = asyncio.get_running_loop().time()
        due = (now if since is None else since) + delay_s
        deadline_in = watch.first_seen_at + self.poll.max_watch_s - self._wall()
        if deadline_in > 0:
            # Never sleep past max_watch: the timeout fires at the poll right after it.
            due = min(due, now + deadline_in)
        self._due.push(due, watch)

    async def _poll(self, watch: Watch) -> None:
        if not watch.active:
            return
        delay: float | None = 0.0  # if cancelled mid-poll, the watch goes back in the queue
        # The interval runs from poll to poll, not from answer to poll: a slow
        # answer (a busy API, a queue of due polls here) must not stretch the
        # cadence, or a result would wait longer than one interval to be seen.
        started = asyncio.get_running_loop().time()
        try:
            # One coroutine per poll, not two: this is the hot path.
            try:
                execution = await self.client.get_execution(watch.key)
            except TransientApiError as exc:
                delay = await self._after_failure(watch, exc)
            except AuthError as exc:
                delay = self._after_auth_error(watch, exc)
            except PermanentApiError as exc:
                delay = await self._after_permanent(watch, exc)
            else:
                delay = await self._after_response(watch, execution)
        except Exception:
            # work_off's handler must not raise: a bug (in the client, or say in
            # on_event) costs one poll, not the daemon; the watch is slowed down.
            log.exception("poll.crashed", **key_fields(watch.key))
            delay = self.poll.max_interval_s
        finally:
            if delay is not None and watch.active:
                self._schedule(watch, delay, started)

    async def _after_response(self, watch: Watch, execution: Execution) -> float | None:
        if not watch.active:
            return None  # removed while the request was in flight: no write, no event
        now = self._wall()
        self._answered(now)
        watch.polls += 1
        watch.not_found = 0
        state = execution.reported_state
        if self.poll.is_terminal(state):
            return await self._finish(watch, "execution.finished", state, execution)
        if state != watch.state or watch.polls == 1:
            if state is not None:
                state = sys.intern(state)  # 100,000 watches share a handful of strings
            log.debug("execution.state", **key_fields(watch.key), state=state, was=watch.state)
            row = WatchRow(
                watch.key, state, watch.polls, watch.first_seen_at, now, execution.to_record()
            )
            previous, watch.state = watch.state, state
            watch.level = 0
            if self.state_events and state != previous:
                if not await self._changed(watch, previous, execution, row, now):
                    watch.state = previous  # not stored: seen again by the next poll
                    return self.poll.max_interval_s
            else:
                self._store.save_watch(row)
            if state is not None and state.casefold() not in KNOWN_ACTIVE_STATES:
                self._note_unknown(watch, state)
            # While the writer is behind, this poll waits for it: a slow disk slows
            # the polling down instead of growing the queued writes without bound.
            await self._store.room()
        elif self.poll.interval_s * self.poll.backoff**watch.level < self.poll.max_interval_s:
            watch.level += 1
        if now >= watch.first_seen_at + self.poll.max_watch_s:
            return await self._finish(watch, "execution.watch_timeout", watch.state, execution)
        return poll_delay_s(self.poll, watch.level, self._rng)

    async def _changed(
        self,
        watch: Watch,
        previous: str | None,
        execution: Execution,
        row: WatchRow,
        now: float,
    ) -> bool:
        """Publish ``execution.state_changed`` with the watch's new state; False if unstored."""
        event = Event(
            "execution.state_changed",
            watch.key,
            watch.state,
            execution,
            now,
            watch.polls,
            self.discovered_by.get(watch.key),
            previous_state=previous,
        )
        try:
            await self._on_change(event, row)
        except LeaseLostError:
            self._lease_lost(watch)
            return False
        except StoreError as exc:
            watch.polls -= 1  # the change is found again by the next poll, under the same id
            log.error("event.store_failed", **key_fields(watch.key), reason=str(exc))
            return False
        return True

    def _lease_lost(self, watch: Watch) -> None:
        """Another replica took this watch over: it produces the event, not this one."""
        log.warning("watch.taken_over", **key_fields(watch.key), action="dropped here")
        self.drop(watch.key)

    def _answered(self, now: float) -> None:
        self.last_ok_at = now
        if self.auth_failing:
            self.auth_failing = False
            log.info("api.auth_recovered")

    async def probe(self) -> None:
        """Ask the API about one watched execution now, to learn whether the key works.

        After a reload brings a new key, watches wait out ``poll.max_interval``
        (auth failures slow them down); this one request lets ``/readyz`` tell
        within seconds. The answer itself is left to that watch's next poll.
        """
        key = next((k for k, w in self._watches.items() if w.active), None)
        if key is None:
            return
        try:
            await self.client.get_execution(key)
        except PermanentApiError:
            pass
        except AuthError:
            log.error(
                "api.auth_still_failing", **key_fields(key), hint="the new key is rejected too"
            )
            return
        except Exception as exc:  # transient: the regular polls will tell
            log.info("api.probe_failed", **key_fields(key), reason=str(exc))
            return
        self._answered(self._wall())

    def _note_unknown(self, watch: Watch, state: str) -> None:
        folded = state.casefold()
        if folded not in self._unknown_states:
            self._unknown_states.add(folded)
            log.warning(
                "execution.unknown_state",
                **key_fields(watch.key),
                state=state,
                hint="still polling; add it to poll.terminal_states if it means the run is over",
            )

    async def _after_failure(self, watch: Watch, exc: TransientApiError) -> float | None:
        delay = poll_delay_s(self.poll, watch.level, self._rng)
        log.warning(
            "poll.failed",
            **key_fields(watch.key),
            reason=str(exc),
            status=exc.status,
            next_poll_in_s=round(delay, 3),
        )
        return await self._unless_timed_out(watch, delay)

    def _after_auth_error(self, watch: Watch, exc: AuthError) -> float:
        if not self.auth_failing:
            self.auth_failing = True
            log.error(
                "api.auth_failed",
                **key_fields(watch.key),
                status=exc.status,
                reason=str(exc),
                action="replace the API key, then restart (systemctl restart blink-watcher): "
                "systemd copies credentials and the environment is read only at start; "
                "a reload will do only for a blink.api_key_file read directly, outside "
                "systemd's credentials; polling continues at poll.max_interval",
            )
        return self.poll.max_interval_s

    async def _after_permanent(self, watch: Watch, exc: PermanentApiError) -> float | None:
        # A 400 or 404 is an answer about the execution: the API and the key work.
        self._answered(self._wall())
        watch.polls += 1
        if exc.status == 400:
            log.warning("execution.invalid", **key_fields(watch.key), reason=str(exc))
            return await self._finish(watch, "execution.invalid", watch.state, None)
        watch.not_found += 1
        if watch.not_found >= self.poll.not_found_grace:
            log.warning(
                "execution.not_found",
                **key_fields(watch.key),
                consecutive_404s=watch.not_found,
            )
            return await self._finish(watch, "execution.not_found", watch.state, None)
        log.info(
            "poll.not_found",
            **key_fields(watch.key),
            consecutive_404s=watch.not_found,
            grace=self.poll.not_found_grace,
        )
        return await self._unless_timed_out(watch, poll_delay_s(self.poll, 0, self._rng))

    async def _unless_timed_out(self, watch: Watch, delay_s: float) -> float | None:
        if self._wall() >= watch.first_seen_at + self.poll.max_watch_s:
            return await self._finish(watch, "execution.watch_timeout", watch.state, None)
        return delay_s

    async def _finish(
        self, watch: Watch, kind: EventType, state: str | None, execution: Execution | None
    ) -> float | None:
        if not watch.active:
            return None  # removed (no longer configured) while its poll was in flight
        try:
            if execution is None and watch.polls:
                # Not-found, invalid and timed-out watches carry what we last saw.
                stored = await self._store.last_response(watch.key)
                execution = None if stored is None else Execution.from_api(stored)
            event = Event(
                kind,
                watch.key,
                state,
                execution,
                self._wall(),
                watch.polls,
                self.discovered_by.get(watch.key),
            )
            await self._on_event(event)
        except LeaseLostError:
            self._lease_lost(watch)
            return None
        except StoreError as exc:
            # Not stored means not produced: poll again later rather than lose it.
            log.error("event.store_failed", **key_fields(watch.key), reason=str(exc))
            return self.poll.max_interval_s
        if self._watches.get(watch.key) is watch:
            del self._watches[watch.key]
            if self.held is not None:
                self.held.unscheduled(watch)
            self.discovered_by.pop(watch.key, None)
        watch.active = False
        self.finished += 1
        self._check_done()
        return None
