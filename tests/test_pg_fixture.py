"""The PostgreSQL test server's fallback: skip with the install command, but fail in CI."""

from __future__ import annotations

import pytest

from tests import pg


def test_without_postgresql_a_developer_is_told_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql"):
        pg.unavailable("PostgreSQL is not installed")


def test_without_postgresql_ci_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI must run the PostgreSQL tests"):
        pg.unavailable("PostgreSQL is not installed")


def test_no_pg_config_on_path_means_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert pg.bindir() is None
