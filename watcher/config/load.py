"""TOML file -> ``Config``: each section read and checked, secrets resolved last."""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlsplit

from watcher.config.discover import parse_rules
from watcher.config.ids import executions_of
from watcher.config.model import (
    DEFAULT_CONFIG_PATH,
    ENDING_EVENTS,
    EVENT_NAMES,
    HEADER_NAME,
    JOURNAL_MODES,
    KEEP_REPORTED_S,
    LOG_LEVELS,
    MAX_WATCHES,
    RESERVED_HEADERS,
    BlinkConfig,
    Config,
    JournalMode,
    LogSinkConfig,
    PollConfig,
    ServerConfig,
    SinkConfig,
    WebhookSinkConfig,
)
from watcher.config.paths import state_base
from watcher.config.shared import SharedState, parse_shared
from watcher.config.table import (
    Table,
    check_header_value,
    check_url,
    check_whsec,
    env_path,
    is_loopback,
    read_secret,
    url_origin,
)
from watcher.errors import ConfigError
from watcher.models import ExecutionKey
from watcher.proxy import check_environment

T = TypeVar("T")


def _states(t: Table, name: str) -> frozenset[str] | None:
    values = t.str_list(name)
    return None if values is None else frozenset(v.casefold() for v in values)


def _blink(t: Table, config_dir: Path) -> BlinkConfig:
    d = BlinkConfig()
    allow_insecure = t.flag("allow_insecure_http", False)
    base_url = check_url(t, "base_url", t.text("base_url", d.base_url), allow_insecure).rstrip("/")
    api_key, source = read_secret(t, config_dir, False, "BLINK_API_KEY")  # read in _with_secrets
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


def _poll(t: Table) -> PollConfig:
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


def _events(t: Table) -> frozenset[str]:
    names = t.str_list("events")
    if names is None:
        return ENDING_EVENTS
    unknown = sorted(set(names) - EVENT_NAMES)
    if unknown or not names:
        known = ", ".join(sorted(EVENT_NAMES))
        raise t.error("events", f"unknown event(s) {unknown or '(none listed)'}; known: {known}")
    return frozenset(names)


def _sink(t: Table, config_dir: Path, names: set[str], journal: JournalMode) -> SinkConfig:
    kind = t.text("type", required=True)
    states = _states(t, "states")
    events = _events(t)
    if kind == "log":
        raw_path = t.text("path")
        path = None if raw_path is None else env_path(raw_path, "LOGS_DIRECTORY", Path.cwd())
        sink: SinkConfig = LogSinkConfig(
            name=t.text("name", f"log:{path}" if path else "log:stdout"),
            path=path,
            states=states,
            events=events,
            journal=journal,
        )
    elif kind == "webhook":
        allow_insecure = t.flag("allow_insecure_http", False)
        # The URL may be a credential itself (Slack, Teams, Discord and Google Chat
        # put their token in the path): then it is read last, like the secrets.
        inline = t.text("url")
        _, url_source = read_secret(t, config_dir, False, None, prefix="url")
        if (inline is None) == (url_source is None):
            raise t.error("url", "set exactly one of url, url_env or url_file")
        url = "" if inline is None else check_url(t, "url", inline, allow_insecure)
        secret, source = read_secret(t, config_dir, False, None)  # read in _with_secrets
        headers_t = t.table("headers")
        headers: list[tuple[str, str]] = []
        if headers_t is not None:
            for hname in headers_t.data:
                value = headers_t.text(hname, required=True)
                if any(c in value for c in "\r\n\x00") or not HEADER_NAME.fullmatch(hname):
                    raise headers_t.error(hname, "is not a valid HTTP header")
                if hname.lower() in RESERVED_HEADERS:
                    raise headers_t.error(hname, "is set by blink-watcher itself")
                headers.append((hname, value))
        d_initial = 1.0
        initial = t.number("backoff_initial", d_initial, above=0)
        sink = WebhookSinkConfig(
            name=t.text("name", _webhook_name(url) if url else f"webhook:{url_source}"),
            url=url,
            url_source=url_source,
            secret=secret,
            secret_source=source,
            timeout_s=t.number("timeout", 10.0, above=0),
            max_attempts=t.number("max_attempts", 12, integer=True, minimum=1),
            backoff_initial_s=initial,
            backoff_max_s=t.number("backoff_max", max(300.0, initial), minimum=initial),
            max_in_flight=t.number("max_in_flight", 8, integer=True, minimum=1),
            headers=tuple(headers),
            states=states,
            events=events,
            allow_insecure_http=allow_insecure,
        )
    else:
        raise t.error("type", f'must be "log" or "webhook", got {kind!r}')
    if sink.name in names:
        raise t.error("name", f"{sink.name!r} is used by another sink; give each sink a name")
    names.add(sink.name)
    t.finish()
    return sink


