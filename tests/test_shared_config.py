"""The ``[state]`` keys for a shared PostgreSQL database: validated, the password kept secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.cli.parser import main
from watcher.config import load_config
from watcher.errors import ConfigError

BASE = '[blink]\nworkspace_id = "ws"\n'
URL = 'url = "postgresql://bw@db.example.com:5432/blink_watcher"\n'


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("BLINK_API_KEY", "key-123")
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, state: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(BASE + "[state]\n" + state, encoding="utf-8")
    return path


def test_a_url_selects_the_shared_database(tmp_path: Path) -> None:
    (tmp_path / "pg-password").write_text("s3cret-pw\n")
    config = load_config(write(tmp_path, URL + 'password_file = "pg-password"\nlease = 6\n'))
    shared = config.shared_state
    assert shared is not None
    assert shared.url.endswith("/blink_watcher")
    assert shared.password is not None
    assert shared.password.reveal() == "s3cret-pw"
    assert "s3cret-pw" not in repr(config)
    assert (shared.lease_s, shared.renew_s) == (6, 2)


def test_the_defaults_are_a_30_s_lease_renewed_every_10_s(tmp_path: Path) -> None:
    shared = load_config(write(tmp_path, URL)).shared_state
    assert shared is not None
    assert (shared.lease_s, shared.renew_s, shared.password) == (30.0, 10.0, None)


def test_sqlite_has_no_shared_state(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, 'path = "x.db"\n')).shared_state is None


@pytest.mark.parametrize(
    ("state", "key", "words"),
    [
        ('url = "postgresql://bw:pw@db/x"\n', "state.url", "password"),
        ('url = "postgresql://bw@db/x?sslmode=require&password=pw"\n', "state.url", "password"),
        ('url = "mysql://db/x"\n', "state.url", "postgresql://"),
        ('url = "postgresql://db"\n', "state.url", "DATABASE"),
        (URL + "lease = 0.5\n", "state.lease", "1 second"),
        (URL + "lease = 3\nrenew = 2\n", "state.renew", "half"),
        ("lease = 3\n", "state.lease", "state.url"),
        (URL + 'password_file = "missing"\n', "state.password_file", "missing"),
        (URL + 'password_env = "NO_SUCH_VAR_X"\n', "state.password_env", "NO_SUCH_VAR_X"),
    ],
)
def test_mistakes_are_one_line_naming_the_key(
    tmp_path: Path, state: str, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, state))
    text = str(info.value)
    assert f" {key}" in text or f"{key}:" in text, text
    assert words in text
    assert "\n" not in text
    assert ":pw@" not in text
    assert "=pw" not in text


def test_check_config_shows_the_database_and_never_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pg-password").write_text("s3cret-pw\n")
    config = write(tmp_path, URL + 'password_file = "pg-password"\nlease = 6\n')
    assert main(["check-config", "-c", str(config)]) == 0
    out, err = capsys.readouterr()
    assert 'password = "<redacted, from file pg-password>"' in out
    assert "lease = 6.0" in out
    assert "path =" not in out.split("[state]")[1].split("[")[0]
    assert "# state database: postgresql://" in err
    assert "s3cret-pw" not in out + err
