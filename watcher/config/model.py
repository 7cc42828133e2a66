"""The frozen, validated config objects the daemon is built from."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

from watcher.models import ExecutionKey

if TYPE_CHECKING:
    from watcher.config.shared import SharedState

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
KEEP_REPORTED_S: Final = 7 * 86400.0  # a week: time to look into a result, then it goes
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
# [logging] journal: native journal entries when the stream is the journal ("auto"),
# always ("on"), or never ("off").
JournalMode: TypeAlias = Literal["auto", "on", "off"]
JOURNAL_MODES: Final[tuple[JournalMode, ...]] = ("auto", "on", "off")
WHITESPACE: Final = re.compile(r"\s")
# Webhook headers a [[sinks]] headers table may not override (case-insensitive).
RESERVED_HEADERS: Final = frozenset(
    {"content-type", "content-length", "user-agent", "webhook-id", "webhook-timestamp",
     "webhook-signature", "host"}
)  # fmt: skip
# RFC 9110 field-name (a token): "X Team" is refused by servers and "X:Team" would be
# sent as header "X" with value "Team: ...".
HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


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


# The four ending events a sink takes by default, and the optional mid-run one.
ENDING_EVENTS: Final = frozenset(
    {"execution.finished", "execution.not_found", "execution.invalid", "execution.watch_timeout"}
)
STATE_CHANGED: Final = "execution.state_changed"
EVENT_NAMES: Final = ENDING_EVENTS | {STATE_CHANGED}


@dataclass(frozen=True, slots=True)
class LogSinkConfig:
    name: str
    path: Path | None = None  # None: standard output
    states: frozenset[str] | None = None
    events: frozenset[str] = ENDING_EVENTS  # which events it takes (docs/contract.md)
    # [logging] journal, for a sink on standard output.
    journal: JournalMode = "auto"
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
    url: str  # "" until resolved when it comes from url_env / url_file
    url_source: str | None = None  # "env VAR" / "file PATH" when the URL is a credential
    secret: Secret | None = None
    secret_source: str | None = None
    timeout_s: float = 10.0
    max_attempts: int = 12
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    max_in_flight: int = 8
    headers: tuple[tuple[str, str], ...] = ()
    states: frozenset[str] | None = None
    events: frozenset[str] = ENDING_EVENTS  # which events it takes (docs/contract.md)
    allow_insecure_http: bool = False
    type: Literal["webhook"] = "webhook"


SinkConfig: TypeAlias = LogSinkConfig | WebhookSinkConfig


def accepts(sink: SinkConfig, state: str | None, event: str = "execution.finished") -> bool:
    """The sink's ``events`` list and ``states`` filter (case-insensitive; none: every state)."""
    if event not in sink.events:
        return False
    return sink.states is None or (state is not None and state.casefold() in sink.states)


def wants_state_changes(sinks: tuple[SinkConfig, ...]) -> bool:
    """Does any sink take ``execution.state_changed``? (Else none is produced at all.)"""
    return any(STATE_CHANGED in s.events for s in sinks)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9464
    allow_remote: bool = False
    # The watch API's bearer token; None leaves every /v1 route answering 403.
    # Not compared: a reload reads a fresh Secret, and the token is not restart-only.
    api_token: Secret | None = field(default=None, compare=False)
    api_token_source: str | None = None


MAX_WATCHES: Final = 100_000


@dataclass(frozen=True, slots=True)
class DiscoverRule:
    """One ``[[discover]]`` table, validated (docs/discovery.md)."""

    name: str
    workspace_id: str
    playbook_ids: tuple[str, ...] = ()
    trigger_types: tuple[str, ...] = ()
    start_back_s: float = 0.0  # "now" = 0: on the first start, how far back to look
    interval_s: float = 30.0
    overlap_s: float = 120.0

    @property
    def source(self) -> str:
        """How its watches are marked in the store."""
        return f"discover:{self.name}"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole, validated configuration."""

    file: str
    blink: BlinkConfig
    poll: PollConfig
    executions: tuple[ExecutionKey, ...]
    state_path: Path
    # How long a reported execution's event body and delivery rows stay in the
    # store; a compact row per execution stays for good, so it is never watched again.
    keep_reported_s: float = KEEP_REPORTED_S
    # A PostgreSQL database shared by replicas instead of the SQLite file (docs/replicas.md).
    shared_state: SharedState | None = None
    log_level: str = "info"
    log_format: Literal["json", "console"] = "json"
    log_journal: JournalMode = "auto"
    server: ServerConfig | None = None
    sinks: tuple[SinkConfig, ...] = field(default_factory=tuple)
    discover: tuple[DiscoverRule, ...] = ()
    max_watches: int = MAX_WATCHES  # watches in progress at most: discovery waits at the cap
    # Valid but probably not meant (a placeholder URL): shown by check-config, logged at start.
    warnings: tuple[str, ...] = ()
