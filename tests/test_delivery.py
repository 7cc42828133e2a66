"""The outbox: each stored event reaches each sink once, with retries and dead letters.

Sinks are ``RecordingSink``s that can be scripted to fail or held mid-attempt
by an ``asyncio.Event``; the store is a real SQLite file, so what the outbox
persists is read back exactly as a restart would see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.waiting import settle, until
from watcher.config import LogSinkConfig, SinkConfig, WebhookSinkConfig
from watcher.delivery import Outbox
from watcher.errors import DeliveryError
from watcher.models import DeliveryRow, EventRecord, ExecutionKey
from watcher.store import Store

KEY: ExecutionKey = ("ws", "ex-1")
WALL = 1_000_000.0


def fast(config: SinkConfig, **changes: Any) -> SinkConfig:
    """The sink's real defaults, with retries a thousand times quicker."""
    return dataclasses.replace(config, backoff_initial_s=0.001, backoff_max_s=0.002, **changes)


class RecordingSink:
    """Records every attempt; fails as scripted; waits on ``gate`` when one is set.

    With ``gate_from = n`` only the n-th attempt and later ones wait.
    """

    def __init__(self, config: SinkConfig) -> None:
        self.config = config
        self.attempts: list[tuple[str, bytes]] = []
        self.failures: list[DeliveryError] = []
        self.gate: asyncio.Event | None = None
        self.gate_from = 1
        self.in_flight = 0
        self.closed = False

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def delivered(self) -> list[str]:
        return [event_id for event_id, _ in self.attempts]

    async def deliver(self, event_id: str, body: bytes) -> None:
        self.attempts.append((event_id, body))
        self.in_flight += 1
        try:
            if self.gate is not None and len(self.attempts) >= self.gate_from:
                await self.gate.wait()
        finally:
            self.in_flight -= 1
        if self.failures:
            raise self.failures.pop(0)

    async def close(self) -> None:
        self.closed = True


def log_sink(name: str = "log", **changes: Any) -> RecordingSink:
    return RecordingSink(fast(LogSinkConfig(name=name), **changes))


def webhook_sink(name: str = "hook", **changes: Any) -> RecordingSink:
    return RecordingSink(fast(WebhookSinkConfig(name=name, url="https://example.test/"), **changes))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(tmp_path / "state.db") as s:
        yield s


