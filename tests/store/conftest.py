"""A fresh state file per test, and an open store on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.pg import pg_server, pg_url
from watcher.store import Store

# The real PostgreSQL server (tests/pg.py) for the PostgreSQL backend's tests.
__all__ = ["pg_server", "pg_url"]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "blink-watcher.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    async with Store(db_path) as s:
        yield s
