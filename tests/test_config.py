"""TOML -> validated Config: every mistake is one ConfigError naming the file and the key."""

from __future__ import annotations

import base64
import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from watcher.config import (
    DEFAULT_BASE_URL,
    BlinkConfig,
    Config,
    LogSinkConfig,
    PollConfig,
    Secret,
    WebhookSinkConfig,
    accepts,
    effective_config_toml,
    load_config,
    parse_config,
    redact_url,
)
from watcher.errors import ConfigError

API_KEY = "blink-api-key-4q7Zr2Xw9"
WHSEC = "whsec_" + base64.b64encode(b"webhook-signing-key-0123456789ab").decode()

Write = Callable[..., Path]
Load = Callable[..., Config]
Fail = Callable[..., ConfigError]


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A known environment: the API key set, no systemd directories, cwd in tmp_path."""
    for var in (
        "CREDENTIALS_DIRECTORY",
        "STATE_DIRECTORY",
        "CONFIGURATION_DIRECTORY",
        "LOGS_DIRECTORY",
        "BLINK_WATCHER_WEBHOOK_SECRET",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BLINK_API_KEY", API_KEY)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def write(tmp_path: Path) -> Write:
    def _write(text: str, name: str = "config.toml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def load(write: Write) -> Load:
    def _load(text: str, name: str = "config.toml") -> Config:
        return load_config(write(text, name))

    return _load


@pytest.fixture
def fail(write: Write) -> Fail:
    """Load ``text`` expecting a ConfigError; checks it names the file."""

    def _fail(text: str, name: str = "config.toml") -> ConfigError:
        path = write(text, name)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.file == str(path)
        assert str(info.value).startswith(f"{path}: ")
        return info.value

    return _fail


# --- one ConfigError naming file and key ---------------------------------------------------

WEBHOOK = '[[sinks]]\ntype = "webhook"\nurl = "https://hooks.example.com/blink"\n'

BAD_CONFIGS = [
    # unknown keys, at every level
    ("unknown-root", "bogus = 1", "bogus"),
    ("unknown-blink", "[blink]\nrate_limt = 5", "blink.rate_limt"),
    ("unknown-poll", "[poll]\nintervall = 5", "poll.intervall"),
    ("unknown-watch", "[watch]\nexecution = []", "watch.execution"),
    ("unknown-state", '[state]\ndir = "x"', "state.dir"),
    ("unknown-logging", '[logging]\nlvl = "info"', "logging.lvl"),
    ("unknown-server", "[server]\nport = 9464", "server.port"),
    (
        "unknown-log-sink",
        '[[sinks]]\ntype = "log"\n[[sinks]]\ntype = "log"\npath = "r.jsonl"\nurl = "https://x.io"',
        "sinks[1].url",
    ),
    ("unknown-webhook-sink", WEBHOOK + "retries = 3", "sinks[0].retries"),
    # wrong types
    ("string-for-number", '[blink]\nrate_limit = "5"', "blink.rate_limit"),
    ("bool-for-number", "[blink]\nrate_limit = true", "blink.rate_limit"),
    ("float-for-integer", "[blink]\nmax_concurrency = 2.5", "blink.max_concurrency"),
    ("number-for-string", "[blink]\nworkspace_id = 42", "blink.workspace_id"),
    ("string-for-bool", '[blink]\nwith_apply_view = "yes"', "blink.with_apply_view"),
    ("string-for-duration", '[poll]\ninterval = "5s"', "poll.interval"),
    ("string-for-list", '[poll]\nterminal_states = "Failed"', "poll.terminal_states"),
    ("number-in-list", '[poll]\nterminal_states = ["Failed", 3]', "poll.terminal_states[1]"),
    ("string-for-executions", '[watch]\nexecutions = "ws/a"', "watch.executions"),
    ("number-for-section", "blink = 5", "blink"),
    ("table-for-sinks", 'sinks = { type = "log" }', "sinks"),
    ("string-for-sink-timeout", WEBHOOK + 'timeout = "10"', "sinks[0].timeout"),
    ("number-for-header", WEBHOOK + "headers = { X-Team = 1 }", "sinks[0].headers.X-Team"),
    ("number-for-level", "[logging]\nlevel = 1", "logging.level"),
    ("empty-workspace", '[blink]\nworkspace_id = ""', "blink.workspace_id"),
    # out of range
    ("negative-rate-limit", "[blink]\nrate_limit = -1", "blink.rate_limit"),
    ("zero-concurrency", "[blink]\nmax_concurrency = 0", "blink.max_concurrency"),
    ("zero-timeout", "[blink]\nrequest_timeout = 0", "blink.request_timeout"),
    ("zero-retry-attempts", "[blink]\nretry_attempts = 0", "blink.retry_attempts"),
    ("tiny-response-cap", "[blink]\nmax_response_bytes = 10", "blink.max_response_bytes"),
    ("big-jitter", "[poll]\njitter = 0.6", "poll.jitter"),
    ("negative-jitter", "[poll]\njitter = -0.1", "poll.jitter"),
    ("max-below-interval", "[poll]\ninterval = 10.0\nmax_interval = 5.0", "poll.max_interval"),
    ("zero-interval", "[poll]\ninterval = 0", "poll.interval"),
    ("nan-interval", "[poll]\ninterval = nan", "poll.interval"),
    ("infinite-max-watch", "[poll]\nmax_watch = inf", "poll.max_watch"),
    ("shrinking-backoff", "[poll]\nbackoff = 0.5", "poll.backoff"),
    ("zero-grace", "[poll]\nnot_found_grace = 0", "poll.not_found_grace"),
    ("zero-keep-reported", "[state]\nkeep_reported = 0", "state.keep_reported"),
    ("negative-keep-reported", "[state]\nkeep_reported = -1.0", "state.keep_reported"),
    ("infinite-keep-reported", "[state]\nkeep_reported = inf", "state.keep_reported"),
    ("string-for-keep-reported", '[state]\nkeep_reported = "7d"', "state.keep_reported"),
    ("no-terminal-states", "[poll]\nterminal_states = []", "poll.terminal_states"),
    ("zero-max-attempts", WEBHOOK + "max_attempts = 0", "sinks[0].max_attempts"),
    (
        "backoff-max-below-initial",
        WEBHOOK + "backoff_initial = 10.0\nbackoff_max = 1.0",
        "sinks[0].backoff_max",
    ),
    ("unknown-level", '[logging]\nlevel = "verbose"', "logging.level"),
    ("unknown-format", '[logging]\nformat = "xml"', "logging.format"),
    ("unknown-journal", '[logging]\njournal = "yes"', "logging.journal"),
    ("boolean-journal", "[logging]\njournal = true", "logging.journal"),
    ("remote-listen", '[server]\nlisten = "0.0.0.0:9464"', "server.listen"),
    ("listen-without-port", '[server]\nlisten = "127.0.0.1"', "server.listen"),
    ("listen-bad-port", '[server]\nlisten = "127.0.0.1:70000"', "server.listen"),
    # sinks
    ("unknown-sink-type", '[[sinks]]\ntype = "log"\n[[sinks]]\ntype = "slack"', "sinks[1].type"),
    ("sink-without-type", '[[sinks]]\npath = "r.jsonl"', "sinks[0].type"),
    ("webhook-without-url", '[[sinks]]\ntype = "log"\n[[sinks]]\ntype = "webhook"', "sinks[1].url"),
    ("same-sink-twice", '[[sinks]]\ntype = "log"\n[[sinks]]\ntype = "log"', "sinks[1].name"),
    ("header-name-space", WEBHOOK + 'headers = { "X Team" = "a" }', "sinks[0].headers.X Team"),
    ("header-name-colon", WEBHOOK + 'headers = { "X:Team" = "a" }', "sinks[0].headers.X:Team"),
    ("header-value-newline", WEBHOOK + 'headers = { X-Team = "a\\nb" }', "sinks[0].headers.X-Team"),
    # URLs
    ("remote-http-base-url", '[blink]\nbase_url = "http://blink.example/api"', "blink.base_url"),
    ("remote-http-hook", '[[sinks]]\ntype = "webhook"\nurl = "http://h.example"', "sinks[0].url"),
    ("not-http-base-url", '[blink]\nbase_url = "ftp://blink.example"', "blink.base_url"),
    ("base-url-without-host", '[blink]\nbase_url = "https://"', "blink.base_url"),
    ("base-url-bad-port", '[blink]\nbase_url = "https://blink.example:99999"', "blink.base_url"),
    # executions
    ("bare-id-no-workspace", '[watch]\nexecutions = ["ws/a", "ws/b", "c"]', "watch.executions[2]"),
    ("three-parts", '[watch]\nexecutions = ["w/a/x"]', "watch.executions[0]"),
    ("empty-workspace-part", '[watch]\nexecutions = ["ws/a", "/b"]', "watch.executions[1]"),
    ("empty-execution-part", '[watch]\nexecutions = ["ws/"]', "watch.executions[0]"),
    ("space-in-id", '[watch]\nexecutions = ["ws/a b"]', "watch.executions[0]"),
    ("empty-id", '[watch]\nexecutions = [""]', "watch.executions[0]"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "key"), [case[1:] for case in BAD_CONFIGS], ids=[case[0] for case in BAD_CONFIGS]
)
def test_bad_config_is_one_error_naming_file_and_key(fail: Fail, text: str, key: str) -> None:
    error = fail(text)

    assert error.key == key
    assert str(error).startswith(f"{error.file}: {key}: ")


def test_error_message_says_what_is_wrong(fail: Fail) -> None:
    assert "must be a number" in fail('[blink]\nrate_limit = "5"').message
    assert "must be >= 0" in fail("[blink]\nrate_limit = -1").message
    assert "must be <= 0.5" in fail("[poll]\njitter = 0.6").message
    assert "unknown key" in fail("[blink]\nrate_limt = 5").message


def test_bare_id_without_workspace_points_at_blink_workspace_id(fail: Fail) -> None:
    error = fail('[watch]\nexecutions = ["ws/a", "ws/b", "c"]')

    assert "'c'" in error.message
    assert "blink.workspace_id" in error.message


def test_remote_plain_http_error_suggests_the_override(fail: Fail) -> None:
    error = fail('[blink]\nbase_url = "http://blink.example.com/api"')

    assert "blink.allow_insecure_http = true" in error.message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/api/v1",
        "http://localhost:8080/api/v1",
        "http://api.localhost/api/v1",
        "http://[::1]:8080/api/v1",
        "http://127.8.9.10/api/v1",
    ],
)
def test_plain_http_is_allowed_for_loopback(load: Load, url: str) -> None:
    config = load(
        f"""
        [blink]
        base_url = "{url}/"
        [[sinks]]
        type = "webhook"
        url = "{url}/hook"
        """
    )

    assert config.blink.base_url == url  # trailing slash dropped
    assert isinstance(config.sinks[0], WebhookSinkConfig)
    assert config.sinks[0].url == f"{url}/hook"


def test_allow_insecure_http_permits_remote_plain_http_per_section(load: Load, fail: Fail) -> None:
    config = load(
        """
        [blink]
        base_url = "http://blink.internal/api/v1"
        allow_insecure_http = true
        [[sinks]]
        type = "webhook"
        url = "http://hooks.internal/blink"
        allow_insecure_http = true
        """
    )

    assert config.blink.base_url == "http://blink.internal/api/v1"
    assert config.blink.allow_insecure_http is True
    assert config.sinks[0].allow_insecure_http is True
    # The blink section's override does not extend to a sink.
    error = fail(
        """
        [blink]
        allow_insecure_http = true
        [[sinks]]
        type = "webhook"
        url = "http://hooks.internal/blink"
        """
    )
    assert error.key == "sinks[0].url"


# --- reading the file ----------------------------------------------------------------------


def test_toml_syntax_error_gives_line_and_column(fail: Fail) -> None:
    error = fail('[blink]\nworkspace_id = "ws"\nrate_limit = = 5\n')

    assert error.key is None
    assert "TOML syntax error" in error.message
    assert "line 3, column" in error.message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert str(info.value) == f"{path}: no such file"


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    # A directory, because root (the test container) can read any mode-000 file.
    path = tmp_path / "config.d"
    path.mkdir()

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert str(info.value).startswith(f"{path}: cannot read")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[blink]\nworkspace_id = "\xff"\n')

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert info.value.file == str(path)
    assert info.value.key is None


def test_parse_config_reports_the_given_file_name() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"poll": {"jitter": 0.9}}, "/etc/blink-watcher/config.toml")

    assert str(info.value).startswith("/etc/blink-watcher/config.toml: poll.jitter: ")


# --- defaults ------------------------------------------------------------------------------


def test_empty_config_has_the_spec_defaults(tmp_path: Path) -> None:
    config = parse_config({}, str(tmp_path / "config.toml"))

    assert config.blink == BlinkConfig(api_key=Secret(API_KEY))
    b = config.blink
    assert b.base_url == DEFAULT_BASE_URL == "https://app.blinkops.com/api/v1"
    assert b.workspace_id is None
    assert b.api_key_source == "env BLINK_API_KEY"
    assert b.with_apply_view is False
    assert b.request_timeout_s == 10.0
    assert b.max_concurrency == 32
    assert b.rate_limit_per_s == 10.0
    assert b.retry_attempts == 4
    assert b.allow_insecure_http is False

    assert config.poll == PollConfig()
    p = config.poll
    assert p.interval_s == 5.0
    assert p.max_interval_s == 60.0
    assert p.backoff == 1.5
    assert p.jitter == 0.1
    assert p.max_watch_s == 86400.0
    assert p.not_found_grace == 3
    assert p.terminal_states == {
        "completed",
        "failed",
        "cancelled",
        "canceled",
        "timeout",
        "skipped",
    }

    assert config.executions == ()
    assert config.state_path == tmp_path / "blink-watcher.db"
    assert config.keep_reported_s == 604800.0
    assert (config.log_level, config.log_format) == ("info", "json")
    assert config.server is None
    assert config.sinks == (LogSinkConfig(name="log:stdout"),)


def test_webhook_sink_and_server_defaults(load: Load) -> None:
    config = load(
        """
        [server]
        [[sinks]]
        type = "webhook"
        url = "https://hooks.example.com/blink"
        """
    )

    [sink] = config.sinks
    assert isinstance(sink, WebhookSinkConfig)
    assert sink.secret is None
    assert sink.timeout_s == 10.0
    assert sink.max_attempts == 12
    assert sink.backoff_initial_s == 1.0
    assert sink.backoff_max_s == 300.0
    assert sink.headers == ()
    assert sink.states is None
    assert config.server is not None
    assert (config.server.host, config.server.port) == ("127.0.0.1", 9464)


def test_max_interval_default_follows_a_longer_interval(load: Load) -> None:
    config = load("[poll]\ninterval = 120.0\n")

    assert config.poll.max_interval_s == 120.0


def test_retry_backoff_max_default_follows_a_longer_backoff(load: Load) -> None:
    config = load("[blink]\nretry_backoff = 20.0\n")

    assert config.blink.retry_backoff_max_s >= config.blink.retry_backoff_s == 20.0


def test_values_are_read_with_units_converted(load: Load) -> None:
    config = load(
        """
        [blink]
        workspace_id = "ws"
        with_apply_view = true
        request_timeout = 3
        rate_limit = 0
        max_concurrency = 4
        [poll]
        interval = 1
        max_interval = 2.5
        jitter = 0.5
        not_found_grace = 1
        terminal_states = ["DONE", "Failed"]
        [logging]
        level = "DEBUG"
        format = "console"
        [server]
        listen = "[::1]:9100"
        """
    )

    assert config.blink.with_apply_view is True
    assert config.blink.request_timeout_s == 3.0
    assert isinstance(config.blink.request_timeout_s, float)
    assert config.blink.rate_limit_per_s == 0.0
    assert config.blink.max_concurrency == 4
    assert (config.poll.interval_s, config.poll.max_interval_s) == (1.0, 2.5)
    assert config.poll.terminal_states == {"done", "failed"}
    assert (config.log_level, config.log_format) == ("debug", "console")
    assert config.server is not None
    assert (config.server.host, config.server.port) == ("::1", 9100)


@pytest.mark.parametrize("mode", ["auto", "on", "off"])
def test_logging_journal_reaches_diagnostics_and_every_log_sink(load: Load, mode: str) -> None:
    config = load(
        f"""
        [logging]
        journal = "{mode}"
        [[sinks]]
        type = "log"
        [[sinks]]
        type = "log"
        path = "results.jsonl"
        """
    )

    assert config.log_journal == mode
    assert [s.journal for s in config.sinks if isinstance(s, LogSinkConfig)] == [mode, mode]


def test_logging_journal_defaults_to_auto(load: Load) -> None:
    config = load("")

    assert config.log_journal == "auto"
    [sink] = config.sinks
    assert isinstance(sink, LogSinkConfig)
    assert sink.journal == "auto"


def test_unknown_journal_mode_names_the_accepted_ones(fail: Fail) -> None:
    assert 'must be "auto", "on" or "off"' in fail('[logging]\njournal = "yes"').message


def test_terminal_states_and_sink_filters_match_case_insensitively(load: Load) -> None:
    config = load(
        """
        [poll]
        terminal_states = ["Completed", "FAILED"]
        [[sinks]]
        type = "log"
        states = ["Failed"]
        """
    )

    assert config.poll.is_terminal("completed")
    assert config.poll.is_terminal("Failed")
    assert not config.poll.is_terminal("Running")
    assert not config.poll.is_terminal(None)
    assert accepts(config.sinks[0], "FAILED")
    assert not accepts(config.sinks[0], "Completed")
    assert not accepts(config.sinks[0], None)
    assert accepts(LogSinkConfig(name="all"), None)


# --- executions ----------------------------------------------------------------------------


def test_executions_default_workspace_and_duplicates_collapsed(load: Load) -> None:
    config = load(
        """
        [blink]
        workspace_id = "ws"
        [watch]
        executions = ["a", "other/b", "ws/a", " c ", "a"]
        """
    )

    assert config.executions == (("ws", "a"), ("other", "b"), ("ws", "c"))


def test_executions_file_is_read_relative_to_the_config_file(write: Write, tmp_path: Path) -> None:
    write(
        """
        # the IDs we care about

        ws1/a
          b   # default workspace
        ws2/c\t
        ws1/a
        z
        """,
        "conf/ids.txt",
    )
    path = write(
        """
        [blink]
        workspace_id = "ws"
        [watch]
        executions = ["b", "y"]
        executions_file = "ids.txt"
        """,
        "conf/config.toml",
    )
    assert Path.cwd() == tmp_path  # not where ids.txt is

    config = load_config(path)

    assert config.executions == (
        ("ws", "b"),
        ("ws", "y"),
        ("ws1", "a"),
        ("ws2", "c"),
        ("ws", "z"),
    )


@pytest.mark.parametrize("bad", ["ws/a/x", "a b", "/x"])
def test_bad_line_in_executions_file_is_reported_with_its_line_number(
    write: Write, fail: Fail, tmp_path: Path, bad: str
) -> None:
    write(f"# header\nws/ok\n\n{bad}\n", "ids.txt")

    error = fail('[blink]\nworkspace_id = "ws"\n[watch]\nexecutions_file = "ids.txt"\n')

    assert error.key is not None
    assert error.key.startswith("watch.executions_file")
    assert f"{tmp_path / 'ids.txt'}:4" in str(error)


def test_missing_executions_file_is_a_config_error(fail: Fail, tmp_path: Path) -> None:
    error = fail('[watch]\nexecutions_file = "ids.txt"\n')

    assert error.key == "watch.executions_file"
    assert str(tmp_path / "ids.txt") in error.message


# --- secrets -------------------------------------------------------------------------------


def test_api_key_comes_from_blink_api_key_by_default(load: Load) -> None:
    config = load("")

    assert config.blink.api_key == Secret(API_KEY)
    assert config.blink.api_key_source == "env BLINK_API_KEY"


def test_api_key_env_names_another_variable(load: Load, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_BLINK_KEY", "  other-key-value \n")

    config = load('[blink]\napi_key_env = "MY_BLINK_KEY"\n')

    assert config.blink.api_key == Secret("other-key-value")
    assert config.blink.api_key_source == "env MY_BLINK_KEY"


def test_api_key_file_wins_over_env(load: Load, write: Write) -> None:
    key_file = write("file-key-value\n", "secrets/blink-api-key")

    config = load(f'[blink]\napi_key_file = "{key_file}"\napi_key_env = "BLINK_API_KEY"\n')

    assert config.blink.api_key == Secret("file-key-value")
    assert config.blink.api_key_source == f"file {key_file}"


def test_relative_api_key_file_resolves_in_credentials_directory(
    load: Load, write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write("credential-key\n", "creds/blink-api-key")
    write("wrong-key\n", "blink-api-key")  # beside the config: must not be used
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))

    config = load('[blink]\napi_key_file = "blink-api-key"\n')

    assert config.blink.api_key == Secret("credential-key")


def test_relative_api_key_file_without_credentials_directory_is_beside_the_config(
    write: Write, tmp_path: Path
) -> None:
    write("beside-key\n", "etc/blink-api-key")
    path = write('[blink]\napi_key_file = "blink-api-key"\n', "etc/config.toml")

    config = load_config(path)

    assert config.blink.api_key == Secret("beside-key")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("", "blink.api_key_env"),
        ('[blink]\napi_key_env = "UNSET_KEY_VAR"', "blink.api_key_env"),
        ('[blink]\napi_key_file = "missing-key"', "blink.api_key_file"),
    ],
)
def test_missing_api_key_is_an_error_naming_where_it_was_looked_for(
    fail: Fail, monkeypatch: pytest.MonkeyPatch, text: str, key: str
) -> None:
    monkeypatch.delenv("BLINK_API_KEY")
    monkeypatch.delenv("UNSET_KEY_VAR", raising=False)

    error = fail(text)

    assert error.key == key


def test_missing_api_key_error_names_the_variable(
    fail: Fail, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLINK_API_KEY", "   ")

    error = fail("")

    assert error.key == "blink.api_key_env"
    assert "BLINK_API_KEY" in error.message


def test_empty_api_key_file_is_an_error(fail: Fail, write: Write) -> None:
    write("\n\n", "blink-api-key")

    error = fail('[blink]\napi_key_file = "blink-api-key"\n')

    assert error.key == "blink.api_key_file"


def test_api_key_with_a_line_break_is_refused_without_echoing_it(fail: Fail, write: Write) -> None:
    write("first-half-of-key\nsecond-half-of-key\n", "blink-api-key")

    error = fail('[blink]\napi_key_file = "blink-api-key"\n')

    assert error.key == "blink.api_key_file"
    assert "half-of-key" not in str(error)


def test_secrets_are_not_read_when_not_resolving(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BLINK_API_KEY")
    path = write(
        WEBHOOK + 'secret_env = "UNSET_SECRET_VAR"\n[blink]\napi_key_file = "/nonexistent"\n'
    )

    config = load_config(path, resolve_secrets=False)

    assert config.blink.api_key is None
    assert config.blink.api_key_source == "file /nonexistent"
    assert config.sinks[0].secret is None  # type: ignore[union-attr]


def test_webhook_secret_from_env_and_file(
    load: Load, write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BLINK_WATCHER_WEBHOOK_SECRET", WHSEC)
    write(WHSEC + "\n", "hook-secret")

    config = load(
        WEBHOOK
        + 'secret_env = "BLINK_WATCHER_WEBHOOK_SECRET"\n'
        + '[[sinks]]\ntype = "webhook"\nurl = "https://other.example.com/"\n'
        + 'secret_file = "hook-secret"\n'
    )

    env_sink, file_sink = config.sinks
    assert isinstance(env_sink, WebhookSinkConfig)
    assert isinstance(file_sink, WebhookSinkConfig)
    assert env_sink.secret == Secret(WHSEC)
    assert env_sink.secret_source == "env BLINK_WATCHER_WEBHOOK_SECRET"
    assert file_sink.secret == Secret(WHSEC)


SLACK_URL = "https://hooks.slack.com/services/T000/B000/XXXXtoken1234567890"


def test_a_webhook_url_can_come_from_a_credential_file_or_variable(
    load: Load, write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATOPS_URL", SLACK_URL)
    write(SLACK_URL + "\n", "slack-url")

    config = load(
        '[[sinks]]\ntype = "webhook"\nurl_env = "CHATOPS_URL"\n'
        '[[sinks]]\ntype = "webhook"\nname = "teams"\nurl_file = "slack-url"\n'
    )

    env_sink, file_sink = config.sinks
    assert isinstance(env_sink, WebhookSinkConfig)
    assert isinstance(file_sink, WebhookSinkConfig)
    assert env_sink.url == file_sink.url == SLACK_URL
    assert env_sink.url_source == "env CHATOPS_URL"
    # Named as an inline URL would be, so moving the URL to a credential keeps its deliveries.
    inline = load(f'[[sinks]]\ntype = "webhook"\nurl = "{SLACK_URL}"\n').sinks[0]
    assert env_sink.name == inline.name
    assert file_sink.name == "teams"


@pytest.mark.parametrize(
    "lines",
    [
        'url = "https://a.example/x"\nurl_env = "CHATOPS_URL"\n',
        'secret_env = "X"\n',
    ],
)
def test_a_webhook_needs_exactly_one_url_source(fail: Fail, lines: str) -> None:
    error = fail('[[sinks]]\ntype = "webhook"\n' + lines)

    assert error.key == "sinks[0].url"
    assert "exactly one of url, url_env or url_file" in error.message


def test_a_credential_url_that_is_not_a_url_is_named_by_its_key_without_its_text(
    fail: Fail, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATOPS_URL", "not-a-url-but-a-token-1234567")

    error = fail('[[sinks]]\ntype = "webhook"\nurl_env = "CHATOPS_URL"\n')

    assert error.key == "sinks[0].url_env"
    assert "token-1234567" not in str(error)


def test_check_config_never_shows_a_credential_url(
    load: Load, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATOPS_URL", SLACK_URL)
    config = load('[[sinks]]\ntype = "webhook"\nurl_env = "CHATOPS_URL"\n')

    shown = effective_config_toml(config)

    assert "XXXXtoken" not in shown
    assert "<redacted, from env CHATOPS_URL>" in shown


@pytest.mark.parametrize(
    ("secret", "telltale"),
    [
        ("whsec_", "whsec_ "),
        ("whsec_not*base64*super-secret", "super-secret"),
        ("whsec_c2VjcmV0LXNlY3JldA", "c2VjcmV0"),  # unpadded
        ("hunter2hunter2", "hunter2"),
    ],
)
def test_malformed_webhook_secret_is_refused_without_echoing_it(
    fail: Fail, monkeypatch: pytest.MonkeyPatch, secret: str, telltale: str
) -> None:
    monkeypatch.setenv("HOOK_SECRET", secret)

    error = fail(WEBHOOK + 'secret_env = "HOOK_SECRET"\n')

    assert error.key == "sinks[0].secret_env"
    assert "whsec_" in error.message
    assert telltale not in str(error)


def test_malformed_webhook_secret_file_names_secret_file(fail: Fail, write: Write) -> None:
    write("not a secret at all\n", "hook-secret")

    error = fail(WEBHOOK + 'secret_file = "hook-secret"\n')

    assert error.key == "sinks[0].secret_file"
    assert "not a secret" not in str(error)


def test_unset_webhook_secret_env_is_an_error(fail: Fail) -> None:
    error = fail(WEBHOOK + 'secret_env = "BLINK_WATCHER_WEBHOOK_SECRET"\n')

    assert error.key == "sinks[0].secret_env"
    assert "BLINK_WATCHER_WEBHOOK_SECRET" in error.message


def test_secret_repr_and_str_hide_the_value(load: Load, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLINK_WATCHER_WEBHOOK_SECRET", WHSEC)
    secret = Secret("s3cr3t-value")

    assert "s3cr3t" not in repr(secret)
    assert "s3cr3t" not in str(secret)
    assert "s3cr3t" not in f"{secret!r} {secret}"
    assert secret.reveal() == "s3cr3t-value"
    config = load(WEBHOOK + 'secret_env = "BLINK_WATCHER_WEBHOOK_SECRET"\n')
    assert API_KEY not in repr(config)
    assert WHSEC.removeprefix("whsec_") not in repr(config)


# --- paths ---------------------------------------------------------------------------------


def test_keep_reported_is_seconds_as_a_float(load: Load) -> None:
    config = load("[state]\nkeep_reported = 3600\n")

    assert config.keep_reported_s == 3600.0
    assert isinstance(config.keep_reported_s, float)
    assert load("[state]\nkeep_reported = 0.5\n").keep_reported_s == 0.5


def test_a_bad_keep_reported_names_the_key_and_the_rule(fail: Fail) -> None:
    error = fail("[state]\nkeep_reported = 0\n")

    assert "state.keep_reported" in str(error)
    assert "must be > 0" in str(error)


def test_relative_state_path_resolves_in_state_directory(
    load: Load, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "var-lib"))

    assert load('[state]\npath = "w.db"\n').state_path == tmp_path / "var-lib" / "w.db"
    assert load("").state_path == tmp_path / "var-lib" / "blink-watcher.db"
    assert load('[state]\npath = "/srv/w.db"\n').state_path == Path("/srv/w.db")


def test_relative_state_path_without_state_directory_is_in_the_working_directory(
    write: Write, tmp_path: Path
) -> None:
    path = write('[state]\npath = "w.db"\n', "etc/config.toml")

    assert load_config(path).state_path == tmp_path / "w.db"


# --- effective config (check-config) -------------------------------------------------------


@pytest.fixture
def full_config(load: Load, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("BLINK_WATCHER_WEBHOOK_SECRET", WHSEC)
    return load(
        """
        [blink]
        workspace_id = "ws"
        rate_limit = 2.5
        with_apply_view = true
        [poll]
        interval = 2.0
        terminal_states = ["Completed", "Failed"]
        [watch]
        executions = ["a", "other/b"]
        [state]
        keep_reported = 3600
        [logging]
        level = "warning"
        [server]
        listen = "127.0.0.1:9100"
        [[sinks]]
        type = "log"
        name = 'q"uote back\\slash'
        states = ["Failed"]
        [[sinks]]
        type = "webhook"
        url = "https://user:url-password@hooks.example.com/blink?token=url-query-token&team=sec"
        secret_env = "BLINK_WATCHER_WEBHOOK_SECRET"
        headers = { Authorization = "Bearer header-token-value", X-Team = "secops" }
        max_attempts = 5
        """
    )


def test_effective_config_parses_back_as_toml_with_the_effective_values(
    full_config: Config,
) -> None:
    shown = tomllib.loads(effective_config_toml(full_config))

    assert shown["blink"]["base_url"] == DEFAULT_BASE_URL
    assert shown["blink"]["workspace_id"] == "ws"
    assert shown["blink"]["rate_limit"] == 2.5
    assert shown["blink"]["with_apply_view"] is True
    assert shown["blink"]["max_concurrency"] == 32
    assert shown["poll"]["interval"] == 2.0
    assert shown["poll"]["max_interval"] == 60.0
    assert shown["poll"]["terminal_states"] == ["completed", "failed"]
    assert shown["watch"]["executions"] == ["ws/a", "other/b"]
    assert shown["sinks"][0]["name"] == 'q"uote back\\slash'  # TOML escaping holds
    assert shown["logging"] == {"level": "warning", "format": "json", "journal": "auto"}
    assert shown["state"]["keep_reported"] == 3600.0
    assert shown["server"] == {"listen": "127.0.0.1:9100", "allow_remote": False}
    log_sink, hook = shown["sinks"]
    assert log_sink["type"] == "log"
    assert log_sink["states"] == ["failed"]
    assert hook["type"] == "webhook"
    assert hook["max_attempts"] == 5
    assert hook["url"] == "https://hooks.example.com"  # the path and query may be the token
    assert hook["headers"] == {"Authorization": "<redacted>", "X-Team": "<redacted>"}
    assert "env BLINK_WATCHER_WEBHOOK_SECRET" in hook["secret"]
    assert "env BLINK_API_KEY" in shown["blink"]["api_key"]


def test_effective_config_contains_no_secret(full_config: Config) -> None:
    text = effective_config_toml(full_config)

    for secret in (
        API_KEY,
        WHSEC.removeprefix("whsec_"),
        "header-token-value",
        "url-query-token",
        "url-password",
    ):
        assert secret not in text


def test_effective_config_hides_credentials_in_the_base_url(load: Load) -> None:
    config = load('[blink]\nbase_url = "https://proxy-user:proxy-pass@blink.example.com/api/v1"\n')

    text = effective_config_toml(config)

    assert "proxy-pass" not in text
    assert tomllib.loads(text)["blink"]["base_url"] == "https://blink.example.com/api/v1"


def test_effective_config_escapes_control_characters(load: Load) -> None:
    config = load('[poll]\nterminal_states = ["Done\\u007f", "Tab\\tbed"]\n')

    shown = tomllib.loads(effective_config_toml(config))

    assert shown["poll"]["terminal_states"] == ["done\x7f", "tab\tbed"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/x?token=abc&t2=def", "https://hooks.example.com/x?token=<redacted>&t2=<redacted>"),
        ("https://u:p@hooks.example.com:8443/x#frag", "https://hooks.example.com:8443/x"),
        ("http://[::1]:8080/hook?token=abc", "http://[::1]:8080/hook?token=<redacted>"),
        ("https://hooks.example.com/x", "https://hooks.example.com/x"),
    ],
)  # fmt: skip
def test_redact_url_drops_user_info_and_query_values(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize("name", ["Webhook-Id", "content-type", "USER-AGENT", "webhook-signature"])
def test_custom_headers_cannot_override_standard_ones(fail: Fail, name: str) -> None:
    error = fail(WEBHOOK + f'headers = {{ "{name}" = "x" }}\n')
    assert error.key == f"sinks[0].headers.{name}"
    assert "set by blink-watcher" in error.message


def test_an_empty_sink_list_is_an_error(fail: Fail) -> None:
    error = fail("sinks = []\n")
    assert error.key == "sinks"


def test_executions_file_resolves_next_to_the_config_file(
    load: Load, write: Write, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", str(tmp_path / "elsewhere"))
    write("ws/ex-1\n", "conf/ids.txt")
    config = load('[watch]\nexecutions_file = "ids.txt"\n', "conf/config.toml")
    assert config.executions == (("ws", "ex-1"),)


def test_an_unknown_key_is_reported_before_a_missing_api_key(
    fail: Fail, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BLINK_API_KEY")
    error = fail("[blink]\nrate_limt = 3\n")
    assert error.key == "blink.rate_limt"


def test_a_placeholder_webhook_host_is_a_warning_not_an_error(load: Load) -> None:
    config = load(WEBHOOK + '[[sinks]]\ntype = "webhook"\nurl = "https://hooks.slack.com/x"\n')

    assert len(config.warnings) == 1
    assert "sinks[0].url: https://hooks.example.com is a placeholder host" in config.warnings[0]


@pytest.mark.parametrize("bad", ["01J9?x=1", "a#b", "ws/ex%20", "ex\\y", "ex<1>", "ex\u00e9"])
def test_an_id_with_characters_no_execution_id_has_is_rejected(fail: Fail, bad: str) -> None:
    error = fail(f"[watch]\nexecutions = [{bad!r}]\n".replace("'", '"'))

    assert error.key == "watch.executions[0]"
    assert "cannot be in" in error.message


@pytest.fixture
def system_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The packaged layout (/etc/blink-watcher, /var/lib), under tmp_path."""
    from watcher.config import paths

    etc, var_lib = tmp_path / "etc" / "blink-watcher", tmp_path / "var" / "lib"
    etc.mkdir(parents=True)
    monkeypatch.setattr(paths, "SYSTEM_CONFIG_DIR", etc)
    monkeypatch.setattr(paths, "SYSTEM_STATE_ROOT", var_lib)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    return etc, var_lib


