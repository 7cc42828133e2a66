"""status and deliveries on a shared PostgreSQL database: replicas, owners, retries, errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.pg import free_port, pg_server, pg_url
from watcher.cli.parser import main
from watcher.store.pg_schema import migrate

__all__ = ["pg_server", "pg_url"]

psycopg = pytest.importorskip("psycopg")

PASSWORD = "pg-s3cret-never-shown"
NOW_S = 1_800_000_000.0

SEED = [
    "INSERT INTO replicas (id, host, started_at, renewed_at, lease_until) VALUES "
    "('host-a-101-aaaa', 'host-a', now() - interval '1 hour', now() - interval '5 seconds', "
    "now() + interval '25 seconds'), "
    "('host-b-202-bbbb', 'host-b', now() - interval '2 hours', now() - interval '90 seconds', "
    "now() - interval '60 seconds')",
    "INSERT INTO watches (workspace_id, execution_id, state, polls, first_seen_at, changed_at, "
    "source, owner) VALUES "
    f"('ws', 'ex-1', 'Running', 3, {NOW_S}, {NOW_S + 1}, 'config', 'host-a-101-aaaa'), "
    f"('ws', 'ex-2', 'Queued', 1, {NOW_S + 2}, {NOW_S + 2}, 'discover:nightly', "
    "'host-a-101-aaaa'), "
    f"('ws', 'ex-3', 'Running', 7, {NOW_S + 3}, {NOW_S + 4}, 'api', 'host-b-202-bbbb'), "
    f"('ws', 'ex-4', 'Paused', 2, {NOW_S + 5}, {NOW_S + 5}, 'config', NULL)",
    "INSERT INTO events (event_id, workspace_id, execution_id, event, state, body, created_at) "
    f"VALUES ('evt-1', 'ws', 'ex-done', 'execution.finished', 'Completed', '{{}}', {NOW_S}), "
    f"('evt-2', 'ws', 'ex-dead', 'execution.finished', 'Failed', '{{}}', {NOW_S + 1})",
    "INSERT INTO reported (workspace_id, execution_id, event_id, event, state, reported_at) "
    f"VALUES ('ws', 'ex-done', 'evt-1', 'execution.finished', 'Completed', {NOW_S}), "
    f"('ws', 'ex-dead', 'evt-2', 'execution.finished', 'Failed', {NOW_S + 1})",
    "INSERT INTO deliveries (event_id, sink, status, attempts, next_attempt_at, last_error, "
    f"updated_at) VALUES ('evt-1', 'log', 'delivered', 1, {NOW_S}, NULL, {NOW_S}), "
    f"('evt-1', 'hook', 'pending', 2, {NOW_S + 30}, 'HTTP 503', {NOW_S + 10}), "
    f"('evt-2', 'hook', 'dead', 5, {NOW_S}, 'HTTP 400', {NOW_S + 20})",
    "INSERT INTO cursors (rule, cursor, updated_at) VALUES "
    f"('nightly', '1800000000000', {NOW_S}), ('fresh', '', {NOW_S})",
]


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("BLINK_API_KEY", raising=False)  # reading the state needs no API key
    monkeypatch.chdir(tmp_path)


def write_config(tmp_path: Path, url: str) -> Path:
    (tmp_path / "pg-password").write_text(PASSWORD + "\n")
    path = tmp_path / "config.toml"
    path.write_text(
        '[blink]\nworkspace_id = "ws"\n'
        '[watch]\nexecutions = ["ex-1", "ex-4", "ex-9", "ex-done"]\n'
        f'[state]\nurl = "{url}"\npassword_file = "pg-password"\nlease = 30\n'
        '[[discover]]\nname = "nightly"\n[[discover]]\nname = "fresh"\n',
        encoding="utf-8",
    )
    return path


def seed(url: str, statements: list[str]) -> None:
    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn, "test")
            for sql in statements:
                await conn.execute(sql)

    asyncio.run(run())


@pytest.fixture
def config(tmp_path: Path, pg_url: str) -> Path:
    seed(pg_url, SEED)
    return write_config(tmp_path, pg_url)


def test_status_json_lists_replicas_owners_rules_and_deliveries(
    config: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "-c", str(config), "--json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)

    assert data["state_database"] == pg_url
    assert "daemon_pid" not in data
    assert [(r["id"], r["host"], r["lease"], r["watches_held"]) for r in data["replicas"]] == [
        ("host-b-202-bbbb", "host-b", "expired", 1),
        ("host-a-101-aaaa", "host-a", "live", 2),
    ]
    owners = {w["execution_id"]: w["owner"] for w in data["watching"]}
    assert owners == {
        "ex-1": "host-a-101-aaaa",
        "ex-2": "host-a-101-aaaa",
        "ex-3": "host-b-202-bbbb",
        "ex-4": None,
        "ex-9": None,  # configured, not answered yet
    }
    assert data["watching"][-1]["note"].startswith("no answer yet")
    assert [(r["rule"], r["cursor"], r["watching"]) for r in data["discovery"]] == [
        ("fresh", None, 0),
        ("nightly", "2027-01-15T08:00:00.000Z", 1),
    ]
    assert data["events_total"] == 2
    assert [e["event_id"] for e in data["recent_events"]] == ["evt-2", "evt-1"]
    assert data["deliveries"] == {"pending": 1, "delivered": 1, "dead": 1}
    assert [(d["event_id"], d["status"]) for d in data["open_deliveries"]] == [
        ("evt-1", "pending"),
        ("evt-2", "dead"),
    ]
    assert PASSWORD not in out + err


def test_status_text_shows_the_database_replicas_and_who_holds_each_watch(
    config: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "-c", str(config)]) == 0
    out, err = capsys.readouterr()
    lines = out.split("\n")

    assert lines[0] == f"state database: {pg_url}"
    assert lines[1] == "replicas: 1 live, 1 expired"
    assert "state file" not in out
    assert "daemon:" not in out
    replicas = lines[lines.index("Replicas") + 1 : lines.index("Replicas") + 4]
    assert replicas[0].split() == ["REPLICA", "HOST", "RENEWED", "LEASE", "WATCHES"]
    assert replicas[1].split() == ["host-b-202-bbbb", "host-b", "90s", "ago", "expired", "1"]
    assert replicas[2].split() == ["host-a-101-aaaa", "host-a", "5s", "ago", "live", "2"]
    assert "Watching 5 execution(s), 1 with no answer yet" in out
    header = next(line for line in lines if line.startswith("EXECUTION  STATE"))
    assert header.split()[-1] == "REPLICA"
    row = next(line for line in lines if line.startswith("ws/ex-3 "))
    assert row.split()[-2:] == ["api", "host-b-202-bbbb"]
    assert next(line for line in lines if line.startswith("ws/ex-4 ")).split()[-2:] == [
        "config",
        "-",
    ]
    assert any(line.split()[:3] == ["fresh", "-", "0"] for line in lines)
    assert "Recent events (2 in all)" in out
    assert "Deliveries: 1 pending, 1 dead, 1 delivered" in out
    assert any("HTTP 400" in line and "dead" in line for line in lines)
    assert PASSWORD not in out + err


def test_deliveries_retry_dead_requeues_in_the_shared_database(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["deliveries", "-c", str(config), "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert [(d["event_id"], d["sink"], d["status"]) for d in before] == [
        ("evt-1", "hook", "pending"),
        ("evt-2", "hook", "dead"),
    ]

    assert main(["deliveries", "-c", str(config), "--retry-dead", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("queued 1 dead letter(s) again;")
    after = json.loads(out)
    assert [(d["status"], d["attempts"]) for d in after] == [("pending", 2), ("pending", 0)]

    assert main(["deliveries", "-c", str(config), "--retry-dead"]) == 0
    out, err = capsys.readouterr()
    assert err == "no dead letters to retry\n"
    assert out.split("\n")[0].split() == [
        "EXECUTION",
        "SINK",
        "STATUS",
        "ATTEMPTS",
        "UPDATED",
        "LAST",
        "ERROR",
    ]
    assert PASSWORD not in out + err


@pytest.mark.parametrize("argv", [["status"], ["status", "--json"], ["deliveries", "--retry-dead"]])
def test_an_unreachable_database_is_one_line_naming_it_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    url = f"postgresql://bw@127.0.0.1:{free_port()}/blink_watcher"
    config = write_config(tmp_path, url)

    assert main([*argv, "-c", str(config)]) == 1

    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"blink-watcher: cannot reach state database {url}: ")
    assert err.count("\n") == 1
    assert PASSWORD not in err


def test_a_database_the_daemon_has_not_set_up_is_reported_not_migrated(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, pg_url)

    assert main(["deliveries", "-c", str(config), "--retry-dead"]) == 1

    err = capsys.readouterr().err
    assert "has no blink-watcher tables yet" in err
    assert err.count("\n") == 1
    assert main(["status", "-c", str(config)]) == 1  # still empty: the retry created nothing
    assert "has no blink-watcher tables yet" in capsys.readouterr().err
