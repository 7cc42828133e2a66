"""The scheduler: when each execution is polled, what each answer means, when a watch ends.

The Blink API is a scripted ``FakeClient`` and the state store a small in-memory
``FakeStore``; the wall clock and the jitter source are injected. Loop-driven
tests use millisecond intervals and wait on conditions, never on elapsed time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog

from tests.waiting import settle, until
from watcher.config import PollConfig
from watcher.errors import (
    AuthError,
    PermanentApiError,
    StoreError,
    TransientApiError,
)
from watcher.models import Event, Execution, ExecutionKey, WatchRow
from watcher.scheduler import Scheduler, poll_delay_s

KEY: ExecutionKey = ("ws", "ex-1")
FAST = PollConfig(interval_s=0.001, max_interval_s=0.008, backoff=2.0, jitter=0.0)


def running(**fields: Any) -> Execution:
    return Execution(state="Running", **fields)


def state(value: str | None, ui: str | None = None, **fields: Any) -> Execution:
    return Execution(state=value, state_ui=ui, **fields)


def not_found() -> PermanentApiError:
    return PermanentApiError("HTTP 404: no such execution", status=404)


# A script entry: an answer, an error to raise, or a callable run at poll time
# (to move the clock or look at the scheduler mid-watch) that returns either.
Step = Execution | Exception | Callable[[], "Execution | Exception"]


class FakeClient:
    """Answers each key from its script; the last entry repeats forever."""

    def __init__(self, scripts: dict[ExecutionKey, list[Step]] | None = None) -> None:
        self.scripts = scripts or {}
        self.calls: list[ExecutionKey] = []
        self.gate: asyncio.Event | None = None  # when set: calls wait for it ...
        self.gate_from = 1  # ... from this call on (1-based)
        self.in_flight = 0
        self.most_in_flight = 0

    def calls_for(self, key: ExecutionKey) -> int:
        return self.calls.count(key)

    async def get_execution(self, key: ExecutionKey) -> Execution:
        self.calls.append(key)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None and len(self.calls) >= self.gate_from:
                await self.gate.wait()
        finally:
            self.in_flight -= 1
        script = self.scripts[key]
        step = script.pop(0) if len(script) > 1 else script[0]
        if callable(step):
            step = step()
        if isinstance(step, Exception):
            raise step
        return step


@dataclass
class FakeStore:
    """The three calls the scheduler makes, kept in memory."""

    rows: dict[ExecutionKey, WatchRow] = field(default_factory=dict)
    saved: list[WatchRow] = field(default_factory=list)
    forgotten: list[ExecutionKey] = field(default_factory=list)
    fail_last_response: int = 0  # raise StoreError this many times
    full: asyncio.Event | None = None  # when set: room() waits for it (a writer behind)
    waiting_for_room: int = 0

    def save_watch(self, row: WatchRow) -> None:
        self.saved.append(row)
        self.rows[row.key] = row

    async def room(self) -> None:
        if self.full is not None:
            self.waiting_for_room += 1
            try:
                await self.full.wait()
            finally:
                self.waiting_for_room -= 1

    def forget_watch(self, key: ExecutionKey) -> None:
        self.forgotten.append(key)
        self.rows.pop(key, None)

    async def last_response(self, key: ExecutionKey) -> dict[str, object] | None:
        if self.fail_last_response:
            self.fail_last_response -= 1
            raise StoreError("state file: disk I/O error")
        row = self.rows.get(key)
        return None if row is None else row.last_response


class Recorder:
    """``on_event``: records each event; can be told to fail the next calls."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.failures: list[Exception] = []

    async def __call__(self, event: Event) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.events.append(event)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    sched: Scheduler
    client: FakeClient
    store: FakeStore
    on_event: Recorder
    clock: Clock
    delays: list[float]
    task: asyncio.Task[Any] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.sched.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            # A scheduler that died has failed its test already (until_done shows why).
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
            self.task = None

    async def until_done(self) -> None:
        assert self.task is not None
        done = asyncio.create_task(self.sched.all_done.wait())
        finished, _ = await asyncio.wait(
            {done, self.task}, timeout=10, return_when=asyncio.FIRST_COMPLETED
        )
        done.cancel()
        if self.task in finished:
            self.task.result()  # the scheduler died: show why
        assert done in finished, "the watches never ended"