@pytest.mark.parametrize(
    ("config_name", "state_dir"),
    [("config.toml", "blink-watcher"), ("secops.toml", "blink-watcher-secops")],
)
def test_the_system_config_resolves_state_where_its_unit_keeps_it(
    system_dirs: tuple[Path, Path], config_name: str, state_dir: str
) -> None:
    # An operator running `status` by hand, as root, from their home directory,
    # must read the file the service (StateDirectory=) writes.
    etc, var_lib = system_dirs
    (etc / config_name).write_text('[state]\npath = "w.db"\n')

    assert load_config(etc / config_name).state_path == var_lib / state_dir / "w.db"


def test_state_directory_wins_over_the_system_layout(
    system_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    etc, _ = system_dirs
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "run-state"))
    (etc / "config.toml").write_text("")

    assert (
        load_config(etc / "config.toml").state_path == tmp_path / "run-state" / "blink-watcher.db"
    )


# --- [[discover]] rules and [watch] max_watches ---------------------------------------

DISCOVER_BASE = """
[blink]
workspace_id = "ws-1"
"""


def test_a_rule_with_its_defaults_and_the_cap(load: Load) -> None:
    config = load(
        DISCOVER_BASE
        + """
[watch]
max_watches = 500

[[discover]]
name = "isolation"
playbook_ids = ["pb-1", "pb-2"]
start = "1h"

[[discover]]
name = "all-ops"
workspace_id = "ws-ops"
trigger_types = ["api"]
"""
    )
    first, second = config.discover
    assert (first.name, first.workspace_id, first.playbook_ids) == (
        "isolation",
        "ws-1",
        ("pb-1", "pb-2"),
    )
    assert (first.start_back_s, first.interval_s, first.overlap_s) == (3600.0, 30.0, 120.0)
    assert first.source == "discover:isolation"
    assert (second.workspace_id, second.trigger_types, second.start_back_s) == (
        "ws-ops",
        ("api",),
        0,
    )
    assert config.max_watches == 500


