"""DueQueue ordering and wake-ups, and work_off's concurrency cap and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest

from tests.waiting import settle, until
from watcher.duequeue import DueQueue, work_off


async def test_pop_returns_the_earliest_due_item_first() -> None:
    queue: DueQueue[str] = DueQueue()
    now = asyncio.get_running_loop().time()
    queue.push(now - 1.0, "c")
    queue.push(now - 3.0, "a")
    queue.push(now - 2.0, "b")

    assert [await queue.pop() for _ in range(3)] == ["a", "b", "c"]
    assert len(queue) == 0


async def test_items_due_at_the_same_time_come_out_first_in_first_out() -> None:
    # dicts cannot be ordered: a tie must never fall through to comparing items.
    queue: DueQueue[dict[str, int]] = DueQueue()
    items = [{"n": n} for n in range(5)]
    for item in items:
        queue.push(0.0, item)

    popped = [await queue.pop() for _ in items]

    assert [p["n"] for p in popped] == [0, 1, 2, 3, 4]


async def test_pop_waits_for_an_item_that_is_not_due_yet() -> None:
    queue: DueQueue[str] = DueQueue()
    queue.push(asyncio.get_running_loop().time() + 3600, "later")
    popper = asyncio.create_task(queue.pop())
    await settle()

    assert not popper.done()
    assert queue.peek_due() is not None
    popper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await popper
    assert len(queue) == 1  # a cancelled pop takes nothing


async def test_an_earlier_push_wakes_a_sleeping_pop() -> None:
    queue: DueQueue[str] = DueQueue()
    queue.push(asyncio.get_running_loop().time() + 3600, "in an hour")
    popper = asyncio.create_task(queue.pop())
    await settle()
    assert not popper.done()

    queue.push(0.0, "now")

    # If the push did not wake the sleeper, it would sleep for an hour.
    assert await asyncio.wait_for(popper, 5) == "now"
    assert len(queue) == 1


async def test_a_push_into_an_empty_queue_wakes_a_waiting_pop() -> None:
    queue: DueQueue[str] = DueQueue()
    popper = asyncio.create_task(queue.pop())
    await settle()
    assert not popper.done()

    queue.push(0.0, "x")

    assert await asyncio.wait_for(popper, 5) == "x"


async def test_drain_items_empties_the_queue_due_or_not() -> None:
    queue: DueQueue[str] = DueQueue()
    queue.push(0.0, "now")
    queue.push(asyncio.get_running_loop().time() + 3600, "later")

    assert sorted(queue.drain_items()) == ["later", "now"]
    assert len(queue) == 0
    assert queue.peek_due() is None


async def test_work_off_handles_every_item_in_due_order() -> None:
    queue: DueQueue[int] = DueQueue()
    now = asyncio.get_running_loop().time()
    for n in (3, 1, 2, 0):
        queue.push(now - 10 + n, n)
    handled: list[int] = []

    async def handle(item: int) -> None:
        handled.append(item)

    worker = asyncio.create_task(work_off(queue, handle, 1))
    try:
        await until(lambda: len(handled) == 4, turns=2000)
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker

    assert handled == [0, 1, 2, 3]


async def test_work_off_never_runs_more_handlers_than_its_concurrency() -> None:
    queue: DueQueue[int] = DueQueue()
    for n in range(10):
        queue.push(0.0, n)
    gate = asyncio.Event()
    in_flight = 0
    most = 0
    done: list[int] = []

    async def handle(item: int) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            await gate.wait()
        finally:
            in_flight -= 1
        done.append(item)

    worker = asyncio.create_task(work_off(queue, handle, 3))
    try:
        await until(lambda: in_flight == 3, turns=2000)
        await settle()
        assert in_flight == 3  # the other seven wait their turn
        gate.set()
        await until(lambda: len(done) == 10, turns=2000)
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker

    assert most == 3
    assert sorted(done) == list(range(10))


async def test_cancelling_work_off_puts_every_unfinished_item_back() -> None:
    queue: DueQueue[int] = DueQueue()
    for n in range(6):
        queue.push(0.0, n)
    started: list[int] = []

    async def handle(item: int) -> None:
        # As work_off requires: an item cancelled mid-handling is put back by its handler.
        started.append(item)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            queue.push(0.0, item)
            raise

    worker = asyncio.create_task(work_off(queue, handle, 2))
    await until(lambda: len(started) == 2, turns=2000)
    await settle()
    assert len(queue) == 6 - 2  # busy workers hold their item; nobody else takes one

    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker

    assert sorted(queue.drain_items()) == list(range(6))


async def test_work_off_can_be_restarted_on_the_same_queue_after_cancellation() -> None:
    queue: DueQueue[int] = DueQueue()
    for n in range(4):
        queue.push(0.0, n)
    gate = asyncio.Event()
    handled: list[int] = []

    async def handle(item: int) -> None:
        try:
            await gate.wait()
        except asyncio.CancelledError:
            queue.push(0.0, item)
            raise
        handled.append(item)

    first = asyncio.create_task(work_off(queue, handle, 1))
    await settle()
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    gate.set()
    second = asyncio.create_task(work_off(queue, handle, 2))
    try:
        await until(lambda: len(handled) == 4, turns=2000)
    finally:
        second.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await second

    assert sorted(handled) == [0, 1, 2, 3]


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_an_item_pushed_while_work_off_sleeps_is_handled(concurrency: int) -> None:
    queue: DueQueue[str] = DueQueue()
    queue.push(asyncio.get_running_loop().time() + 3600, "later")
    handled: list[str] = []

    async def handle(item: str) -> None:
        handled.append(item)

    worker = asyncio.create_task(work_off(queue, handle, concurrency))
    try:
        await settle()
        assert handled == []
        queue.push(0.0, "now")
        await until(lambda: handled == ["now"], turns=2000)
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    assert len(queue) == 1


async def test_idle_consumers_are_woken_one_per_due_item() -> None:
    queue: DueQueue[int] = DueQueue()
    poppers = [asyncio.create_task(queue.pop()) for _ in range(3)]
    await settle()
    queue.push(0.0, 1)
    queue.push(0.0, 2)
    await until(lambda: sum(p.done() for p in poppers) == 2, turns=2000)
    await settle()
    assert sorted(p.result() for p in poppers if p.done()) == [1, 2]
    waiting = [p for p in poppers if not p.done()]
    assert len(waiting) == 1
    queue.push(0.0, 3)
    assert await asyncio.wait_for(waiting[0], 5) == 3


async def test_a_consumer_cancelled_after_being_woken_passes_the_item_on() -> None:
    queue: DueQueue[str] = DueQueue()
    first = asyncio.create_task(queue.pop())
    second = asyncio.create_task(queue.pop())
    await settle()
    queue.push(0.0, "item")  # wakes `first`
    first.cancel()  # ... which is cancelled before it can take the item
    with contextlib.suppress(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 5) == "item"


@pytest.mark.parametrize("seed", range(8))
async def test_pushes_and_pops_in_any_mix_come_out_earliest_first_ties_in_order(seed: int) -> None:
    # Against a reference: sorted by (due, arrival). Due times repeat (ties),
    # cluster in one bucket, spread over many, and arrive in and out of order.
    rng = random.Random(seed)
    queue: DueQueue[int] = DueQueue()
    base = asyncio.get_running_loop().time() - 1000.0  # all due: pop never waits
    waiting: list[tuple[float, int]] = []
    popped: list[int] = []
    expected: list[int] = []
    choices = [round(rng.uniform(0, 5), 2) for _ in range(40)]
    for n in range(3000):
        if waiting and rng.random() < 0.45:
            popped.append(await queue.pop())
            waiting.sort()
            expected.append(waiting.pop(0)[1])
        else:
            due = base + (rng.choice(choices) if rng.random() < 0.7 else rng.uniform(0, 500))
            queue.push(due, n)
            waiting.append((due, n))
        assert len(queue) == len(waiting)
    assert sorted(queue.items()) == sorted(n for _, n in waiting)
    while waiting:
        popped.append(await queue.pop())
        waiting.sort()
        expected.append(waiting.pop(0)[1])
    assert popped == expected
    assert queue.peek_due() is None
