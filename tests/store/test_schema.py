"""Schema versions: a file from the first release upgrades in place, in one transaction."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from watcher.errors import StoreError
from watcher.store import SCHEMA_VERSION, Store, open_readonly, schema

WS = "ws"


def v1_file(path: Path) -> None:
    """A state file as the first release's Store left it, written with that release's SQL.

    Two watches in progress and three events: one with a pending delivery, one
    dead-lettered, one delivered to both sinks.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(f"BEGIN IMMEDIATE; {schema.V1}; PRAGMA user_version = 1; COMMIT;")
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO watches VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (workspace_id, execution_id) DO UPDATE SET "
            "state = excluded.state, polls = excluded.polls, "
            "changed_at = excluded.changed_at, last_response = excluded.last_response",
            [
                (WS, "running", "Running", 3, 100.0, 130.0, '{"state": "Running"}'),
                (WS, "queued", "Queued", 1, 110.0, 110.0, None),
            ],
        )
        for n, (execution_id, state) in enumerate(
            [("pending", "Failed"), ("dead", "Completed"), ("delivered", "Completed")]
        ):
            event_id = f"evt_{execution_id}"
            body = b"body-" + event_id.encode()
            db.execute(
                "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
                (event_id, WS, execution_id, "execution.finished", state, body, 200.0 + n),
            )
            db.executemany(
                "INSERT OR IGNORE INTO deliveries VALUES (?, ?, 'pending', 0, ?, NULL, ?)",
                [(event_id, sink, 300.0, 300.0) for sink in ("log", "hook")],
            )
            db.execute("DELETE FROM watches WHERE workspace_id = ? AND execution_id = ?",
                       (WS, execution_id))  # fmt: skip
        outcomes = [
            ("delivered", 1, 301.0, None, 301.0, "evt_pending", "log"),
            ("pending", 2, 500.0, "HTTP 503 from hooks.example.com", 302.0, "evt_pending", "hook"),
            ("delivered", 1, 301.0, None, 301.0, "evt_dead", "log"),
            ("dead", 12, 900.0, "HTTP 410 from hooks.example.com", 303.0, "evt_dead", "hook"),
            ("delivered", 1, 301.0, None, 301.0, "evt_delivered", "log"),
            ("delivered", 3, 340.0, None, 304.0, "evt_delivered", "hook"),
        ]
        db.executemany(
            "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?, "
            "last_error = ?, updated_at = ? WHERE event_id = ? AND sink = ?",
            outcomes,
        )
        db.execute("COMMIT")
    finally:
        db.close()


def dump(path: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def indexes(path: Path) -> set[str]:
    return {r[0] for r in dump(path, "SELECT name FROM sqlite_master WHERE type = 'index'")}


@pytest.fixture
def v1_path(db_path: Path) -> Path:
    v1_file(db_path)
    return db_path


async def test_a_v1_file_is_upgraded_and_keeps_every_watch_event_and_delivery(
    v1_path: Path,
) -> None:
    events_before = dump(v1_path, "SELECT * FROM events ORDER BY event_id")
    deliveries_before = dump(v1_path, "SELECT * FROM deliveries ORDER BY event_id, sink")
    watches_before = dump(v1_path, "SELECT * FROM watches ORDER BY execution_id")

    async with Store(v1_path) as store:
        assert sorted((r.key, r.state, r.polls) for r in await store.load_watches()) == [
            ((WS, "queued"), "Queued", 1),
            ((WS, "running"), "Running", 3),
        ]
        assert await store.last_response((WS, "running")) == {"state": "Running"}
        [pending] = await store.open_deliveries("pending")
        assert (pending.event_id, pending.sink, pending.attempts) == ("evt_pending", "hook", 2)
        assert pending.body == b"body-evt_pending"
        assert pending.last_error == "HTTP 503 from hooks.example.com"
        [dead] = await store.open_deliveries("dead")
        assert (dead.event_id, dead.sink, dead.attempts) == ("evt_dead", "hook", 12)
        delivered = await store.open_deliveries("delivered")
        assert len(delivered) == 4
        keys = [(WS, x) for x in ("pending", "dead", "delivered", "running", "queued", "never")]
        assert await store.reported_keys(keys) == {
            (WS, "pending"),
            (WS, "dead"),
            (WS, "delivered"),
        }

    assert dump(v1_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert dump(v1_path, "SELECT * FROM events ORDER BY event_id") == events_before
    assert dump(v1_path, "SELECT * FROM deliveries ORDER BY event_id, sink") == deliveries_before
    # Every watch a file held before sources existed was one the config listed.
    assert dump(v1_path, "SELECT * FROM watches ORDER BY execution_id") == [
        (*row, "config") for row in watches_before
    ]
    assert dump(v1_path, "SELECT * FROM reported ORDER BY execution_id") == [
        (WS, "dead", "evt_dead", "execution.finished", "Completed", 201.0),
        (WS, "delivered", "evt_delivered", "execution.finished", "Completed", 202.0),
        (WS, "pending", "evt_pending", "execution.finished", "Failed", 200.0),
    ]
    assert "events_created" in indexes(v1_path)
    assert "events_execution" not in indexes(v1_path)


async def test_an_upgraded_file_has_the_schema_of_a_fresh_one(
    v1_path: Path, tmp_path: Path
) -> None:
    fresh = tmp_path / "fresh.db"
    async with Store(v1_path), Store(fresh):
        pass

    ddl = "SELECT type, name, sql FROM sqlite_master ORDER BY type, name"
    assert dump(v1_path, ddl) == dump(fresh, ddl)


async def test_a_failing_upgrade_leaves_the_v1_file_as_it_was(
    v1_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = dump(v1_path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    # The last statement of the upgrade fails, after the others have run.
    monkeypatch.setattr(schema, "MIGRATIONS", (schema.V1, schema.V2 + "DROP TABLE missing;\n"))

    with pytest.raises(StoreError, match="unusable: no such table: missing"):
        async with Store(v1_path):
            pass

    assert dump(v1_path, "PRAGMA user_version") == [(1,)]
    assert dump(v1_path, "SELECT type, name, sql FROM sqlite_master ORDER BY name") == before


async def test_the_upgrade_is_logged_once(v1_path: Path) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        async with Store(v1_path):
            pass
        async with Store(v1_path):
            pass

    migrated = [e for e in logs if e["event"] == "store.migrated"]
    assert [(e["from_version"], e["to_version"]) for e in migrated] == [(1, SCHEMA_VERSION)]


def test_open_readonly_of_a_v1_file_says_the_daemon_upgrades_it(v1_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        open_readonly(v1_path)

    message = str(info.value)
    assert "schema version 1" in message
    assert "older" in message
    assert "upgrades it on its next start" in message
    assert dump(v1_path, "PRAGMA user_version") == [(1,)]  # reading never upgrades


def test_open_readonly_refuses_a_newer_file(db_path: Path) -> None:
    db_path.parent.mkdir()
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(StoreError, match=r"newer.*upgrade blink-watcher"):
        open_readonly(db_path)