def test_without_rules_nothing_is_discovered_and_the_cap_is_100000(load: Load) -> None:
    config = load(DISCOVER_BASE)
    assert config.discover == ()
    assert config.max_watches == 100_000


def test_a_malformed_start_names_its_key(fail: Fail) -> None:
    error = fail(DISCOVER_BASE + '[[discover]]\nname = "r"\nstart = "yesterday"\n')
    assert error.key == "discover[0].start"
    assert "yesterday" in error.message


def test_a_duplicate_name_names_its_key(fail: Fail) -> None:
    error = fail(DISCOVER_BASE + '[[discover]]\nname = "r"\n[[discover]]\nname = "r"\n')
    assert error.key == "discover[1].name"


def test_a_rule_needs_a_name_a_workspace_and_known_keys(fail: Fail) -> None:
    assert fail(DISCOVER_BASE + "[[discover]]\ninterval = 5\n").key == "discover[0].name"
    assert fail('[[discover]]\nname = "r"\n').key == "discover[0].workspace_id"
    assert (
        fail(DISCOVER_BASE + '[[discover]]\nname = "r"\nplaybook = "x"\n').key
        == "discover[0].playbook"
    )
    assert fail(DISCOVER_BASE + '[[discover]]\nname = "Bad Name"\n').key == "discover[0].name"
    assert (
        fail(DISCOVER_BASE + '[[discover]]\nname = "r"\ninterval = 0\n').key
        == "discover[0].interval"
    )
    assert fail(DISCOVER_BASE + "[watch]\nmax_watches = 0\n").key == "watch.max_watches"


def test_a_sink_takes_the_ending_events_unless_its_events_say_otherwise(load: Load) -> None:
    config = load(
        DISCOVER_BASE
        + """
[[sinks]]
type = "log"

[[sinks]]
type = "log"
name = "approvals"
path = "approvals.jsonl"
events = ["execution.state_changed"]
states = ["Paused"]
"""
    )
    default, approvals = config.sinks
    assert "execution.finished" in default.events
    assert "execution.state_changed" not in default.events
    assert approvals.events == frozenset({"execution.state_changed"})


def test_an_unknown_event_name_names_its_key(fail: Fail) -> None:
    error = fail(DISCOVER_BASE + '[[sinks]]\ntype = "log"\nevents = ["execution.paused"]\n')
    assert error.key == "sinks[0].events"
    assert "execution.paused" in error.message