def _webhook_name(url: str) -> str:
    """The default name of a webhook sink: its host and a short hash of the whole URL."""
    host = urlsplit(url).hostname or "?"
    return f"webhook:{host}:{hashlib.sha256(url.encode()).hexdigest()[:8]}"


def _state(t: Table, config_dir: Path, resolve: bool) -> tuple[Path, float, SharedState | None]:
    shared = parse_shared(t, config_dir, resolve)
    raw = Path(t.text("path", "blink-watcher.db")).expanduser()
    path = raw if raw.is_absolute() else state_base(t.file)[0] / raw
    return path, t.number("keep_reported", KEEP_REPORTED_S, above=0), shared


def _server(t: Table, config_dir: Path) -> ServerConfig:
    listen = t.text("listen", "127.0.0.1:9464")
    allow_remote = t.flag("allow_remote", False)
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise t.error("listen", f"must be HOST:PORT, got {listen!r}")
    if not allow_remote and not is_loopback(host):
        raise t.error(
            "listen", f"{host} is not a loopback address; set server.allow_remote = true to allow"
        )
    _, source = read_secret(t, config_dir, False, None, "api_token")  # read in _with_secrets
    t.finish()
    return ServerConfig(
        host=host, port=int(port_text), allow_remote=allow_remote, api_token_source=source
    )


def parse_config(data: Mapping[str, Any], file: str, *, resolve_secrets: bool = True) -> Config:
    """Validate a decoded TOML document. ``resolve_secrets=False`` skips reading keys."""
    # Secrets are read last, so typos and bad values are reported before a
    # missing key: they are what the operator is editing.
    config = _parse(data, file)
    return _with_secrets(config, data) if resolve_secrets else config


def _with_secrets(config: Config, data: Mapping[str, Any]) -> Config:
    """Read the API key and webhook secrets the validated ``config`` points at."""
    config_dir = Path(config.file).resolve().parent
    t = Table(config.file, "blink", data.get("blink") or {})
    api_key, source = read_secret(t, config_dir, True, "BLINK_API_KEY")
    assert api_key is not None
    assert source is not None
    check_header_value(t, "api_key_file" if "api_key_file" in t.data else "api_key_env", api_key)
    sinks: list[SinkConfig] = []
    for i, sink in enumerate(config.sinks):
        if isinstance(sink, WebhookSinkConfig):
            t = Table(config.file, f"sinks[{i}]", data["sinks"][i])
            if sink.url_source is not None:
                sink = _with_url(t, sink, config_dir)
            if sink.secret_source is not None:
                secret, _ = read_secret(t, config_dir, True, None)
                assert secret is not None
                check_whsec(t, "secret_file" if "secret_file" in t.data else "secret_env", secret)
                sink = replace(sink, secret=secret)
        sinks.append(sink)
    shared = config.shared_state
    if shared is not None and shared.password_source is not None:
        t = Table(config.file, "state", data.get("state") or {})
        password, _ = read_secret(t, config_dir, True, None, prefix="password")
        config = replace(config, shared_state=replace(shared, password=password))
    # With the secrets, as it reads the environment too: a bad proxy variable stops
    # the start as a missing key does (a ConfigError), rather than going direct.
    check_environment()
    blink = replace(config.blink, api_key=api_key, api_key_source=source)
    server = config.server
    if server is not None and server.api_token_source is not None:
        t = Table(config.file, "server", data.get("server") or {})
        token, _ = read_secret(t, config_dir, True, None, "api_token")
        assert token is not None
        key = "api_token_file" if "api_token_file" in t.data else "api_token_env"
        check_header_value(t, key, token)
        server = replace(server, api_token=token)
    return replace(
        config, blink=blink, server=server, sinks=tuple(sinks), warnings=_warnings(config, sinks)
    )


# Reserved for documentation (RFC 2606): a URL here is a placeholder never edited.
_EXAMPLE_DOMAINS: Final = ("example.com", "example.org", "example.net")


