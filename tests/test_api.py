"""The watch API's token gate, and the token's config keys, check-config and scrubbing."""

from __future__ import annotations

import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from watcher.components import register_secrets
from watcher.config import Config, ServerConfig, effective_config_toml, load_config
from watcher.config.model import Secret
from watcher.metrics import Metrics
from watcher.redact import scrub
from watcher.server import build_app

TOKEN = "tok-0123456789abcdef"


@dataclass
class FakeService:
    """Just what the listener reads from a service."""

    config: Any
    started_at: float = field(default_factory=time.time)
    metrics: Metrics = field(default_factory=Metrics)

    def readiness(self) -> tuple[bool, str]:
        return True, "ok"


@dataclass
class FakeConfig:
    server: ServerConfig | None


async def client_for(token: str | None) -> TestClient[Any, Any]:
    server = ServerConfig(api_token=None if token is None else Secret(token))
    client: TestClient[Any, Any] = TestClient(
        TestServer(build_app(FakeService(FakeConfig(server))))  # type: ignore[arg-type]
    )
    await client.start_server()
    return client


@pytest.mark.parametrize("path", ["/v1/watches", "/v1/watches/ws/id", "/v1"])
async def test_no_token_configured_answers_403_naming_the_key(path: str) -> None:
    client = await client_for(None)
    try:
        resp = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status == 403
        assert "server.api_token_env" in (await resp.json())["error"]
        health = await client.get("/healthz")
        assert health.status == 200
    finally:
        await client.close()


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token-here", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"]
)
async def test_missing_or_wrong_token_answers_401(header: str | None) -> None:
    client = await client_for(TOKEN)
    try:
        headers = {} if header is None else {"Authorization": header}
        resp = await client.post("/v1/watches", headers=headers, data=b"{}")
        assert resp.status == 401
        body = await resp.text()
        assert TOKEN not in body
        assert "error" in await resp.json()
    finally:
        await client.close()


async def test_right_token_passes_the_gate_and_other_routes_need_none() -> None:
    client = await client_for(TOKEN)
    try:
        resp = await client.get("/v1/nothing-here", headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status == 404  # through the gate, to routing
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 200
    finally:
        await client.close()


def _load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: str) -> Config:
    monkeypatch.setenv("BLINK_API_KEY", "key-abcdef-123456")
    path = tmp_path / "config.toml"
    path.write_text(
        textwrap.dedent(
            """
            [blink]
            workspace_id = "ws"
            """
        )
        + server,
        encoding="utf-8",
    )
    return load_config(path)


def test_token_from_env_is_read_redacted_and_scrubbed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCH_TOKEN", TOKEN)
    config = _load(tmp_path, monkeypatch, '[server]\napi_token_env = "WATCH_TOKEN"\n')
    assert config.server is not None
    assert config.server.api_token is not None
    assert config.server.api_token.reveal() == TOKEN
    shown = effective_config_toml(config)
    assert TOKEN not in shown
    assert 'api_token = "<redacted, from env WATCH_TOKEN>"' in shown
    register_secrets(config)
    assert TOKEN not in scrub(f"oops {TOKEN}")


def test_token_from_credentials_directory_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api-token").write_text(TOKEN + "\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    config = _load(tmp_path, monkeypatch, '[server]\napi_token_file = "api-token"\n')
    assert config.server is not None
    assert config.server.api_token is not None
    assert config.server.api_token.reveal() == TOKEN


def test_no_token_keys_leaves_the_api_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _load(tmp_path, monkeypatch, "[server]\n")
    assert config.server is not None
    assert config.server.api_token is None
    assert "api_token" not in effective_config_toml(config)
