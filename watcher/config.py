"""TOML file -> frozen, validated config objects. The only module that reads the file.

Every mistake becomes one ``ConfigError`` naming the file and the key
(``blink.rate_limit``, ``sinks[2].url``); unknown keys are errors so a typo is
never silently ignored. Durations are seconds in the file and ``*_s`` here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

from watcher.errors import ConfigError
from watcher.models import ExecutionKey, format_key

DEFAULT_CONFIG_PATH: Final = "/etc/blink-watcher/config.toml"
DEFAULT_BASE_URL: Final = "https://app.blinkops.com/api/v1"
DEFAULT_TERMINAL_STATES: Final = (
    "Completed",
    "Failed",
    "Cancelled",
    "Canceled",
    "Timeout",
    "Skipped",
)
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
_WHITESPACE: Final = re.compile(r"\s")
# Webhook headers a [[sinks]] headers table may not override (case-insensitive).
RESERVED_HEADERS: Final = frozenset(
    {"content-type", "content-length", "user-agent", "webhook-id", "webhook-timestamp",
     "webhook-signature", "host"}
)  # fmt: skip
# RFC 9110 field-name (a token): "X Team" is refused by servers and "X:Team" would be
# sent as header "X" with value "Team: ...".
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class Secret:
    """A credential. Its ``repr``/``str`` never show the value; ``reveal()`` does."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('<redacted>')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class BlinkConfig:
    base_url: str = DEFAULT_BASE_URL
    workspace_id: str | None = None
    api_key: Secret | None = None
    api_key_source: str = "env BLINK_API_KEY"
    with_apply_view: bool = False
    request_timeout_s: float = 10.0
    max_concurrency: int = 32
    rate_limit_per_s: float = 10.0
    retry_attempts: int = 4
    retry_backoff_s: float = 0.5
    retry_backoff_max_s: float = 10.0
    max_response_bytes: int = 4 * 1024 * 1024
    allow_insecure_http: bool = False


@dataclass(frozen=True, slots=True)
class PollConfig:
    interval_s: float = 5.0
    max_interval_s: float = 60.0
    backoff: float = 1.5
    jitter: float = 0.1
    max_watch_s: float = 86400.0
    not_found_grace: int = 3
    terminal_states: frozenset[str] = frozenset(s.casefold() for s in DEFAULT_TERMINAL_STATES)

    def is_terminal(self, state: str | None) -> bool:
        return state is not None and state.casefold() in self.terminal_states


@dataclass(frozen=True, slots=True)
class LogSinkConfig:
    name: str
    path: Path | None = None  # None: standard output
    states: frozenset[str] | None = None
    # Not configurable: a local write fails only when the disk is full or the
    # reader went away, so keep trying for a long while, one line at a time.
    max_attempts: int = 120
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_in_flight: int = 1
    type: Literal["log"] = "log"


@dataclass(frozen=True, slots=True)
class WebhookSinkConfig:
    name: str
    url: str
    secret: Secret | None = None
    secret_source: str | None = None
    timeout_s: float = 10.0
    max_attempts: int = 12
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    max_in_flight: int = 8
    headers: tuple[tuple[str, str], ...] = ()
    states: frozenset[str] | None = None
    allow_insecure_http: bool = False
    type: Literal["webhook"] = "webhook"


SinkConfig: TypeAlias = LogSinkConfig | WebhookSinkConfig


def accepts(sink: SinkConfig, state: str | None) -> bool:
    """The sink's ``states`` filter (case-insensitive); no filter accepts everything."""
    return sink.states is None or (state is not None and state.casefold() in sink.states)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9464
    allow_remote: bool = False


@dataclass(frozen=True, slots=True)
class Config:
    """The whole, validated configuration."""

    file: str
    blink: BlinkConfig
    poll: PollConfig
    executions: tuple[ExecutionKey, ...]
    state_path: Path
    log_level: str = "info"
    log_format: Literal["json", "console"] = "json"
    server: ServerConfig | None = None
    sinks: tuple[SinkConfig, ...] = field(default_factory=tuple)


# --- reading ------------------------------------------------------------------------------

T = TypeVar("T")


class _Table:
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

    def table(self, name: str) -> _Table | None:
        value = self._get(name, dict, "a table")
        return None if value is None else _Table(self.file, self.key(name), value)

    def finish(self) -> None:
        for name in self.data:
            if name not in self.used:
                raise self.error(name, "unknown key")


