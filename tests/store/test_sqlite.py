"""The SQLite state file: schema, permissions, batching, the outbox, and every way it can fail."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.store.rows import KEY, OTHER, event, watch
from watcher.errors import StoreError
from watcher.models import EventRecord, WatchRow
from watcher.store import SCHEMA_VERSION, Store, open_readonly


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def existing_file(path: Path, content: bytes, file_mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(file_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# --- the file -----------------------------------------------------------------------------


async def test_a_fresh_file_gets_the_schema_version(db_path: Path) -> None:
    async with Store(db_path):
        pass

    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


@pytest.mark.usefixtures("permissive_umask")
async def test_the_state_file_is_private_whatever_the_umask(db_path: Path) -> None:
    async with Store(db_path) as store:
        store.save_watch(watch())
        await store.flush()
        assert mode(db_path) == 0o600
        # The write-ahead log holds the same results until a checkpoint.
        wal = db_path.with_name(db_path.name + "-wal")
        assert wal.exists()
        assert mode(wal) == 0o600


@pytest.mark.usefixtures("permissive_umask")
async def test_an_existing_world_readable_file_is_made_private(db_path: Path) -> None:
    existing_file(db_path, b"")  # an empty file is an empty SQLite database

    async with Store(db_path):
        pass

    assert mode(db_path) == 0o600


async def test_data_survives_a_reopen(db_path: Path) -> None:
    async with Store(db_path) as store:
        store.save_watch(watch(KEY, "Running", 3))
        store.save_watch(watch(OTHER, "Queued", 1))
        await store.record_event(event(OTHER), ["log"])

    async with Store(db_path) as store:
        assert await store.load_watches() == [WatchRow(KEY, "Running", 3, 100.0, 103.0)]
        assert await store.reported_keys([KEY, OTHER]) == {OTHER}
        assert await store.last_response(KEY) == {"state": "Running", "display_name": "d"}
        [row] = await store.open_deliveries()
        assert row.event_id == "evt_1"


async def test_closing_twice_is_harmless_and_a_closed_store_refuses_work(db_path: Path) -> None:
    store = Store(db_path)
    await store.open()
    await store.close()
    await store.close()

    with pytest.raises(StoreError):
        store.save_watch(watch())
    with pytest.raises(StoreError):
        await store.load_watches()
    with pytest.raises(StoreError, match="closed"):
        await store.open()


async def test_close_writes_what_is_still_queued(db_path: Path) -> None:
    store = Store(db_path)
    await store.open()
    store.save_watch(watch())
    await store.close()

    async with Store(db_path) as again:
        assert [r.key for r in await again.load_watches()] == [KEY]


# --- failures -----------------------------------------------------------------------------


async def test_a_path_below_a_regular_file_is_a_clear_store_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a directory")
    path = tmp_path / "afile" / "state.db"

    with pytest.raises(StoreError, match=r"cannot create state file .*afile.*state\.db"):
        async with Store(path):
            pass


async def test_a_directory_as_the_state_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=str(tmp_path)):
        async with Store(tmp_path):
            pass


async def test_a_corrupt_file_is_a_store_error(db_path: Path) -> None:
    existing_file(db_path, b"this is not SQLite at all\x00\xff" * 200)

    with pytest.raises(StoreError, match="unusable") as info:
        async with Store(db_path):
            pass
    assert str(db_path) in str(info.value)


async def test_a_newer_schema_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir()
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(StoreError, match="newer") as info:
        async with Store(db_path):
            pass
    assert f"schema version {SCHEMA_VERSION + 1}" in str(info.value)


def test_open_readonly_of_a_missing_file_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no state file"):
        open_readonly(tmp_path / "missing.db")


async def test_open_readonly_sees_what_the_daemon_wrote(store: Store, db_path: Path) -> None:
    store.save_watch(watch())
    await store.flush()

    conn = open_readonly(db_path)
    try:
        assert conn.execute("SELECT execution_id FROM watches").fetchall() == [("ex-1",)]
        with pytest.raises(sqlite3.OperationalError):
            conn.execute("DELETE FROM watches")
    finally:
        conn.close()


def test_open_readonly_refuses_another_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 0")
        conn.execute("CREATE TABLE t (x)")

    with pytest.raises(StoreError, match="schema version 0"):
        open_readonly(path)


# --- watches ------------------------------------------------------------------------------


async def test_saves_queued_together_are_one_transaction(store: Store) -> None:
    before = store.writes
    for n in range(100):
        store.save_watch(watch(("ws", f"ex-{n}")))
    await store.flush()

    assert store.writes - before == 1
    assert len(await store.load_watches()) == 100


async def test_the_latest_save_of_a_watch_wins(store: Store) -> None:
    store.save_watch(watch(KEY, "Queued", 1))
    store.save_watch(watch(KEY, "Running", 2))
    await store.flush()
    store.save_watch(watch(KEY, "Waiting", 5))
    await store.flush()

    [row] = await store.load_watches()
    assert (row.state, row.polls, row.changed_at) == ("Waiting", 5, 105.0)
    assert row.first_seen_at == 100.0


async def test_last_response_sees_a_save_not_yet_flushed(store: Store) -> None:
    store.save_watch(watch(KEY, "Paused"))

    assert await store.last_response(KEY) == {"state": "Paused", "display_name": "d"}
    assert await store.last_response(OTHER) is None


async def test_forget_watch_removes_it(store: Store) -> None:
    store.save_watch(watch(KEY))
    store.save_watch(watch(OTHER))
    await store.flush()
    store.forget_watch(KEY)
    await store.flush()

    assert [r.key for r in await store.load_watches()] == [OTHER]


async def test_nothing_is_written_when_nothing_was_queued(store: Store) -> None:
    before = store.writes
    await store.flush()
    await store.flush()

    assert store.writes == before


# --- events and the outbox ----------------------------------------------------------------


async def test_record_event_stores_the_event_its_deliveries_and_ends_the_watch_at_once(
    store: Store,
) -> None:
    store.save_watch(watch(KEY))
    store.save_watch(watch(OTHER))
    await store.flush()
    before = store.writes

    await store.record_event(event(KEY, body=b'{"event":"x"}'), ["log:stdout", "hook"], now=300.0)

    assert store.writes - before == 1  # one transaction
    assert await store.reported_keys([KEY, OTHER]) == {KEY}
    assert await store.reported_keys([OTHER]) == set()
    assert [r.key for r in await store.load_watches()] == [OTHER]
    rows = await store.open_deliveries()
    assert [(r.sink, r.status, r.attempts, r.next_attempt_at) for r in rows] == [
        ("hook", "pending", 0, 300.0),
        ("log:stdout", "pending", 0, 300.0),
    ]
    assert {r.body for r in rows} == {b'{"event":"x"}'}
    assert {(r.key, r.event) for r in rows} == {(KEY, "execution.finished")}


async def test_recording_an_event_again_changes_nothing(store: Store) -> None:
    await store.record_event(event(), ["hook"])
    await store.update_delivery("evt_1", "hook", "delivered", 1, 400.0, None, wait=True)

    await store.record_event(event(body=b"other bytes"), ["hook"])

    assert await store.open_deliveries() == []
    [row] = await store.open_deliveries("delivered")
    assert row.body == b'{"a":1}'


async def test_an_event_without_sinks_still_counts_as_produced(store: Store) -> None:
    await store.record_event(event(), [])

    assert await store.reported_keys([KEY, OTHER]) == {KEY}
    assert await store.open_deliveries() == []


async def test_update_delivery_moves_a_delivery_to_delivered_or_dead(store: Store) -> None:
    await store.record_event(event(), ["a", "b", "c"])

    await store.update_delivery("evt_1", "a", "delivered", 1, 10.0, None)
    await store.update_delivery("evt_1", "b", "dead", 3, 20.0, "HTTP 410 from x", wait=True)
    await store.update_delivery("evt_1", "c", "pending", 2, 30.0, "HTTP 503 from x", wait=True)

    [delivered] = await store.open_deliveries("delivered")
    [dead] = await store.open_deliveries("dead")
    [pending] = await store.open_deliveries("pending")
    assert (delivered.sink, delivered.attempts, delivered.last_error) == ("a", 1, None)
    assert (dead.sink, dead.attempts, dead.last_error) == ("b", 3, "HTTP 410 from x")
    assert (pending.sink, pending.attempts, pending.next_attempt_at) == ("c", 2, 30.0)
    assert pending.last_error == "HTTP 503 from x"


async def test_retry_dead_queues_every_dead_letter_again(store: Store) -> None:
    await store.record_event(event(KEY, "evt_1"), ["a", "b"])
    await store.record_event(event(OTHER, "evt_2"), ["a"])
    await store.update_delivery("evt_1", "a", "dead", 12, 10.0, "gave up")
    await store.update_delivery("evt_2", "a", "dead", 1, 10.0, "HTTP 404")
    await store.update_delivery("evt_1", "b", "delivered", 1, 10.0, None, wait=True)

    assert await store.retry_dead() == 2

    assert await store.open_deliveries("dead") == []
    pending = await store.open_deliveries()
    assert sorted((r.event_id, r.sink, r.attempts) for r in pending) == [
        ("evt_1", "a", 0),
        ("evt_2", "a", 0),
    ]
    assert [r.sink for r in await store.open_deliveries("delivered")] == ["b"]


async def test_open_deliveries_come_oldest_event_first(store: Store) -> None:
    late = EventRecord("evt_late", OTHER, "execution.finished", "Failed", b"late", 900.0)
    early = EventRecord("evt_early", KEY, "execution.not_found", None, b"early", 100.0)
    await store.record_event(late, ["s"])
    await store.record_event(early, ["s"])

    rows = await store.open_deliveries()

    assert [(r.event_id, r.body, r.key, r.event) for r in rows] == [
        ("evt_early", b"early", KEY, "execution.not_found"),
        ("evt_late", b"late", OTHER, "execution.finished"),
    ]


async def test_a_read_sees_every_write_queued_before_it(store: Store) -> None:
    # The outbox marks a delivery done without waiting for the disk; a reload
    # that reads the outbox right after must not see it pending (and send it again).
    await store.record_event(event(), ["hook"])
    store.save_watch(watch(OTHER))
    await store.update_delivery("evt_1", "hook", "delivered", 1, 10.0, None)

    assert await store.open_deliveries() == []
    assert [r.key for r in await store.load_watches()] == [OTHER]


# --- a disk that refuses writes -------------------------------------------------------------


class FlakyDisk:
    """Stands in for the SQLite write of a batch: fails ``failures`` times, then writes."""

    def __init__(self, store: Store, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self._real = store._write_batch
        store._write_batch = self  # type: ignore[method-assign]

    def __call__(self, *args: object) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise sqlite3.OperationalError("disk I/O error")
        self._real(*args)  # type: ignore[arg-type]


async def test_failed_background_writes_are_kept_and_retried(
    store: Store, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("watcher.store.queue._RETRY_MIN_S", 0.001)
    disk = FlakyDisk(store, failures=2)
    with capture_logs() as logs:
        store.save_watch(watch(state="Running"))
        await store.flush()
    assert disk.calls == 3
    assert store.healthy
    assert [r.state for r in await store.load_watches()] == ["Running"]
    names = [entry["event"] for entry in logs]
    assert names.count("store.write_failed") == 1  # once per outage, not per retry
    assert "store.write_recovered" in names


async def test_a_waited_write_that_fails_raises_and_marks_the_store_unhealthy(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("watcher.store.queue._RETRY_MIN_S", 0.001)
    FlakyDisk(store, failures=1)
    with pytest.raises(StoreError):
        await store.record_event(event(), ["log"])
    assert not store.healthy
    await store.record_event(event(), ["log"])
    assert store.healthy
    assert await store.reported_keys([KEY, OTHER]) == {KEY}


async def test_watch_batches_yield_every_watch_in_bounded_batches(store: Store) -> None:
    for i in range(7):
        store.save_watch(watch(key=("ws", f"ex-{i}"), polls=i + 1))
    batches = [rows async for rows in store.watch_batches(size=3)]
    assert [len(b) for b in batches] == [3, 3, 1]
    rows = sorted(row for batch in batches for row in batch)
    assert rows[0] == ("ws", "ex-0", "Running", 1, 100.0)
    assert len(rows) == 7
