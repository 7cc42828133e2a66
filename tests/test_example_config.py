"""config.example.toml is valid and shows the real defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.config import BlinkConfig, Config, PollConfig, WebhookSinkConfig, load_config

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("BLINK_API_KEY", "example-key")
    monkeypatch.setenv("BLINK_WATCHER_WEBHOOK_SECRET", "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("BLINK_WATCHER_API_TOKEN", "watch-api-token")
    (tmp_path / "blink-api-key").write_text("file-key\n")
    (tmp_path / "webhook-secret").write_text("whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n")
    (tmp_path / "executions.txt").write_text("ex-from-file\n")
    return tmp_path


def uncommented(tmp_path: Path) -> Config:
    """The example with every "# key = value" line (and commented table header) uncommented."""
    lines = []
    for line in EXAMPLE.read_text().splitlines():
        stripped = line.lstrip("# ")
        key = stripped.split("=", 1)[0].strip()
        is_key = line.startswith("# ") and "=" in stripped and key.replace("_", "").isalnum()
        is_header = line.startswith("# [") and line.rstrip().endswith("]")
        if is_key or is_header:
            lines.append(stripped)
        else:
            lines.append(line)
    text = "\n".join(lines).replace(
        'executions_file = "executions.txt"', f'executions_file = "{tmp_path}/executions.txt"'
    )
    path = tmp_path / "all.toml"
    path.write_text(text)
    return load_config(path)


def test_a_copy_of_the_example_works_with_only_the_documented_edits(env: Path) -> None:
    config = load_config(EXAMPLE)

    # Nothing posts to a placeholder: the only active sink is the log sink.
    assert [s.type for s in config.sinks] == ["log"]


def test_example_config_values_are_the_defaults(env: Path) -> None:
    config = load_config(EXAMPLE)
    blink_default = BlinkConfig()
    for name in BlinkConfig.__dataclass_fields__:
        if name in ("workspace_id", "api_key"):
            continue
        assert getattr(config.blink, name) == getattr(blink_default, name), name
    assert config.poll == PollConfig()
    assert config.log_level == "info"
    assert config.log_format == "json"
    assert config.log_journal == "auto"
    assert config.server is None
    assert config.state_path.name == "blink-watcher.db"
    assert config.keep_reported_s == Config.__dataclass_fields__["keep_reported_s"].default


def test_every_commented_key_is_valid_and_shows_its_default(env: Path) -> None:
    config = uncommented(env)

    assert config.server is not None
    assert config.server.api_token is not None
    assert config.server.api_token.reveal() == "watch-api-token"
    assert config.blink.api_key is not None
    assert config.blink.api_key.reveal() == "file-key"
    webhook = config.sinks[1]
    assert isinstance(webhook, WebhookSinkConfig)
    shown = {"name", "url", "secret", "secret_source", "headers", "states"}
    for name in WebhookSinkConfig.__dataclass_fields__:
        if name not in shown:
            default = WebhookSinkConfig(name="x", url="https://x.example")
            assert getattr(webhook, name) == getattr(default, name), name
