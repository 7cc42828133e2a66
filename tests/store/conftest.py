"""A fresh state file per test, and an open store on it; both backends for the contract tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.pg import pg_server, pg_url
from watcher.store import StateStore, Store
from watcher.store.postgres import PostgresStore

# The real PostgreSQL server (tests/pg.py) for the PostgreSQL backend's tests.
__all__ = ["pg_server", "pg_url"]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "blink-watcher.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    async with Store(db_path) as s:
        yield s


# Opens another store on the same state (a second process, or a second replica).
StoreFactory = Callable[[], StateStore]


@pytest.fixture(params=["sqlite", "postgres"])
def new_store(request: pytest.FixtureRequest, db_path: Path) -> StoreFactory:
    """Where the contract tests run: a state file, or a fresh database on the test server."""
    if request.param == "sqlite":
        return lambda: Store(db_path)
    pytest.importorskip("psycopg")
    url: str = request.getfixturevalue("pg_url")
    return lambda: PostgresStore(url)


@pytest.fixture
async def any_store(new_store: StoreFactory) -> AsyncIterator[StateStore]:
    async with new_store() as s:
        yield s
