"""The PostgreSQL schema, its versions, and migrations applied by one replica at a time.

``schema_version`` holds one row. Step ``n`` takes a database from version
``n`` to ``n + 1``; step 0 creates a fresh one. All missing steps run in one
transaction under ``pg_advisory_xact_lock`` (released at commit, so it is safe
behind a transaction-mode connection pooler): replicas starting together
migrate once, the others wait and then see the new version. A database newer
than this release is refused, never touched.

Times are unix seconds (double precision) as in the SQLite store, except
lease expiries (``replicas.lease_until``), which are the database's own
``now()`` plus the lease, so replicas' clocks never decide who holds a watch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import structlog

from watcher.errors import NewerSchemaError
from watcher.models import ExecutionKey

log = structlog.get_logger("watcher.store")

# Any constant both releases agree on: the key of the migration lock.
MIGRATION_LOCK: Final = 0x626C696E6B  # "blink"

V1: Final = """
CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);
CREATE TABLE watches (
    workspace_id  text NOT NULL,
    execution_id  text NOT NULL,
    state         text,
    polls         integer NOT NULL,
    first_seen_at double precision NOT NULL,
    changed_at    double precision NOT NULL,
    last_response text,
    source        text NOT NULL DEFAULT 'config',
    owner         text,              -- replica id holding the lease, or NULL
    lease_until   timestamptz,       -- database time the lease ends
    fence         bigint NOT NULL DEFAULT 0,  -- bumped at every claim
    PRIMARY KEY (workspace_id, execution_id)
);
CREATE INDEX watches_owner ON watches (owner);
CREATE TABLE events (
    event_id      text PRIMARY KEY,
    workspace_id  text NOT NULL,
    execution_id  text NOT NULL,
    event         text NOT NULL,
    state         text,
    body          bytea NOT NULL,
    created_at    double precision NOT NULL
);
CREATE INDEX events_created ON events (created_at);
CREATE TABLE reported (
    workspace_id  text NOT NULL,
    execution_id  text NOT NULL,
    event_id      text NOT NULL,
    event         text NOT NULL,
    state         text,
    reported_at   double precision NOT NULL,
    PRIMARY KEY (workspace_id, execution_id)   -- one event per execution, ever
);
CREATE TABLE deliveries (
    event_id        text NOT NULL REFERENCES events (event_id),
    sink            text NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at double precision NOT NULL,
    last_error      text,
    updated_at      double precision NOT NULL,
    owner           text,
    lease_until     timestamptz,
    fence           bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, sink)
);
CREATE INDEX deliveries_open ON deliveries (status) WHERE status != 'delivered';
CREATE TABLE cursors (
    rule        text PRIMARY KEY,
    cursor      text NOT NULL,
    updated_at  double precision NOT NULL,
    owner       text,
    lease_until timestamptz,
    fence       bigint NOT NULL DEFAULT 0
);
CREATE TABLE replicas (
    id          text PRIMARY KEY,     -- host + pid + random
    host        text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    renewed_at  timestamptz NOT NULL DEFAULT now()
);
"""

# Leases move from each row to its replica: renewing is one row per replica,
# whatever it holds; a row keeps its owner and fence. Claims made before the
# upgrade lose their leases with the column, so every row starts free.
# ``settings`` holds what replicas agree on, such as the digest of the config's
# execution list.
V2: Final = """
ALTER TABLE replicas ADD COLUMN lease_until timestamptz NOT NULL DEFAULT now();
ALTER TABLE watches DROP COLUMN lease_until;
ALTER TABLE deliveries DROP COLUMN lease_until;
ALTER TABLE cursors DROP COLUMN lease_until;
CREATE INDEX deliveries_owner ON deliveries (owner) WHERE status = 'pending';
CREATE INDEX replicas_lease ON replicas (lease_until);
CREATE TABLE settings (name text PRIMARY KEY, value text NOT NULL);
UPDATE watches SET owner = NULL WHERE owner IS NOT NULL;
UPDATE deliveries SET owner = NULL WHERE owner IS NOT NULL;
UPDATE cursors SET owner = NULL WHERE owner IS NOT NULL;
"""

MIGRATIONS: Final[tuple[str, ...]] = (V1, V2)
SCHEMA_VERSION: Final = len(MIGRATIONS)


def key_arrays(keys: Iterable[ExecutionKey]) -> tuple[list[str], list[str]]:
    """Keys as the two text arrays an ``unnest(%s::text[], %s::text[]) AS k (ws, ex)`` takes.

    One statement for any number of keys, instead of one per key.
    """
    pairs = list(keys)
    return [ws for ws, _ in pairs], [ex for _, ex in pairs]


def newer_error(where: str, version: int) -> NewerSchemaError:
    return NewerSchemaError(
        f"state database {where} has schema version {version}, newer than this "
        f"blink-watcher understands ({SCHEMA_VERSION}); upgrade blink-watcher"
    )


async def migrate(conn: Any, where: str) -> int:
    """Bring the database to ``SCHEMA_VERSION`` in one transaction; the version it had.

    ``conn`` is a psycopg ``AsyncConnection``; ``where`` names the database
    (without its password) in errors.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        cur = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL")
        row = await cur.fetchone()
        version = 0
        if row is not None and row[0]:
            cur = await conn.execute("SELECT max(version) FROM schema_version")
            found = await cur.fetchone()
            version = int(found[0]) if found is not None and found[0] is not None else 0
        if version > SCHEMA_VERSION:
            raise newer_error(where, version)
        for step in range(version, SCHEMA_VERSION):
            await conn.execute(MIGRATIONS[step])
        if version != SCHEMA_VERSION:
            await conn.execute("DELETE FROM schema_version")
            await conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))
    if 0 < version < SCHEMA_VERSION:
        log.info("store.migrated", database=where, from_version=version, to_version=SCHEMA_VERSION)
    return version