def _is_example(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(host == d or host.endswith("." + d) for d in _EXAMPLE_DOMAINS)


def _warnings(config: Config, sinks: list[SinkConfig]) -> tuple[str, ...]:
    found = []
    if _is_example(config.blink.base_url):
        found.append(
            f"{config.file}: blink.base_url: "
            f"{url_origin(config.blink.base_url)} is a placeholder host"
        )
    for i, sink in enumerate(sinks):
        if isinstance(sink, WebhookSinkConfig) and _is_example(sink.url):
            found.append(
                f"{config.file}: sinks[{i}].url: {url_origin(sink.url)} is a placeholder host; "
                "deliveries to it will retry and then be dead-lettered"
            )
    return tuple(found)


def _with_url(t: Table, sink: WebhookSinkConfig, config_dir: Path) -> WebhookSinkConfig:
    """Read a webhook URL kept as a credential; errors name the key, never the URL."""
    secret, _ = read_secret(t, config_dir, True, None, prefix="url")
    assert secret is not None
    key = "url_file" if "url_file" in t.data else "url_env"
    url = secret.reveal()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise t.error(key, "does not hold an http(s) URL with a host")
    check_url(t, key, url, sink.allow_insecure_http)
    name = sink.name
    if name == f"webhook:{sink.url_source}":  # the default: name it as an inline URL would be
        name = _webhook_name(url)
    return replace(sink, url=url, name=name)


def _parse(data: Mapping[str, Any], file: str) -> Config:
    config_dir = Path(file).resolve().parent
    root = Table(file, "", data)

    def section(name: str, read: Callable[[Table], T], default: T) -> T:
        t = root.table(name)
        if t is None:
            return default
        value = read(t)
        t.finish()
        return value

    blink = section("blink", lambda t: _blink(t, config_dir), None)
    if blink is None:
        blink = _blink(Table(file, "blink", {}), config_dir)
    poll = section("poll", _poll, PollConfig())
    no_executions: tuple[ExecutionKey, ...] = ()

    def watch(t: Table) -> tuple[tuple[ExecutionKey, ...], int]:
        max_watches = t.number("max_watches", MAX_WATCHES, integer=True, minimum=1)
        return executions_of(t, blink.workspace_id, config_dir), max_watches

    executions, max_watches = section("watch", watch, (no_executions, MAX_WATCHES))
    no_shared: SharedState | None = None
    state_path, keep_reported_s, shared_state = section(
        "state",
        lambda t: _state(t, config_dir, False),
        (state_base(file)[0] / "blink-watcher.db", KEEP_REPORTED_S, no_shared),
    )

    def logging_(t: Table) -> tuple[str, Literal["json", "console"], JournalMode]:
        level = t.text("level", "info").lower()
        if level not in LOG_LEVELS:
            raise t.error("level", f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
        fmt = t.text("format", "json")
        if fmt not in ("json", "console"):
            raise t.error("format", f'must be "json" or "console", got {fmt!r}')
        journal = t.text("journal", "auto")
        if journal not in JOURNAL_MODES:
            raise t.error("journal", f'must be "auto", "on" or "off", got {journal!r}')
        return level, "console" if fmt == "console" else "json", journal

    default_logging: tuple[str, Literal["json", "console"], JournalMode] = ("info", "json", "auto")
    log_level, log_format, log_journal = section("logging", logging_, default_logging)
    server_t = root.table("server")
    server = None if server_t is None else _server(server_t, Path(file).resolve().parent)

    root.used.add("sinks")
    raw_sinks = data.get("sinks", [{"type": "log"}])
    if not isinstance(raw_sinks, list) or not all(isinstance(s, dict) for s in raw_sinks):
        raise ConfigError(file, "sinks", "must be an array of tables ([[sinks]])")
    if not raw_sinks:
        # Results that go nowhere would still mark executions as reported.
        raise ConfigError(file, "sinks", "must name at least one sink (omit it for the log sink)")
    names: set[str] = set()
    sinks = tuple(
        _sink(Table(file, f"sinks[{i}]", s), config_dir, names, log_journal)
        for i, s in enumerate(raw_sinks)
    )
    root.used.add("discover")
    discover = parse_rules(data, file, blink.workspace_id)
    root.finish()
    return Config(
        file=file,
        blink=blink,
        poll=poll,
        executions=executions,
        state_path=state_path,
        keep_reported_s=keep_reported_s,
        shared_state=shared_state,
        log_level=log_level,
        log_format=log_format,
        log_journal=log_journal,
        server=server,
        sinks=sinks,
        discover=discover,
        max_watches=max_watches,
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
