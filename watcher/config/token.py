"""The watch API's token as a client of the daemon reads it (``add``, ``remove``)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from watcher.config.model import Config, Secret
from watcher.config.table import Table, check_header_value, read_secret
from watcher.errors import ConfigError


def read_api_token(config: Config) -> Secret:
    """``server.api_token_env`` / ``api_token_file`` of ``config``, read now.

    Only the token: a CI job handing an execution over need not hold the
    Blink API key. ConfigError (exit 78) names the key when it cannot be read.
    """
    if config.server is None:
        raise ConfigError(config.file, "server.listen", "not set, so there is no watch API")
    try:
        data = tomllib.loads(Path(config.file).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(config.file, None, f"cannot read it again: {exc}") from None
    t = Table(config.file, "server", data.get("server") or {})
    token, _ = read_secret(t, Path(config.file).resolve().parent, True, None, "api_token")
    if token is None:
        raise ConfigError(
            config.file, "server.api_token_env", "not set (nor api_token_file): the API is off"
        )
    key = "api_token_file" if "api_token_file" in t.data else "api_token_env"
    check_header_value(t, key, token)
    return token