Make = Callable[..., Harness]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    made: list[Harness] = []

    def factory(
        scripts: dict[ExecutionKey, list[Step]] | None = None,
        poll: PollConfig = FAST,
        concurrency: int = 4,
        rng: Callable[[], float] = lambda: 0.5,
    ) -> Harness:
        client = FakeClient(scripts)
        store = FakeStore()
        on_event = Recorder()
        clock = Clock()
        sched = Scheduler(
            poll, client, store, on_event, concurrency=concurrency, wall=clock, rng=rng
        )
        delays: list[float] = []
        schedule = sched._schedule

        # The delay the scheduler chose for the next poll, read where it hands
        # the watch to its queue: exact, no loop clock involved.
        def recording(watch: Any, delay_s: float, since: float | None = None) -> None:
            delays.append(delay_s)
            schedule(watch, delay_s, since)

        sched._schedule = recording  # type: ignore[method-assign]
        harness = Harness(sched, client, store, on_event, clock, delays)
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        await harness.stop()


def polls_still_possible(h: Harness) -> list[ExecutionKey]:
    """Watches that could still be polled: queued and active, or with a poll in flight.

    Empty means nothing else can happen, which a test can check at once instead
    of sleeping and hoping a stray poll would have shown up by then.
    """
    queued = [w.key for w in h.sched._due.items() if w.active]
    return queued + [KEY] * h.client.in_flight


async def run_to_end(h: Harness, *keys: ExecutionKey) -> None:
    for key in keys or (KEY,):
        h.sched.add(key)
    h.start()
    await h.until_done()


# --- poll_delay_s -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rng", "expected"),
    [(0.0, 9.0), (0.5, 10.0), (1.0, 11.0)],
)
def test_jitter_stays_within_plus_or_minus_the_configured_fraction(
    rng: float, expected: float
) -> None:
    poll = PollConfig(interval_s=10.0, max_interval_s=100.0, backoff=2.0, jitter=0.1)

    assert poll_delay_s(poll, 0, lambda: rng) == pytest.approx(expected)


def test_the_delay_grows_by_backoff_per_level_up_to_max_interval() -> None:
    poll = PollConfig(interval_s=5.0, max_interval_s=60.0, backoff=1.5, jitter=0.0)

    delays = [poll_delay_s(poll, level) for level in range(10)]

    assert delays[:3] == pytest.approx([5.0, 7.5, 11.25])
    assert max(delays) == 60.0
    assert delays == sorted(delays)


def test_jitter_applies_to_the_capped_interval_too() -> None:
    poll = PollConfig(interval_s=5.0, max_interval_s=60.0, backoff=1.5, jitter=0.2)

    assert poll_delay_s(poll, 50, lambda: 0.0) == pytest.approx(48.0)
    assert poll_delay_s(poll, 50, lambda: 1.0) == pytest.approx(72.0)


# --- timing -------------------------------------------------------------------------------


async def test_the_first_poll_happens_at_once_and_the_next_waits_an_interval(make: Make) -> None:
    h = make({KEY: [running()]}, poll=PollConfig(interval_s=3600.0, max_interval_s=3600.0))
    h.sched.add(KEY)
    h.start()

    await until(lambda: len(h.client.calls) == 1)
    await settle()

    assert h.client.calls == [KEY]
    assert h.delays == [pytest.approx(3600.0)]


async def test_the_interval_grows_while_the_state_is_unchanged_and_resets_on_a_change(
    make: Make,
) -> None:
    script: list[Step] = [*[running()] * 6, *[state("Waiting")] * 2, state("Completed")]
    h = make({KEY: script})

    await run_to_end(h)

    assert h.delays == pytest.approx(
        [
            *[0.001, 0.002, 0.004, 0.008, 0.008, 0.008],  # Running: grows, capped at max_interval
            *[0.001, 0.002],  # Waiting: back to the base interval
        ]
    )


async def test_the_scheduler_applies_its_injected_jitter(make: Make) -> None:
    poll = PollConfig(interval_s=0.001, max_interval_s=0.001, backoff=1.0, jitter=0.5)
    low = make({KEY: [running(), state("Completed")]}, poll=poll, rng=lambda: 0.0)
    high = make({KEY: [running(), state("Completed")]}, poll=poll, rng=lambda: 1.0)

    await run_to_end(low)
    await run_to_end(high)

    assert low.delays == [pytest.approx(0.0005)]
    assert high.delays == [pytest.approx(0.0015)]


