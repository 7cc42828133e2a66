"""The real daemon on a PostgreSQL state database: every execution reported once, resumed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import API_KEY, write_config
from tests.pg import PgServer, pg_server, pg_url
from watcher.sim import Simulator

__all__ = ["pg_server", "pg_url"]

pytest.importorskip("psycopg")

SCRIPTS = [
    {"workspace_id": "ws-main", "execution_id": f"ex-{n}", "steps": ["Running", "Completed"]}
    for n in range(5)
] + [{"workspace_id": "ws-main", "execution_id": "flaky", "steps": ["!500", "Failed"]}]


def on_postgres(config: Path, url: str, *, lease: float = 2) -> Path:
    text = config.read_text()
    start = text.index("[state]\n")
    end = text.index("\n", start + len("[state]\n"))
    config.write_text(text[:start] + f'[state]\nurl = "{url}"\nlease = {lease:g}' + text[end:])
    return config


async def test_every_execution_reported_once_and_never_again(
    tmp_path: Path, run_daemon: Any, pg_server: PgServer, pg_url: str
) -> None:
    ids = [s["execution_id"] for s in SCRIPTS]
    async with Simulator(api_key=API_KEY, scripts=SCRIPTS) as sim:
        config = on_postgres(write_config(tmp_path / "config.toml", sim, ids), pg_url)
        run = await run_daemon(config)
        assert run.returncode == 0, run.stderr
        assert {e["execution_id"]: e["state"] for e in run.events} == {
            **{f"ex-{n}": "Completed" for n in range(5)},
            "flaky": "Failed",
        }
        run.assert_no_secrets()
        again = await run_daemon(config)  # reported in the database: nothing twice
        assert again.returncode == 0, again.stderr
        assert again.events == []
    db = pg_url.rsplit("/", 1)[1]
    assert pg_server.psql("SELECT count(*) FROM reported", db) == "6"
    assert pg_server.psql("SELECT count(*) FROM watches", db) == "0"


async def test_a_newer_schema_is_refused_with_exit_78(
    tmp_path: Path, run_daemon: Any, pg_server: PgServer, pg_url: str
) -> None:
    db = pg_url.rsplit("/", 1)[1]
    pg_server.psql("CREATE TABLE schema_version (version integer NOT NULL)", db)
    pg_server.psql("INSERT INTO schema_version VALUES (99)", db)
    async with Simulator(api_key=API_KEY, scripts=SCRIPTS) as sim:
        config = on_postgres(write_config(tmp_path / "config.toml", sim, ["ex-1"]), pg_url)
        run = await run_daemon(config)
    assert run.returncode == 78, run.stderr
    assert "newer than this blink-watcher" in run.stderr
