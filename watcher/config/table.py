"""Reading one TOML table: typed values, URLs, secrets; leftover keys are errors."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from watcher.config.model import Secret
from watcher.errors import ConfigError

# --- reading ------------------------------------------------------------------------------

T = TypeVar("T")


class Table:
    """One TOML table being read; remembers which keys were used so leftovers are errors."""

    def __init__(self, file: str, prefix: str, data: Mapping[str, Any]) -> None:
        self.file = file
        self.prefix = prefix
        self.data = data
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), message)

    def _get(self, name: str, kind: type | tuple[type, ...], what: str) -> Any:
        self.used.add(name)
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.error(name, f"must be {what}, got {value!r}")
        if not isinstance(value, kind):
            raise self.error(name, f"must be {what}, got {type(value).__name__} {value!r}")
        return value

    def text(self, name: str, default: str | None = None, *, required: bool = False) -> Any:
        value = self._get(name, str, "a string")
        if value is None:
            if required:
                raise self.error(name, "is required")
            return default
        if not value.strip():
            raise self.error(name, "must not be empty")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self._get(name, bool, "true or false")
        return default if value is None else bool(value)

    def number(
        self,
        name: str,
        default: T,
        *,
        integer: bool = False,
        minimum: float | None = None,
        above: float | None = None,
        maximum: float | None = None,
    ) -> T:
        kinds: tuple[type, ...] = (int,) if integer else (int, float)
        value = self._get(name, kinds, "an integer" if integer else "a number")
        if value is None:
            return default
        if minimum is not None and value < minimum:
            raise self.error(name, f"must be >= {minimum:g}, got {value!r}")
        if above is not None and value <= above:
            raise self.error(name, f"must be > {above:g}, got {value!r}")
        if maximum is not None and value > maximum:
            raise self.error(name, f"must be <= {maximum:g}, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise self.error(name, f"must be a finite number, got {value!r}")
        return value if integer else float(value)  # type: ignore[return-value]

    def str_list(self, name: str) -> list[str] | None:
        value = self._get(name, list, "a list of strings")
        if value is None:
            return None
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.error(f"{name}[{i}]", f"must be a non-empty string, got {item!r}")
        return list(value)

    def table(self, name: str) -> Table | None:
        value = self._get(name, dict, "a table")
        return None if value is None else Table(self.file, self.key(name), value)

    def finish(self) -> None:
        for name in self.data:
            if name not in self.used:
                raise self.error(name, "unknown key")


def env_path(relative: str, env_var: str, base: Path) -> Path:
    """Resolve a relative path in ``$env_var`` when set (systemd's directories), else ``base``."""
    path = Path(relative).expanduser()
    if path.is_absolute():
        return path
    root = os.environ.get(env_var)
    return (Path(root) if root else base) / path


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(t: Table, name: str, value: str, allow_insecure: bool) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise t.error(name, f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise t.error(name, "must be an http(s) URL with a host")
    if parts.scheme == "http" and not allow_insecure and not is_loopback(parts.hostname):
        raise t.error(
            name,
            "plain http is only allowed for loopback hosts; use https "
            f"or set {t.key('allow_insecure_http')} = true",
        )
    return value


def redact_url(url: str) -> str:
    """A URL fit for logs: no user info, no query values (tokens hide there)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 literal: urlsplit dropped its brackets
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    query = "&".join(f"{p.split('=', 1)[0]}=<redacted>" for p in parts.query.split("&") if p)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def url_origin(url: str) -> str:
    """Scheme, host and port only: a webhook URL's path is often its token (Slack, Teams)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, "", "", ""))


def _read_secret_file(t: Table, name: str, raw: str, config_dir: Path) -> tuple[Secret, str]:
    path = env_path(raw, "CREDENTIALS_DIRECTORY", config_dir)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise t.error(name, f"cannot read {path}: {reason}") from None
    if not value:
        raise t.error(name, f"{path} is empty")
    return Secret(value), f"file {path}"


def _read_secret_env(t: Table, name: str, var: str) -> tuple[Secret, str]:
    value = os.environ.get(var, "").strip()
    if not value:
        raise t.error(name, f"environment variable {var} is not set or empty")
    return Secret(value), f"env {var}"


def read_secret(
    t: Table,
    config_dir: Path,
    resolve: bool,
    default_env: str | None,
    prefix: str | None = None,
) -> tuple[Secret | None, str | None]:
    """``<x>_file`` wins over ``<x>_env``; returns (secret, where it came from)."""
    prefix = prefix or ("api_key" if default_env == "BLINK_API_KEY" else "secret")
    file_raw = t.text(f"{prefix}_file")
    env_var = t.text(f"{prefix}_env", default_env)
    if file_raw is not None:
        if not resolve:
            return None, f"file {file_raw}"
        return _read_secret_file(t, f"{prefix}_file", file_raw, config_dir)
    if env_var is None:
        return None, None
    if not resolve:
        return None, f"env {env_var}"
    return _read_secret_env(t, f"{prefix}_env", env_var)


def check_header_value(t: Table, name: str, secret: Secret) -> None:
    if any(c in secret.reveal() for c in "\r\n\x00"):
        raise t.error(name, "the secret contains a line break or NUL byte")


def check_whsec(t: Table, name: str, secret: Secret) -> None:
    raw = secret.reveal().removeprefix("whsec_")
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        # Never echo the secret itself, not even a prefix of it.
        raise t.error(name, 'the secret must be base64, as in "whsec_<base64>" (Standard Webhooks)')