# --- terminal detection -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "reported"),
    [
        (state("Completed"), "Completed"),
        (state("completed"), "completed"),
        (state("FAILED"), "FAILED"),
        (state("running", ui="Cancelled"), "Cancelled"),  # state_ui wins
        (state("Timeout", ui=""), "Timeout"),  # an empty state_ui falls back to state
        (state(None, ui="skipped"), "skipped"),
    ],
)
async def test_a_terminal_state_ends_the_watch_with_execution_finished(
    make: Make, answer: Execution, reported: str
) -> None:
    h = make({KEY: [running(), answer]})

    await run_to_end(h)

    [event] = h.on_event.events
    assert event.event == "execution.finished"
    assert event.state == reported  # as the API spelled it
    assert event.key == KEY
    assert event.polls == 2
    assert h.client.calls_for(KEY) == 2


async def test_state_ui_takes_precedence_over_a_terminal_state(make: Make) -> None:
    h = make({KEY: [state("Completed", ui="Running")] * 3 + [state("Completed", ui="Completed")]})

    await run_to_end(h)

    assert h.client.calls_for(KEY) == 4
    assert h.on_event.events[0].polls == 4


async def test_terminal_states_are_configurable(make: Make) -> None:
    poll = PollConfig(
        interval_s=0.001, max_interval_s=0.001, jitter=0.0, terminal_states=frozenset({"done"})
    )
    h = make({KEY: [state("Completed"), state("Completed"), state("DONE")]}, poll=poll)

    await run_to_end(h)

    [event] = h.on_event.events
    assert event.state == "DONE"
    assert event.polls == 3


async def test_paused_keeps_polling_without_a_warning(make: Make) -> None:
    h = make({KEY: [state("Paused")] * 3 + [state("Completed")]})

    with structlog.testing.capture_logs() as logs:
        await run_to_end(h)

    assert h.client.calls_for(KEY) == 4
    assert h.on_event.events[0].state == "Completed"
    assert not [e for e in logs if e["event"] == "execution.unknown_state"]


