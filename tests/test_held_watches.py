"""A replica's claims kept on its scheduler's watches: the mapping the store fences commits by."""

from __future__ import annotations

from tests.test_scheduler import FAST, FakeClient, FakeStore, Recorder
from watcher.scheduler import Scheduler
from watcher.watches import ClaimedWatch

KEY = ("ws", "ex-1")
OTHER = ("ws", "ex-2")


def make_scheduler() -> Scheduler:
    return Scheduler(FAST, FakeClient(None), FakeStore(), Recorder(), concurrency=1)


def test_a_claim_stored_before_its_watch_moves_onto_it() -> None:
    scheduler = make_scheduler()
    held = scheduler.hold_claims()
    held[KEY] = 3  # stored (claimed, or inserted) a moment before the scheduler takes it
    assert KEY in held
    assert len(held) == 1
    scheduler.add_many([KEY, OTHER], {})  # OTHER is not held: another replica polls it
    assert KEY in scheduler
    assert OTHER not in scheduler
    watch = scheduler.get(KEY)
    assert isinstance(watch, ClaimedWatch)
    assert watch.fence == 3
    assert held[KEY] == 3
    assert len(held) == 1
    assert list(held) == [KEY]


def test_a_claim_ends_with_its_watch_and_can_be_given_back() -> None:
    scheduler = make_scheduler()
    held = scheduler.hold_claims()
    held[KEY] = 1
    held[OTHER] = 2
    scheduler.add_many([KEY, OTHER], {})
    scheduler.drop(KEY)  # taken over elsewhere
    assert KEY not in held
    assert len(held) == 1
    assert held.pop(OTHER) == 2  # given back: still scheduled until dropped
    assert OTHER not in held
    assert len(held) == 0
    scheduler.drop(OTHER)
    assert len(held) == 0


def test_clear_forgets_every_claim() -> None:
    scheduler = make_scheduler()
    held = scheduler.hold_claims()
    held[KEY] = 1
    scheduler.add_many([KEY], {})
    held[OTHER] = 5
    held.clear()
    assert len(held) == 0
    assert KEY not in held
    assert OTHER not in held
    assert held.get(KEY) is None