def _env_path(relative: str, env_var: str, base: Path) -> Path:
    """Resolve a relative path in ``$env_var`` when set (systemd's directories), else ``base``."""
    path = Path(relative).expanduser()
    if path.is_absolute():
        return path
    root = os.environ.get(env_var)
    return (Path(root) if root else base) / path


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(t: _Table, name: str, value: str, allow_insecure: bool) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise t.error(name, f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise t.error(name, "must be an http(s) URL with a host")
    if parts.scheme == "http" and not allow_insecure and not _is_loopback(parts.hostname):
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


def _read_secret_file(t: _Table, name: str, raw: str, config_dir: Path) -> tuple[Secret, str]:
    path = _env_path(raw, "CREDENTIALS_DIRECTORY", config_dir)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise t.error(name, f"cannot read {path}: {reason}") from None
    if not value:
        raise t.error(name, f"{path} is empty")
    return Secret(value), f"file {path}"


def _read_secret_env(t: _Table, name: str, var: str) -> tuple[Secret, str]:
    value = os.environ.get(var, "").strip()
    if not value:
        raise t.error(name, f"environment variable {var} is not set or empty")
    return Secret(value), f"env {var}"


def _secret(
    t: _Table, config_dir: Path, resolve: bool, default_env: str | None
) -> tuple[Secret | None, str | None]:
    """``<x>_file`` wins over ``<x>_env``; returns (secret, where it came from)."""
    prefix = "api_key" if default_env == "BLINK_API_KEY" else "secret"
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


def _check_header_value(t: _Table, name: str, secret: Secret) -> None:
    if any(c in secret.reveal() for c in "\r\n\x00"):
        raise t.error(name, "the secret contains a line break or NUL byte")


def _check_whsec(t: _Table, name: str, secret: Secret) -> None:
    raw = secret.reveal().removeprefix("whsec_")
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        # Never echo the secret itself, not even a prefix of it.
        raise t.error(name, 'the secret must be base64, as in "whsec_<base64>" (Standard Webhooks)')


def split_execution(raw: str, default_ws: str | None) -> ExecutionKey:
    """``EXEC_ID`` (in ``default_ws``) or ``WS_ID/EXEC_ID``; ValueError saying what is wrong."""
    text = raw.strip()
    if _WHITESPACE.search(text):
        raise ValueError(f"{raw!r} contains white space")
    parts = text.split("/")
    if len(parts) == 2 and parts[0] and parts[1]:
        return parts[0], parts[1]
    if len(parts) == 1 and text:
        if default_ws is None:
            raise ValueError(
                f"{text!r} has no workspace and blink.workspace_id is not set (use WS/ID)"
            )
        return default_ws, text
    raise ValueError(f"{raw!r} is not EXEC_ID or WS_ID/EXEC_ID")


def _executions(t: _Table, default_ws: str | None, config_dir: Path) -> tuple[ExecutionKey, ...]:
    keys: dict[ExecutionKey, None] = {}  # insertion-ordered set: duplicates watched once
    for i, raw in enumerate(t.str_list("executions") or []):
        try:
            keys[split_execution(raw, default_ws)] = None
        except ValueError as exc:
            raise t.error(f"executions[{i}]", str(exc)) from None
    file_raw = t.text("executions_file")
    if file_raw is not None:
        path = config_dir / Path(file_raw).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8"
            raise t.error("executions_file", f"cannot read {path}: {reason}") from None
        # 100,000 lines here is normal: nothing per line beyond the parse itself.
        for lineno, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if text:
                try:
                    keys[split_execution(text, default_ws)] = None
                except ValueError as exc:
                    where = f"executions_file ({path}:{lineno})"
                    raise t.error(where, str(exc)) from None
    return tuple(keys)


def _states(t: _Table, name: str) -> frozenset[str] | None:
    values = t.str_list(name)
    return None if values is None else frozenset(v.casefold() for v in values)


def _blink(t: _Table, config_dir: Path) -> BlinkConfig:
    d = BlinkConfig()
    allow_insecure = t.flag("allow_insecure_http", False)
    base_url = _url(t, "base_url", t.text("base_url", d.base_url), allow_insecure).rstrip("/")
    api_key, source = _secret(t, config_dir, False, "BLINK_API_KEY")  # read in _with_secrets
    backoff_s = t.number("retry_backoff", d.retry_backoff_s, minimum=0)
    return BlinkConfig(
        base_url=base_url,
        workspace_id=t.text("workspace_id"),
        api_key=api_key,
        api_key_source=source or d.api_key_source,
        with_apply_view=t.flag("with_apply_view", d.with_apply_view),
        request_timeout_s=t.number("request_timeout", d.request_timeout_s, above=0),
        max_concurrency=t.number("max_concurrency", d.max_concurrency, integer=True, minimum=1),
        rate_limit_per_s=t.number("rate_limit", d.rate_limit_per_s, minimum=0),
        retry_attempts=t.number("retry_attempts", d.retry_attempts, integer=True, minimum=1),
        retry_backoff_s=backoff_s,
        retry_backoff_max_s=t.number(
            "retry_backoff_max", max(d.retry_backoff_max_s, backoff_s), minimum=backoff_s
        ),
        max_response_bytes=t.number(
            "max_response_bytes", d.max_response_bytes, integer=True, minimum=1024
        ),
        allow_insecure_http=allow_insecure,
    )


def _poll(t: _Table) -> PollConfig:
    d = PollConfig()
    interval = t.number("interval", d.interval_s, above=0)
    terminal = t.str_list("terminal_states")
    if terminal is not None and not terminal:
        raise t.error("terminal_states", "must name at least one state")
    return PollConfig(
        interval_s=interval,
        max_interval_s=t.number("max_interval", max(d.max_interval_s, interval), minimum=interval),
        backoff=t.number("backoff", d.backoff, minimum=1),
        jitter=t.number("jitter", d.jitter, minimum=0, maximum=0.5),
        max_watch_s=t.number("max_watch", d.max_watch_s, above=0),
        not_found_grace=t.number("not_found_grace", d.not_found_grace, integer=True, minimum=1),
        terminal_states=d.terminal_states
        if terminal is None
        else frozenset(s.casefold() for s in terminal),
    )


def _sink(t: _Table, config_dir: Path, names: set[str]) -> SinkConfig:
    kind = t.text("type", required=True)
    states = _states(t, "states")
    if kind == "log":
        raw_path = t.text("path")
        path = None if raw_path is None else _env_path(raw_path, "LOGS_DIRECTORY", Path.cwd())
        sink: SinkConfig = LogSinkConfig(
            name=t.text("name", f"log:{path}" if path else "log:stdout"), path=path, states=states
        )
    elif kind == "webhook":
        allow_insecure = t.flag("allow_insecure_http", False)
        url = _url(t, "url", t.text("url", required=True), allow_insecure)
        secret, source = _secret(t, config_dir, False, None)  # read in _with_secrets
        headers_t = t.table("headers")
        headers: list[tuple[str, str]] = []
        if headers_t is not None:
            for hname in headers_t.data:
                value = headers_t.text(hname, required=True)
                if any(c in value for c in "\r\n\x00") or not _HEADER_NAME.fullmatch(hname):
                    raise headers_t.error(hname, "is not a valid HTTP header")
                if hname.lower() in RESERVED_HEADERS:
                    raise headers_t.error(hname, "is set by blink-watcher itself")
                headers.append((hname, value))
        d_initial = 1.0
        initial = t.number("backoff_initial", d_initial, above=0)
        host = urlsplit(url).hostname or "?"
        sink = WebhookSinkConfig(
            name=t.text("name", f"webhook:{host}:{_short_hash(url)}"),
            url=url,
            secret=secret,
            secret_source=source,
            timeout_s=t.number("timeout", 10.0, above=0),
            max_attempts=t.number("max_attempts", 12, integer=True, minimum=1),
            backoff_initial_s=initial,
            backoff_max_s=t.number("backoff_max", max(300.0, initial), minimum=initial),
            max_in_flight=t.number("max_in_flight", 8, integer=True, minimum=1),
            headers=tuple(headers),
            states=states,
            allow_insecure_http=allow_insecure,
        )
    else:
        raise t.error("type", f'must be "log" or "webhook", got {kind!r}')
    if sink.name in names:
        raise t.error("name", f"{sink.name!r} is used by another sink; give each sink a name")
    names.add(sink.name)
    t.finish()
    return sink


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _server(t: _Table) -> ServerConfig:
    listen = t.text("listen", "127.0.0.1:9464")
    allow_remote = t.flag("allow_remote", False)
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise t.error("listen", f"must be HOST:PORT, got {listen!r}")
    if not allow_remote and not _is_loopback(host):
        raise t.error(
            "listen", f"{host} is not a loopback address; set server.allow_remote = true to allow"
        )
    t.finish()
    return ServerConfig(host=host, port=int(port_text), allow_remote=allow_remote)


def parse_config(data: Mapping[str, Any], file: str, *, resolve_secrets: bool = True) -> Config:
    """Validate a decoded TOML document. ``resolve_secrets=False`` skips reading keys."""
    # Secrets are read last, so typos and bad values are reported before a
    # missing key: they are what the operator is editing.
    config = _parse(data, file)
    return _with_secrets(config, data) if resolve_secrets else config


def _with_secrets(config: Config, data: Mapping[str, Any]) -> Config:
    """Read the API key and webhook secrets the validated ``config`` points at."""
    config_dir = Path(config.file).resolve().parent
    t = _Table(config.file, "blink", data.get("blink") or {})
    api_key, source = _secret(t, config_dir, True, "BLINK_API_KEY")
    assert api_key is not None
    assert source is not None
    _check_header_value(t, "api_key_file" if "api_key_file" in t.data else "api_key_env", api_key)
    sinks: list[SinkConfig] = []
    for i, sink in enumerate(config.sinks):
        if isinstance(sink, WebhookSinkConfig) and sink.secret_source is not None:
            t = _Table(config.file, f"sinks[{i}]", data["sinks"][i])
            secret, _ = _secret(t, config_dir, True, None)
            assert secret is not None
            _check_whsec(t, "secret_file" if "secret_file" in t.data else "secret_env", secret)
            sink = replace(sink, secret=secret)
        sinks.append(sink)
    blink = replace(config.blink, api_key=api_key, api_key_source=source)
    return replace(config, blink=blink, sinks=tuple(sinks))


def _parse(data: Mapping[str, Any], file: str) -> Config:
    config_dir = Path(file).resolve().parent
    root = _Table(file, "", data)

    def section(name: str, read: Callable[[_Table], T], default: T) -> T:
        t = root.table(name)
        if t is None:
            return default
        value = read(t)
        t.finish()
        return value

    blink = section("blink", lambda t: _blink(t, config_dir), None)
    if blink is None:
        blink = _blink(_Table(file, "blink", {}), config_dir)
    poll = section("poll", _poll, PollConfig())
    no_executions: tuple[ExecutionKey, ...] = ()
    executions = section(
        "watch", lambda t: _executions(t, blink.workspace_id, config_dir), no_executions
    )
    state_path = section(
        "state",
        lambda t: _env_path(t.text("path", "blink-watcher.db"), "STATE_DIRECTORY", Path.cwd()),
        _env_path("blink-watcher.db", "STATE_DIRECTORY", Path.cwd()),
    )

    def logging_(t: _Table) -> tuple[str, Literal["json", "console"]]:
        level = t.text("level", "info").lower()
        if level not in LOG_LEVELS:
            raise t.error("level", f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
        fmt = t.text("format", "json")
        if fmt not in ("json", "console"):
            raise t.error("format", f'must be "json" or "console", got {fmt!r}')
        return level, "console" if fmt == "console" else "json"

    default_logging: tuple[str, Literal["json", "console"]] = ("info", "json")
    log_level, log_format = section("logging", logging_, default_logging)
    server_t = root.table("server")
    server = None if server_t is None else _server(server_t)

    root.used.add("sinks")
    raw_sinks = data.get("sinks", [{"type": "log"}])
    if not isinstance(raw_sinks, list) or not all(isinstance(s, dict) for s in raw_sinks):
        raise ConfigError(file, "sinks", "must be an array of tables ([[sinks]])")
    if not raw_sinks:
        # Results that go nowhere would still mark executions as reported.
        raise ConfigError(file, "sinks", "must name at least one sink (omit it for the log sink)")
    names: set[str] = set()
    sinks = tuple(
        _sink(_Table(file, f"sinks[{i}]", s), config_dir, names) for i, s in enumerate(raw_sinks)
    )
    root.finish()
    return Config(
        file=file,
        blink=blink,
        poll=poll,
        executions=executions,
        state_path=state_path,
        log_level=log_level,
        log_format=log_format,
        server=server,
        sinks=sinks,
    )


def load_config(path: str | os.PathLike[str], *, resolve_secrets: bool = True) -> Config:
    """Read and validate the file at ``path``; every failure is a ``ConfigError``."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(file, None, "no such file") from None
    except OSError as exc:
        raise ConfigError(file, None, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(file, None, "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already carries "(at line L, column C)".
        raise ConfigError(file, None, f"TOML syntax error: {exc}") from None
    return parse_config(data, file, resolve_secrets=resolve_secrets)


def default_config_path() -> str:
    return os.environ.get("BLINK_WATCHER_CONFIG") or DEFAULT_CONFIG_PATH


# --- showing ------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, Iterable) and not isinstance(value, str):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    # TOML basic strings forbid control characters other than tab, escaped or not.
    escaped = "".join(
        f"\\u{ord(c):04x}" if (c < " " and c != "\t") or c == "\x7f" else c
        for c in text.replace("\\", "\\\\").replace('"', '\\"')
    )
    return f'"{escaped}"'


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def _section_lines(header: str, items: Mapping[str, Any]) -> list[str]:
    lines = [header]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in items.items() if v is not None]
    return [*lines, ""]


def effective_config_toml(config: Config) -> str:
    """The effective configuration as TOML, every secret redacted (``check-config``)."""
    b = config.blink
    p = config.poll
    out: list[str] = [f"# effective configuration of {config.file}", ""]
    out += _section_lines(
        "[blink]",
        {
            "base_url": redact_url(b.base_url),
            "workspace_id": b.workspace_id,
            "api_key": f"<redacted, from {b.api_key_source}>",
            "with_apply_view": b.with_apply_view,
            "request_timeout": b.request_timeout_s,
            "max_concurrency": b.max_concurrency,
            "rate_limit": b.rate_limit_per_s,
            "retry_attempts": b.retry_attempts,
            "retry_backoff": b.retry_backoff_s,
            "retry_backoff_max": b.retry_backoff_max_s,
            "max_response_bytes": b.max_response_bytes,
            "allow_insecure_http": b.allow_insecure_http,
        },
    )
    out += _section_lines(
        "[poll]",
        {
            "interval": p.interval_s,
            "max_interval": p.max_interval_s,
            "backoff": p.backoff,
            "jitter": p.jitter,
            "max_watch": p.max_watch_s,
            "not_found_grace": p.not_found_grace,
            "terminal_states": sorted(p.terminal_states),
        },
    )
    out += [f"[watch]  # {len(config.executions)} executions", "executions = ["]
    out += [f"  {_toml_string(format_key(key))}," for key in config.executions] + ["]", ""]
    out += _section_lines("[state]", {"path": str(config.state_path)})
    out += _section_lines("[logging]", {"level": config.log_level, "format": config.log_format})
    if config.server is not None:
        s = config.server
        host = f"[{s.host}]" if ":" in s.host else s.host
        out += _section_lines(
            "[server]", {"listen": f"{host}:{s.port}", "allow_remote": s.allow_remote}
        )
    for sink in config.sinks:
        out += _section_lines("[[sinks]]", _sink_items(sink))
    return "\n".join(out).rstrip() + "\n"


def _sink_items(sink: SinkConfig) -> dict[str, Any]:
    states = None if sink.states is None else sorted(sink.states)
    if isinstance(sink, LogSinkConfig):
        path = None if sink.path is None else str(sink.path)
        return {"type": "log", "name": sink.name, "path": path, "states": states}
    return {
        "type": "webhook",
        "name": sink.name,
        "url": redact_url(sink.url),
        "secret": None if sink.secret_source is None else f"<redacted, from {sink.secret_source}>",
        "timeout": sink.timeout_s,
        "max_attempts": sink.max_attempts,
        "backoff_initial": sink.backoff_initial_s,
        "backoff_max": sink.backoff_max_s,
        "max_in_flight": sink.max_in_flight,
        "headers": {k: "<redacted>" for k, _ in sink.headers} or None,
        "states": states,
        "allow_insecure_http": sink.allow_insecure_http,
    }
