"""status and deliveries find the file the service writes, or say where they looked."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from watcher.cli import main
from watcher.store import Store


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "config.toml"
    path.write_text('[blink]\nworkspace_id = "ws"\n[state]\npath = "state.db"\n')
    return path


@pytest.mark.parametrize("command", ["status", "deliveries"])
def test_a_missing_state_file_names_where_it_was_looked_for_and_why(
    config: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    assert main([command, "-c", str(config)]) == 1

    err = capsys.readouterr().err
    assert f"no state file at {config.parent / 'state.db'}" in err
    assert "resolves in the working directory" in err
    assert "--state PATH" in err
    assert err.count("\n") == 1  # one line


def test_state_reads_another_file(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "elsewhere" / "service.db"

    async def create() -> None:
        async with Store(other):
            pass

    asyncio.run(create())

    assert main(["status", "-c", str(config), "--state", str(other), "--json"]) == 0
    assert '"watching"' in capsys.readouterr().out


def test_check_config_shows_the_state_file_and_why(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLINK_API_KEY", "a-key-for-check-config")

    assert main(["check-config", "-c", str(config)]) == 0

    err = capsys.readouterr().err
    assert f"# state file: {config.parent / 'state.db'}" in err