async def test_an_unknown_state_keeps_polling_and_is_logged_once(make: Make) -> None:
    other: ExecutionKey = ("ws", "ex-2")
    script: list[Step] = [
        state("Frobnicating"),
        state("Frobnicating"),
        running(),
        state("frobnicating"),
        state("Completed"),
    ]
    h = make({KEY: script, other: [state("Frobnicating"), state("Failed")]})

    with structlog.testing.capture_logs() as logs:
        await run_to_end(h, KEY, other)

    assert h.client.calls_for(KEY) == 5
    assert {e.key: e.state for e in h.on_event.events} == {KEY: "Completed", other: "Failed"}
    warnings = [e for e in logs if e["event"] == "execution.unknown_state"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["state"].casefold() == "frobnicating"


# --- 404 / 400 ----------------------------------------------------------------------------


async def test_consecutive_404s_past_the_grace_end_the_watch_as_not_found(make: Make) -> None:
    poll = PollConfig(interval_s=0.001, max_interval_s=0.001, jitter=0.0, not_found_grace=3)
    h = make({KEY: [not_found()]}, poll=poll)

    await run_to_end(h)

    [event] = h.on_event.events
    assert event.event == "execution.not_found"
    assert event.state is None
    assert event.polls == 3
    assert h.client.calls_for(KEY) == 3


async def test_a_200_between_404s_resets_the_not_found_count(make: Make) -> None:
    poll = PollConfig(interval_s=0.001, max_interval_s=0.001, jitter=0.0, not_found_grace=3)
    script: list[Step] = [
        not_found(),
        not_found(),
        running(playbook_name="nightly"),
        not_found(),
        not_found(),
        not_found(),
    ]
    h = make({KEY: script}, poll=poll)

    await run_to_end(h)

    [event] = h.on_event.events
    assert event.event == "execution.not_found"
    assert h.client.calls_for(KEY) == 6
    # The event carries what was last seen of the execution.
    assert event.state == "Running"
    assert event.execution is not None
    assert event.execution.playbook_name == "nightly"


async def test_a_404_within_the_grace_does_not_end_the_watch(make: Make) -> None:
    h = make({KEY: [not_found(), not_found(), state("Completed")]})

    await run_to_end(h)

    [event] = h.on_event.events
    assert event.event == "execution.finished"
    assert event.polls == 3


async def test_a_400_ends_the_watch_as_invalid_at_once(make: Make) -> None:
    h = make({KEY: [PermanentApiError("HTTP 400: bad id", status=400), running()]})

    await run_to_end(h)

    [event] = h.on_event.events
    assert event.event == "execution.invalid"
    assert event.polls == 1
    assert h.client.calls_for(KEY) == 1


# --- max_watch ----------------------------------------------------------------------------

MAX_WATCH = PollConfig(interval_s=0.001, max_interval_s=0.001, jitter=0.0, max_watch_s=600.0)


async def test_max_watch_ends_the_watch_with_the_last_seen_state(make: Make) -> None:
    h = make(poll=MAX_WATCH)

    def later() -> Execution:
        h.clock.now += 601.0
        return running(playbook_name="slow")

    h.client.scripts[KEY] = [state("Queued"), running(), later, running()]

    await run_to_end(h)

    [event] = h.on_event.events
    assert event.event == "execution.watch_timeout"
    assert event.state == "Running"
    assert event.polls == 3
    assert event.execution is not None
    assert event.execution.playbook_name == "slow"


async def test_max_watch_ends_a_watch_that_only_ever_failed(make: Make) -> None:
    h = make(poll=MAX_WATCH)

    def later() -> Exception:
        h.clock.now += 601.0
        return TransientApiError("HTTP 503", status=503)

    h.client.scripts[KEY] = [TransientApiError("HTTP 502", status=502), later]

    await run_to_end(h)

    [event] = h.on_event.events
    assert event.event == "execution.watch_timeout"
    assert event.state is None
    assert event.execution is None
    assert event.polls == 0


async def test_a_resumed_watch_counts_max_watch_from_its_first_sighting(make: Make) -> None:
    h = make({KEY: [running()]}, poll=MAX_WATCH)
    row = WatchRow(KEY, "Running", 7, h.clock.now - 601.0, h.clock.now - 700.0)
    h.sched.add(KEY, resume=row)
    h.start()
    await h.until_done()

    [event] = h.on_event.events
    assert event.event == "execution.watch_timeout"
    assert event.polls == 8
    assert h.client.calls_for(KEY) == 1


# --- API failures -------------------------------------------------------------------------


async def test_transient_errors_never_end_the_watch(make: Make) -> None:
    script: list[Step] = [*[TransientApiError("HTTP 503", status=503)] * 25, state("Completed")]
    h = make({KEY: script})

    await run_to_end(h)

    [event] = h.on_event.events
    assert event.event == "execution.finished"
    assert event.polls == 1  # failures are not responses
    assert h.client.calls_for(KEY) == 26


async def test_an_auth_error_polls_again_at_max_interval_until_a_200_clears_it(make: Make) -> None:
    h = make()
    seen: list[bool] = []

    def look() -> Execution:
        seen.append(h.sched.auth_failing)
        return running()

    h.client.scripts[KEY] = [
        AuthError("HTTP 401", status=401),
        AuthError("HTTP 403", status=403),
        look,
        state("Completed"),
    ]

    with structlog.testing.capture_logs() as logs:
        await run_to_end(h)

    assert seen == [True]
    assert h.sched.auth_failing is False
    assert h.delays[:2] == [FAST.max_interval_s, FAST.max_interval_s]
    assert h.on_event.events[0].event == "execution.finished"
    names = [e["event"] for e in logs]
    assert names.count("api.auth_failed") == 1  # one actionable error, not one per poll
    assert names.count("api.auth_recovered") == 1


async def test_a_404_counts_as_an_api_answer_for_readiness(make: Make) -> None:
    h = make({KEY: [not_found()]})
    h.sched.add(KEY)
    h.start()

    await until(lambda: h.client.calls_for(KEY) >= 1 and h.sched.last_ok_at is not None)

    assert h.sched.last_ok_at == h.clock.now


async def test_a_probe_clears_a_failing_key_without_waiting_for_the_next_poll(
    make: Make,
) -> None:
    h = make({KEY: [AuthError("HTTP 401", status=401)]})
    h.sched.add(KEY)
    h.start()
    await until(lambda: h.sched.auth_failing)
    h.client.scripts[KEY] = [running()]  # the key was fixed (a reload brought a new one)

    await h.sched.probe()

    assert h.sched.auth_failing is False
    assert h.client.calls_for(KEY) == 2  # the probe; the watch itself waits max_interval


async def test_a_probe_with_the_key_still_rejected_keeps_readiness_failing(make: Make) -> None:
    h = make({KEY: [AuthError("HTTP 401", status=401)]})
    h.sched.add(KEY)
    h.start()
    await until(lambda: h.sched.auth_failing)

    await h.sched.probe()

    assert h.sched.auth_failing is True
    assert h.sched.last_ok_at is None


async def test_a_bug_in_the_client_costs_one_poll_not_the_watch(make: Make) -> None:
    h = make({KEY: [RuntimeError("boom"), state("Completed")]})

    await run_to_end(h)

    assert h.on_event.events[0].event == "execution.finished"


# --- one event per watch ------------------------------------------------------------------


async def test_an_execution_is_never_polled_after_its_terminal_response(make: Make) -> None:
    keys = [("ws", f"ex-{n}") for n in range(5)]
    h = make({k: [running()] * n + [state("Failed")] for n, k in enumerate(keys)})

    await run_to_end(h, *keys)

    assert polls_still_possible(h) == []
    assert [h.client.calls_for(k) for k in keys] == [1, 2, 3, 4, 5]
    assert sorted(e.key for e in h.on_event.events) == sorted(keys)
    assert len(h.sched) == 0
    assert h.sched.finished == 5


async def test_adding_a_key_twice_watches_it_once(make: Make) -> None:
    h = make({KEY: [state("Completed")]})
    h.sched.add(KEY)
    h.sched.add_many([KEY, KEY], {})

    await run_to_end(h)

    assert polls_still_possible(h) == []
    assert len(h.on_event.events) == 1
    assert h.client.calls_for(KEY) == 1


async def test_remove_stops_polling_without_an_event(make: Make) -> None:
    h = make({KEY: [running()]})
    h.sched.add(KEY)
    h.start()
    await until(lambda: h.client.calls_for(KEY) >= 2)

    h.sched.remove(KEY)
    await h.until_done()
    await until(lambda: h.client.in_flight == 0)

    assert polls_still_possible(h) == []
    assert h.on_event.events == []
    assert KEY not in h.sched
    assert h.store.forgotten == [KEY]


async def test_a_watch_removed_during_its_poll_produces_no_event(make: Make) -> None:
    h = make({KEY: [state("Completed")]})
    h.client.gate = asyncio.Event()
    h.sched.add(KEY)
    h.start()
    await until(lambda: h.client.in_flight == 1)

    h.sched.remove(KEY)
    h.client.gate.set()
    await until(lambda: h.client.in_flight == 0)
    await settle()  # the answer's handling (which must see the removal) has run

    assert polls_still_possible(h) == []
    assert h.on_event.events == []
    assert KEY not in h.store.rows  # nor does the poll bring the forgotten row back
    assert h.sched.all_done.is_set()


async def test_max_concurrency_caps_polls_in_flight(make: Make) -> None:
    keys = [("ws", f"ex-{n}") for n in range(10)]
    h = make({k: [state("Completed")] for k in keys}, concurrency=3)
    h.client.gate = asyncio.Event()
    h.sched.add_many(keys, {})
    h.start()

    await until(lambda: h.client.in_flight == 3)
    await settle()
    assert h.client.in_flight == 3
    h.client.gate.set()
    await h.until_done()

    assert h.client.most_in_flight == 3
    assert len(h.on_event.events) == 10


async def test_all_done_is_set_only_when_the_last_watch_ends(make: Make) -> None:
    slow: ExecutionKey = ("ws", "slow")
    h = make({KEY: [state("Completed")], slow: [running()]})
    assert h.sched.all_done.is_set()  # nothing to watch

    h.sched.add_many([KEY, slow], {})
    assert not h.sched.all_done.is_set()
    h.start()
    await until(lambda: len(h.on_event.events) == 1 and h.client.calls_for(slow) >= 3)
    assert not h.sched.all_done.is_set()
    h.client.scripts[slow] = [state("Completed")]
    await h.until_done()

    assert [e.key for e in h.on_event.events] == [KEY, slow]


# --- the store ----------------------------------------------------------------------------


async def test_a_store_failure_keeps_the_watch_and_it_is_reported_later(make: Make) -> None:
    h = make({KEY: [state("Completed")]})
    h.on_event.failures = [StoreError("disk full"), StoreError("disk full")]
    h.client.gate, h.client.gate_from = asyncio.Event(), 2  # hold the poll after a failure

    with structlog.testing.capture_logs() as logs:
        h.sched.add(KEY)
        h.start()
        await until(lambda: h.client.in_flight == 1)
        assert KEY in h.sched
        assert not h.sched.all_done.is_set()
        assert h.on_event.events == []
        h.client.gate.set()
        await h.until_done()

    [event] = h.on_event.events
    assert event.event == "execution.finished"
    assert event.polls == 3
    assert h.client.calls_for(KEY) == 3
    failures = [e for e in logs if e["event"] == "event.store_failed"]
    assert len(failures) == 2
    assert failures[0]["log_level"] == "error"


async def test_a_store_read_failure_at_the_end_keeps_the_watch(make: Make) -> None:
    poll = PollConfig(interval_s=0.001, max_interval_s=0.001, jitter=0.0, not_found_grace=1)
    other: ExecutionKey = ("ws", "other")
    h = make({KEY: [not_found()], other: [running()] * 3 + [state("Completed")]}, poll=poll)
    h.store.fail_last_response = 1

    await run_to_end(h, KEY, other)

    assert {e.key: e.event for e in h.on_event.events} == {
        KEY: "execution.not_found",
        other: "execution.finished",
    }


async def test_an_unexpected_error_from_on_event_does_not_stop_the_scheduler(make: Make) -> None:
    other: ExecutionKey = ("ws", "other")
    h = make({KEY: [state("Completed")], other: [running()] * 3 + [state("Completed")]})
    h.on_event.failures = [RuntimeError("bug in a handler")]

    await run_to_end(h, KEY, other)

    assert sorted(e.key for e in h.on_event.events) == sorted([KEY, other])


async def test_the_watch_is_saved_only_when_its_state_changes(make: Make) -> None:
    script: list[Step] = [
        *[running(display_name="r")] * 5,
        *[state("Waiting")] * 4,
        running(),
        state("Failed"),
    ]
    h = make({KEY: script})

    await run_to_end(h)

    assert [(r.state, r.polls) for r in h.store.saved] == [
        ("Running", 1),
        ("Waiting", 6),
        ("Running", 10),
    ]
    first = h.store.saved[0]
    assert first.key == KEY
    assert first.first_seen_at == h.clock.now
    assert first.last_response == {"state": "Running", "display_name": "r"}


async def test_a_resumed_watch_in_the_same_state_writes_nothing(make: Make) -> None:
    h = make({KEY: [running()] * 3 + [state("Completed")]})
    row = WatchRow(KEY, "Running", 4, h.clock.now - 10.0, h.clock.now - 5.0)
    h.sched.add(KEY, resume=row)
    h.start()
    await h.until_done()

    assert h.store.saved == []
    assert h.on_event.events[0].polls == 8


async def test_cancelling_a_poll_mid_flight_puts_the_watch_back(make: Make) -> None:
    h = make({KEY: [state("Completed")]})
    h.client.gate = asyncio.Event()
    h.sched.add(KEY)
    h.start()
    await until(lambda: h.client.in_flight == 1)

    await h.stop()
    assert KEY in h.sched
    assert h.on_event.events == []

    h.client.gate.set()
    h.start()
    await h.until_done()

    assert h.client.calls_for(KEY) == 2  # the cancelled poll, then the one that counted
    [event] = h.on_event.events
    assert event.polls == 1


async def test_the_interval_runs_from_poll_to_poll_not_from_the_answer(make: Make) -> None:
    # A slow answer must not push the next poll back: it is due one interval
    # after this poll started, however long the API took to answer.
    gate = asyncio.Event()
    h = make({KEY: [running()]}, poll=PollConfig(interval_s=3600.0, max_interval_s=3600.0))
    slow_get = h.client.get_execution

    loop = asyncio.get_running_loop()
    asked_at: list[float] = []

    async def held(key: ExecutionKey) -> Execution:
        asked_at.append(loop.time())
        await gate.wait()
        return await slow_get(key)

    h.client.get_execution = held  # type: ignore[method-assign]
    h.sched.add(KEY)
    h.start()
    await until(lambda: bool(asked_at))
    await asyncio.sleep(0.01)  # the answer takes a while
    answered_at = loop.time()
    gate.set()
    await until(lambda: len(h.sched._due) == 1)
    due = h.sched._due.peek_due()
    assert due is not None
    assert answered_at > asked_at[0]
    assert due <= asked_at[0] + 3600.0  # from the poll's start, not from its answer


async def test_a_poll_that_saved_waits_for_room_in_the_store_before_going_on(make: Make) -> None:
    h = make({KEY: [running(), running(), state("Completed")]})
    h.store.full = asyncio.Event()
    h.sched.add(KEY)
    h.start()
    await until(lambda: h.store.waiting_for_room == 1, what="the poll to wait for room")
    await settle()
    # Held back: the first answer is saved, but no next poll while the writer is behind.
    assert h.client.calls_for(KEY) == 1
    assert len(h.store.saved) == 1
    assert h.delays == []
    h.store.full.set()
    await h.until_done()
    assert [e.state for e in h.on_event.events] == ["Completed"]