class Runner:
    """Starts ``Outbox.run`` and cancels it at the end of the test."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def start(self, outbox: Outbox) -> asyncio.Task[Any]:
        task = asyncio.create_task(outbox.run())
        self.tasks.append(task)
        return task

    async def stop(self, task: asyncio.Task[Any]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def runner() -> AsyncIterator[Runner]:
    r = Runner()
    yield r
    for task in r.tasks:
        await r.stop(task)


async def stored_event(
    store: Store, sinks: list[RecordingSink], event_id: str = "evt_1", body: bytes = b'{"n":1}'
) -> None:
    # One event per execution: the store keeps the first event of an execution only.
    key = KEY if event_id == "evt_1" else ("ws", f"ex-{event_id}")
    record = EventRecord(event_id, key, "execution.finished", "Completed", body, WALL)
    await store.record_event(record, [s.name for s in sinks], now=WALL)


async def rows(store: Store, status: str = "pending") -> dict[tuple[str, str], DeliveryRow]:
    await store.flush()
    return {(r.event_id, r.sink): r for r in await store.open_deliveries(status)}  # type: ignore[arg-type]


async def test_an_event_is_delivered_once_to_each_sink_and_marked_delivered(
    store: Store, runner: Runner
) -> None:
    a, b = log_sink("a"), webhook_sink("b")
    results: list[tuple[str, str]] = []
    outbox = Outbox(store, [a, b], observer=lambda sink, result: results.append((sink, result)))
    runner.start(outbox)
    await stored_event(store, [a, b])

    outbox.enqueue("evt_1", b'{"n":1}', ["a", "b"], KEY)
    assert not outbox.idle.is_set()
    await asyncio.wait_for(outbox.idle.wait(), 10)
    await settle()

    assert a.attempts == [("evt_1", b'{"n":1}')]
    assert b.attempts == [("evt_1", b'{"n":1}')]
    delivered = await rows(store, "delivered")
    assert {k: r.attempts for k, r in delivered.items()} == {("evt_1", "a"): 1, ("evt_1", "b"): 1}
    assert await rows(store) == {}
    assert sorted(results) == [("a", "delivered"), ("b", "delivered")]
    assert outbox.outstanding == 0


async def test_a_retryable_failure_is_retried_and_each_attempt_is_persisted(
    store: Store, runner: Runner
) -> None:
    sink = webhook_sink()
    sink.failures = [
        DeliveryError("HTTP 503 from x", retryable=True),
        DeliveryError("HTTP 502 from x", retryable=True),
    ]
    # Hold the third attempt to look at what the store has by then.
    sink.gate, sink.gate_from = asyncio.Event(), 3
    outbox = Outbox(store, [sink], wall=lambda: WALL)
    await stored_event(store, [sink])
    outbox.enqueue("evt_1", b'{"n":1}', ["hook"], KEY)
    runner.start(outbox)

    await until(lambda: sink.in_flight == 1)
    row = (await rows(store))[("evt_1", "hook")]
    assert (row.attempts, row.last_error) == (2, "HTTP 502 from x")
    assert row.next_attempt_at >= WALL
    sink.gate.set()
    await asyncio.wait_for(outbox.idle.wait(), 10)

    assert sink.delivered == ["evt_1"] * 3
    row = (await rows(store, "delivered"))[("evt_1", "hook")]
    assert row.attempts == 3


async def test_a_failed_attempt_is_written_with_its_count_and_reason(
    store: Store, runner: Runner
) -> None:
    sink = webhook_sink()
    sink.failures = [DeliveryError("HTTP 503 from x", retryable=True, retry_after_s=60.0)]
    outbox = Outbox(store, [sink], wall=lambda: WALL)
    await stored_event(store, [sink])
    outbox.enqueue("evt_1", b'{"n":1}', ["hook"], KEY)
    runner.start(outbox)

    await until(lambda: len(sink.attempts) == 1)
    await settle()
    row = (await rows(store))[("evt_1", "hook")]

    assert (row.attempts, row.last_error) == (1, "HTTP 503 from x")
    # Retry-After is a floor under the (here millisecond) backoff.
    assert row.next_attempt_at >= WALL + 60.0
    await settle()
    assert len(sink.attempts) == 1
    assert outbox.outstanding == 1


async def test_a_non_retryable_failure_is_dead_at_once_with_its_reason(
    store: Store, runner: Runner
) -> None:
    sink = webhook_sink()
    sink.failures = [DeliveryError("HTTP 410 from https://example.test/", retryable=False)]
    results: list[tuple[str, str]] = []
    outbox = Outbox(store, [sink], observer=lambda s, r: results.append((s, r)))
    await stored_event(store, [sink])

    with structlog.testing.capture_logs() as logs:
        outbox.enqueue("evt_1", b'{"n":1}', ["hook"], KEY)
        runner.start(outbox)
        await asyncio.wait_for(outbox.idle.wait(), 10)

    assert len(sink.attempts) == 1
    dead = (await rows(store, "dead"))[("evt_1", "hook")]
    assert (dead.attempts, dead.last_error) == (1, "HTTP 410 from https://example.test/")
    [diag] = [e for e in logs if e["event"] == "delivery.dead"]
    assert diag["log_level"] == "error"
    assert diag["sink"] == "hook"
    assert diag["execution_id"] == "ex-1"
    assert diag["reason"] == "HTTP 410 from https://example.test/"
    assert results == [("hook", "dead")]


async def test_a_delivery_is_dead_after_max_attempts(store: Store, runner: Runner) -> None:
    sink = webhook_sink(max_attempts=4)
    sink.failures = [DeliveryError(f"HTTP 50{n}", retryable=True) for n in range(10)]
    outbox = Outbox(store, [sink])
    await stored_event(store, [sink])

    with structlog.testing.capture_logs() as logs:
        outbox.enqueue("evt_1", b'{"n":1}', ["hook"], KEY)
        runner.start(outbox)
        await asyncio.wait_for(outbox.idle.wait(), 10)
        await settle()

    assert len(sink.attempts) == 4
    dead = (await rows(store, "dead"))[("evt_1", "hook")]
    assert (dead.attempts, dead.last_error) == (4, "HTTP 503")
    assert len([e for e in logs if e["event"] == "delivery.retry"]) == 3
    [diag] = [e for e in logs if e["event"] == "delivery.dead"]
    assert "4 attempts" in diag["why"]


async def test_a_sink_that_raises_something_else_is_retried(store: Store, runner: Runner) -> None:
    sink = log_sink()
    sink.failures = [RuntimeError("sink bug")]  # type: ignore[list-item]
    outbox = Outbox(store, [sink])
    await stored_event(store, [sink])
    outbox.enqueue("evt_1", b'{"n":1}', ["log"], KEY)
    runner.start(outbox)

    await asyncio.wait_for(outbox.idle.wait(), 10)

    assert len(sink.attempts) == 2
    assert ("evt_1", "log") in await rows(store, "delivered")


async def test_a_slow_sink_does_not_hold_up_another(store: Store, runner: Runner) -> None:
    slow, quick = webhook_sink("slow"), log_sink("quick")
    slow.gate = asyncio.Event()
    outbox = Outbox(store, [slow, quick])
    runner.start(outbox)
    for n in range(3):
        await stored_event(store, [slow, quick], f"evt_{n}")
        outbox.enqueue(f"evt_{n}", b"{}", ["slow", "quick"], KEY)

    await until(lambda: len(quick.attempts) == 3)
    delivered = await rows(store, "delivered")
    assert {k for k in delivered if k[1] == "quick"} == {(f"evt_{n}", "quick") for n in range(3)}
    assert slow.in_flight >= 1
    assert not outbox.idle.is_set()

    slow.gate.set()
    await asyncio.wait_for(outbox.idle.wait(), 10)
    assert sorted(slow.delivered) == ["evt_0", "evt_1", "evt_2"]


async def test_a_sink_works_at_most_max_in_flight_deliveries_at_once(
    store: Store, runner: Runner
) -> None:
    sink = webhook_sink(max_in_flight=2)
    sink.gate = asyncio.Event()
    outbox = Outbox(store, [sink])
    runner.start(outbox)
    for n in range(5):
        await stored_event(store, [sink], f"evt_{n}")
        outbox.enqueue(f"evt_{n}", b"{}", ["hook"], KEY)

    await until(lambda: sink.in_flight == 2)
    await settle()
    assert sink.in_flight == 2
    sink.gate.set()
    await asyncio.wait_for(outbox.idle.wait(), 10)
    assert len(sink.attempts) == 5


async def test_restore_resumes_stored_attempts_and_skips_unconfigured_sinks(
    store: Store, runner: Runner
) -> None:
    hook, gone = webhook_sink(max_attempts=5), log_sink("gone")
    await stored_event(store, [hook, gone])
    await store.update_delivery("evt_1", "hook", "pending", 4, WALL, "HTTP 503", wait=True)
    hook.failures = [DeliveryError("HTTP 503 again", retryable=True)]
    outbox = Outbox(store, [hook], wall=lambda: WALL)

    with structlog.testing.capture_logs() as logs:
        assert outbox.restore(await store.open_deliveries()) == 1
        runner.start(outbox)
        await asyncio.wait_for(outbox.idle.wait(), 10)

    # Attempt 5 of 5 was the last one: the stored count carried over the restart.
    assert len(hook.attempts) == 1
    dead = (await rows(store, "dead"))[("evt_1", "hook")]
    assert dead.attempts == 5
    [orphaned] = [e for e in logs if e["event"] == "delivery.orphaned"]
    assert (orphaned["sink"], orphaned["pending"]) == ("gone", 1)
    assert ("evt_1", "gone") in await rows(store)  # kept for when the sink comes back
    assert gone.attempts == []


async def test_restore_waits_for_a_stored_next_attempt_time(store: Store, runner: Runner) -> None:
    sink = webhook_sink()
    await stored_event(store, [sink])
    await store.update_delivery("evt_1", "hook", "pending", 1, WALL + 3600, "x", wait=True)
    outbox = Outbox(store, [sink], wall=lambda: WALL)

    outbox.restore(await store.open_deliveries())
    outbox.restore(await store.open_deliveries())  # twice: still one delivery
    runner.start(outbox)
    await settle()

    assert sink.attempts == []
    assert outbox.outstanding == 1


async def test_replace_sinks_keeps_the_queue_of_a_sink_that_stays(
    store: Store, runner: Runner
) -> None:
    old, dropped = webhook_sink("hook"), log_sink("dropped")
    outbox = Outbox(store, [old, dropped])
    await stored_event(store, [old, dropped])
    outbox.enqueue("evt_1", b'{"n":1}', ["hook", "dropped"], KEY)

    new = webhook_sink("hook", max_in_flight=3)
    retired = outbox.replace_sinks([new])
    runner.start(outbox)
    await asyncio.wait_for(outbox.idle.wait(), 10)

    assert {id(s) for s in retired} == {id(old), id(dropped)}
    assert new.attempts == [("evt_1", b'{"n":1}')]
    assert old.attempts == dropped.attempts == []
    assert ("evt_1", "dropped") in await rows(store)  # stays pending in the store
    assert outbox.current_sinks() == [new]


async def test_a_sink_added_while_running_gets_its_deliveries(store: Store, runner: Runner) -> None:
    first = log_sink("first")
    outbox = Outbox(store, [first])
    runner.start(outbox)
    await settle()

    added = webhook_sink("added")
    assert outbox.replace_sinks([first, added]) == []
    await stored_event(store, [first, added])
    outbox.enqueue("evt_1", b"{}", ["first", "added"], KEY)
    await asyncio.wait_for(outbox.idle.wait(), 10)

    assert added.delivered == ["evt_1"]
    assert first.delivered == ["evt_1"]


async def test_removing_a_sink_mid_attempt_leaves_nothing_outstanding(
    store: Store, runner: Runner
) -> None:
    keep, drop = log_sink("keep"), webhook_sink("drop")
    drop.gate = asyncio.Event()
    outbox = Outbox(store, [keep, drop])
    runner.start(outbox)
    await stored_event(store, [keep, drop])
    outbox.enqueue("evt_1", b"{}", ["keep", "drop"], KEY)
    await until(lambda: drop.in_flight == 1 and keep.delivered == ["evt_1"])

    outbox.replace_sinks([keep])
    await until(lambda: drop.in_flight == 0)
    await settle()

    assert outbox.outstanding == 0
    assert outbox.idle.is_set()
    assert ("evt_1", "drop") in await rows(store)  # not attempted to the end: still pending


async def test_drain_returns_once_the_attempts_in_flight_finish(
    store: Store, runner: Runner
) -> None:
    sink = webhook_sink()
    sink.gate = asyncio.Event()
    outbox = Outbox(store, [sink])
    runner.start(outbox)
    await stored_event(store, [sink])
    outbox.enqueue("evt_1", b"{}", ["hook"], KEY)
    await until(lambda: sink.in_flight == 1)

    drain = asyncio.create_task(outbox.drain(60.0))
    await settle()
    assert not drain.done()

    sink.gate.set()
    await asyncio.wait_for(drain, 10)
    assert ("evt_1", "hook") in await rows(store, "delivered")


async def test_drain_does_not_wait_for_a_retry_due_after_its_deadline(
    store: Store, runner: Runner
) -> None:
    sink = webhook_sink()
    sink.failures = [DeliveryError("HTTP 429", retryable=True, retry_after_s=300.0)]
    outbox = Outbox(store, [sink])
    runner.start(outbox)
    await stored_event(store, [sink])
    outbox.enqueue("evt_1", b"{}", ["hook"], KEY)
    await until(lambda: len(sink.attempts) == 1 and sink.in_flight == 0)
    await settle()

    # Bounded by the test timeout, not by this: a wrong drain would wait 60 s.
    await asyncio.wait_for(outbox.drain(60.0), 10)

    assert outbox.outstanding == 1


async def test_drain_gives_up_at_its_timeout(store: Store, runner: Runner) -> None:
    sink = webhook_sink()
    sink.gate = asyncio.Event()  # never released
    outbox = Outbox(store, [sink])
    runner.start(outbox)
    await stored_event(store, [sink])
    outbox.enqueue("evt_1", b"{}", ["hook"], KEY)
    await until(lambda: sink.in_flight == 1)

    await asyncio.wait_for(outbox.drain(0.01), 10)

    assert sink.in_flight == 1


async def test_idle_is_set_with_nothing_to_do_and_cleared_by_work(
    store: Store, runner: Runner
) -> None:
    sink = webhook_sink()
    sink.gate = asyncio.Event()
    outbox = Outbox(store, [sink])
    assert outbox.idle.is_set()

    await stored_event(store, [sink])
    outbox.enqueue("evt_1", b"{}", ["hook"], KEY)
    assert not outbox.idle.is_set()
    runner.start(outbox)
    await until(lambda: sink.in_flight == 1)
    assert not outbox.idle.is_set()

    sink.failures = [DeliveryError("HTTP 400", retryable=False)]
    sink.gate.set()
    await asyncio.wait_for(outbox.idle.wait(), 10)  # dead counts as finished
    assert outbox.outstanding == 0


async def test_cancelling_mid_attempt_puts_the_delivery_back_uncounted(
    store: Store, runner: Runner
) -> None:
    sink = webhook_sink()
    sink.gate = asyncio.Event()
    outbox = Outbox(store, [sink])
    task = runner.start(outbox)
    await stored_event(store, [sink])
    outbox.enqueue("evt_1", b"{}", ["hook"], KEY)
    await until(lambda: sink.in_flight == 1)

    await runner.stop(task)
    assert outbox.outstanding == 1
    assert not outbox.idle.is_set()
    assert (await rows(store))[("evt_1", "hook")].attempts == 0

    sink.gate.set()
    runner.start(outbox)
    await asyncio.wait_for(outbox.idle.wait(), 10)

    assert len(sink.attempts) == 2  # the cancelled one, then the one that counted
    assert (await rows(store, "delivered"))[("evt_1", "hook")].attempts == 1
