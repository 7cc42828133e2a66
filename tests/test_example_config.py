"""config.example.toml is valid and shows the real defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.config import BlinkConfig, Config, PollConfig, WebhookSinkConfig, load_config

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setenv("BLINK_API_KEY", "example-key")
    return load_config(EXAMPLE)


def test_example_config_loads(example: object) -> None:
    assert example is not None


def test_example_config_values_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLINK_API_KEY", "example-key")
    config = load_config(EXAMPLE)
    blink_default = BlinkConfig()
    for name in BlinkConfig.__dataclass_fields__:
        if name in ("workspace_id", "api_key"):
            continue
        assert getattr(config.blink, name) == getattr(blink_default, name), name
    assert config.poll == PollConfig()
    webhook = config.sinks[1]
    assert isinstance(webhook, WebhookSinkConfig)
    defaults = WebhookSinkConfig(name=webhook.name, url=webhook.url)
    assert webhook == defaults
    assert config.log_level == "info"
    assert config.log_format == "json"
    assert config.server is None
    assert config.state_path.name == "blink-watcher.db"
    assert config.keep_reported_s == Config.__dataclass_fields__["keep_reported_s"].default


def test_every_commented_key_is_valid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Uncomment every "# key = value" line: each must be a key the parser knows.
    monkeypatch.setenv("BLINK_API_KEY", "example-key")
    monkeypatch.setenv("BLINK_WATCHER_WEBHOOK_SECRET", "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / "blink-api-key").write_text("file-key\n")
    (tmp_path / "webhook-secret").write_text("whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n")
    (tmp_path / "executions.txt").write_text("ex-from-file\n")
    lines = []
    for line in EXAMPLE.read_text().splitlines():
        stripped = line.lstrip("# ")
        key = stripped.split("=", 1)[0].strip()
        if line.startswith("# ") and "=" in stripped and key.replace("_", "").isalnum():
            lines.append(stripped)
        elif line.startswith("# [server]"):
            lines.append("[server]")
        else:
            lines.append(line)
    text = "\n".join(lines).replace(
        'executions_file = "executions.txt"', f'executions_file = "{tmp_path}/executions.txt"'
    )
    path = tmp_path / "all.toml"
    path.write_text(text)
    config = load_config(path)
    assert config.server is not None
    assert config.blink.api_key is not None
    assert config.blink.api_key.reveal() == "file-key"
