"""The SQLite schema, its versions, and the migrations that bring an older file up to date.

``PRAGMA user_version`` holds the version. Migration step ``n`` takes a file
from version ``n`` to ``n + 1``; step 0 creates a fresh file. Steps are never
edited once released: a file written by any earlier release replays exactly
the steps it is missing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

import structlog

from watcher.errors import StoreError

log = structlog.get_logger("watcher.store")

# Step 0: the first release's schema, kept as it was so old files upgrade the same way.
V1: Final = """
CREATE TABLE watches (
    workspace_id  TEXT NOT NULL,
    execution_id  TEXT NOT NULL,
    state         TEXT,            -- last reported state
    polls         INTEGER NOT NULL,
    first_seen_at REAL NOT NULL,   -- unix seconds; max_watch counts from here
    changed_at    REAL NOT NULL,   -- unix seconds of the last state change
    last_response TEXT,            -- JSON of the response at that change
    PRIMARY KEY (workspace_id, execution_id)
) WITHOUT ROWID;
CREATE TABLE events (
    event_id      TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL,
    execution_id  TEXT NOT NULL,
    event         TEXT NOT NULL,
    state         TEXT,
    body          BLOB NOT NULL,   -- the exact bytes every sink delivers
    created_at    REAL NOT NULL
);
CREATE UNIQUE INDEX events_execution ON events (workspace_id, execution_id);
CREATE TABLE deliveries (
    event_id        TEXT NOT NULL REFERENCES events (event_id),
    sink            TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT,
    updated_at      REAL NOT NULL,
    PRIMARY KEY (event_id, sink)
) WITHOUT ROWID;
CREATE INDEX deliveries_open ON deliveries (status) WHERE status != 'delivered';
"""

# Step 1: bounded history. ``reported`` is the one row per execution that
# outlives retention, so "was this execution reported?" is a primary-key
# lookup and the event bodies can be pruned. It takes over the one-event-per-
# execution rule from events_execution, which pruning would otherwise defeat;
# events_created lets pruning walk the oldest events without a scan.
V2: Final = """
CREATE TABLE reported (
    workspace_id  TEXT NOT NULL,
    execution_id  TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    event         TEXT NOT NULL,
    state         TEXT,
    reported_at   REAL NOT NULL,   -- unix seconds the event was produced
    PRIMARY KEY (workspace_id, execution_id)
) WITHOUT ROWID;
-- In key order (through the old unique index): a sorted bulk insert is the fast one.
INSERT INTO reported
    SELECT workspace_id, execution_id, event_id, event, state, created_at
    FROM events ORDER BY workspace_id, execution_id;
DROP INDEX events_execution;
CREATE INDEX events_created ON events (created_at);
"""

# Step 3: where each watch came from, and the discovery cursors.
# source is 'config' (every watch before this step), 'api', or 'discover:RULE'.
# Watches the config does not list are kept when their source is not 'config'.
# A rule's cursor is written in the same transaction as the watches it found.
V3: Final = """
ALTER TABLE watches ADD COLUMN source TEXT NOT NULL DEFAULT 'config';
CREATE TABLE cursors (
    rule        TEXT PRIMARY KEY,
    cursor      TEXT NOT NULL,   -- the rule's own encoding (e.g. a created_at bound)
    updated_at  REAL NOT NULL
) WITHOUT ROWID;
"""

MIGRATIONS: Final[tuple[str, ...]] = (V1, V2, V3)
SCHEMA_VERSION: Final = len(MIGRATIONS)


def version_of(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def newer_error(path: Path, version: int) -> StoreError:
    return StoreError(
        f"state file {path} has schema version {version}, newer than this "
        f"blink-watcher understands ({SCHEMA_VERSION}); upgrade blink-watcher"
    )


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the file at ``path`` to ``SCHEMA_VERSION``; refuse a newer one.

    Every missing step runs in one transaction: a crash or an error halfway
    leaves the file exactly at its old version, readable by the old release.
    """
    conn.execute("BEGIN IMMEDIATE")  # the version read below cannot change under us
    try:
        version = version_of(conn)
        if version > SCHEMA_VERSION:
            raise newer_error(path, version)
        for step in range(version, SCHEMA_VERSION):
            # executescript() would commit first: run the statements one by one instead.
            for statement in _statements(MIGRATIONS[step]):
                conn.execute(statement)
        if version != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if 0 < version < SCHEMA_VERSION:
        log.info("store.migrated", path=str(path), from_version=version, to_version=SCHEMA_VERSION)


def _statements(script: str) -> list[str]:
    """A migration's statements, one by one (comments kept: ``.schema`` shows them)."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())  # incomplete: let SQLite say what is wrong
    return statements
