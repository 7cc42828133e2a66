"""The PostgreSQL schema on a real server: created once, concurrent starts, a newer one refused."""

from __future__ import annotations

import asyncio

import pytest

from tests.pg import PgServer
from watcher.errors import StoreError
from watcher.store.pg_schema import SCHEMA_VERSION, migrate

psycopg = pytest.importorskip("psycopg")


async def test_a_fresh_database_gets_the_schema(pg_server: PgServer, pg_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        assert await migrate(conn, "test") == 0
        assert await migrate(conn, "test") == SCHEMA_VERSION
    dbname = pg_url.rsplit("/", 1)[1]
    assert pg_server.psql("SELECT version FROM schema_version", dbname) == str(SCHEMA_VERSION)
    tables = pg_server.psql(
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables"
        " WHERE schemaname = 'public'",
        dbname,
    )
    assert tables == "cursors,deliveries,events,replicas,reported,schema_version,settings,watches"


async def test_replicas_starting_together_migrate_once(pg_url: str) -> None:
    conns = [await psycopg.AsyncConnection.connect(pg_url, autocommit=True) for _ in range(4)]
    try:
        found = await asyncio.gather(*(migrate(c, "test") for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sorted(found) == [0, SCHEMA_VERSION, SCHEMA_VERSION, SCHEMA_VERSION]


async def test_a_newer_schema_is_refused_and_left_alone(pg_server: PgServer, pg_url: str) -> None:
    dbname = pg_url.rsplit("/", 1)[1]
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await migrate(conn, "test")
        pg_server.psql(f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}", dbname)
        with pytest.raises(StoreError, match="newer than this blink-watcher") as err:
            await migrate(conn, "db-name")
    assert "db-name" in str(err.value)
    assert "\n" not in str(err.value)
    assert pg_server.psql("SELECT version FROM schema_version", dbname) == str(SCHEMA_VERSION + 1)


async def test_a_version_1_database_is_upgraded_in_place_keeping_its_rows(
    pg_server: PgServer, pg_url: str
) -> None:
    from watcher.store.pg_schema import MIGRATIONS

    dbname = pg_url.rsplit("/", 1)[1]
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(MIGRATIONS[0])  # as the first release left it
        await conn.execute("INSERT INTO schema_version VALUES (1)")
        await conn.execute(
            "INSERT INTO watches (workspace_id, execution_id, state, polls, first_seen_at, "
            "changed_at, owner, lease_until, fence) "
            "VALUES ('ws', 'ex-1', 'Running', 3, 1.0, 2.0, 'old-replica', now(), 4)"
        )
        assert await migrate(conn, "test") == 1
    assert pg_server.psql("SELECT version FROM schema_version", dbname) == str(SCHEMA_VERSION)
    row = pg_server.psql("SELECT state, polls, owner, fence FROM watches", dbname)
    assert row == "Running|3||4"  # kept, and free: its old claim had no lease left
    columns = pg_server.psql(
        "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.columns "
        "WHERE column_name = 'lease_until'",
        dbname,
    )
    assert columns == "replicas"  # the lease moved from each row to its replica
