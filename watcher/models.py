"""What the API gives us (``Execution``), what sinks receive (``Event``), and the stored rows."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final, Literal, TypeAlias

WorkspaceId: TypeAlias = str
ExecutionId: TypeAlias = str
# (workspace_id, execution_id): what a watch is keyed by everywhere.
ExecutionKey: TypeAlias = tuple[WorkspaceId, ExecutionId]

EventType = Literal[
    "execution.finished",
    "execution.not_found",
    "execution.invalid",
    "execution.watch_timeout",
    "execution.state_changed",  # mid-run, for the sinks that ask for it
]
# The ending events: exactly one of them per watch.
EVENT_TYPES: Final[tuple[EventType, ...]] = (
    "execution.finished",
    "execution.not_found",
    "execution.invalid",
    "execution.watch_timeout",
)


def format_key(key: ExecutionKey) -> str:
    """The ``WS_ID/EXEC_ID`` spelling used in config files and on screen."""
    return f"{key[0]}/{key[1]}"


def key_fields(key: ExecutionKey) -> dict[str, str]:
    """Diagnostic fields for an execution, named as in events (``jq`` joins both)."""
    return {"execution_id": key[1], "workspace_id": key[0]}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    # bool is an int subclass; a JSON true is not a duration.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _str_map(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _int_map(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    out: dict[str, int] = {}
    for k, v in value.items():
        n = v if type(v) is int else _int(v)
        if n is not None:
            out[str(k)] = n
    return out


@dataclass(frozen=True, slots=True)
class Execution:
    """The fields of ``models.PlaybookExecutionWithSubflowNames`` that we use.

    Built leniently: the API may omit anything, send null, or send the wrong
    type; a field we cannot use becomes None (or {}), never an exception.
    """

    state: str | None = None
    state_ui: str | None = None
    duration_ms: int | None = None
    net_runtime_ms: int | None = None
    error_details: dict[str, str] = field(default_factory=dict)
    step_results: dict[str, int] = field(default_factory=dict)
    id: str | None = None
    workspace_id: str | None = None
    playbook_id: str | None = None
    playbook_name: str | None = None
    display_name: str | None = None
    execution_number: int | None = None
    started_at: int | None = None
    finished_at: int | None = None

    @classmethod
    def from_api(cls, obj: dict[str, Any]) -> Execution:
        """Parse a decoded 200 body; unknown fields are ignored."""
        # Runs on every poll, so the usual case (absent, or of the right type) is
        # tested inline and only anything else goes through the lenient helpers.
        # ``type(v) is int`` is False for a JSON true: it never passes for a number.
        g = obj.get
        errors = g("error_details")
        steps = g("step_results")
        return cls(
            state=v if type(v := g("state")) is str else None,
            state_ui=v if type(v := g("state_ui")) is str else None,
            duration_ms=v if type(v := g("duration")) is int or v is None else _int(v),
            net_runtime_ms=v if type(v := g("net_runtime_ms")) is int or v is None else _int(v),
            error_details=_str_map(errors) if errors else {},
            step_results=_int_map(steps) if steps else {},
            id=v if type(v := g("id")) is str else None,
            workspace_id=v if type(v := g("workspace_id")) is str else None,
            playbook_id=v if type(v := g("playbook_id")) is str else None,
            playbook_name=v if type(v := g("playbook_name")) is str else None,
            display_name=v if type(v := g("display_name")) is str else None,
            execution_number=v if type(v := g("execution_number")) is int or v is None else _int(v),
            started_at=v if type(v := g("started_at")) is int or v is None else _int(v),
            finished_at=v if type(v := g("finished_at")) is int or v is None else _int(v),
        )

    @property
    def reported_state(self) -> str | None:
        """``state_ui`` when non-empty, else ``state`` (what Blink's own tools show)."""
        return self.state_ui or self.state or None

    def to_record(self) -> dict[str, Any]:
        """A compact JSON-able form for the state store (API field names)."""
        record = {
            "state": self.state,
            "state_ui": self.state_ui,
            "duration": self.duration_ms,
            "net_runtime_ms": self.net_runtime_ms,
            "error_details": self.error_details,
            "step_results": self.step_results,
            "id": self.id,
            "workspace_id": self.workspace_id,
            "playbook_id": self.playbook_id,
            "playbook_name": self.playbook_name,
            "display_name": self.display_name,
            "execution_number": self.execution_number,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }
        return {k: v for k, v in record.items() if v not in (None, {})}


@lru_cache(maxsize=1024)  # asked several times per event (store, outbox, sinks)
def event_id_for(key: ExecutionKey, event: EventType) -> str:
    """Stable for (workspace, execution, event): identical across retries and restarts."""
    digest = hashlib.sha256(f"{key[0]}\x00{key[1]}\x00{event}".encode()).hexdigest()
    return f"evt_{digest[:32]}"


def rfc3339(epoch_s: float) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-11-29T08:00:00.123Z``."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


@dataclass(frozen=True, slots=True)
class Event:
    """The one result of a watch; the same JSON object goes to every sink."""

    event: EventType
    key: ExecutionKey
    state: str | None
    execution: Execution | None
    observed_at_s: float
    polls: int
    discovered_by: str | None = None  # the [[discover]] rule that found it, if one did
    previous_state: str | None = None  # execution.state_changed only

    @property
    def event_id(self) -> str:
        if self.event == "execution.state_changed":
            # One per change: the poll that saw it is committed with it, so a
            # restart resumes past it and never sees the same change again.
            digest = hashlib.sha256(
                f"{self.key[0]}\x00{self.key[1]}\x00{self.event}\x00{self.polls}".encode()
            ).hexdigest()
            return f"evt_{digest[:32]}"
        return event_id_for(self.key, self.event)

    def to_dict(self) -> dict[str, Any]:
        ex = self.execution or Execution()
        body: dict[str, Any] = {
            "event": self.event,
            "event_id": self.event_id,
            "execution_id": self.key[1],
            "workspace_id": self.key[0],
            "state": self.state,
            "duration": ex.duration_ms,
            "error_details": ex.error_details,
            "step_results": ex.step_results,
            "playbook_id": ex.playbook_id,
            "playbook_name": ex.playbook_name,
            "display_name": ex.display_name,
            "execution_number": ex.execution_number,
            "started_at": ex.started_at,
            "finished_at": ex.finished_at,
            "observed_at": rfc3339(self.observed_at_s),
            "net_runtime_ms": ex.net_runtime_ms,
            "polls": self.polls,
            "discovered_by": self.discovered_by,
        }
        if self.event == "execution.state_changed":
            body["previous_state"] = self.previous_state
        return body

    def to_json(self) -> bytes:
        """The exact bytes every sink delivers (and the webhook signature covers)."""
        text = json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)
        # The API may send a lone surrogate ("\ud800" is valid JSON) that UTF-8 cannot
        # encode. It can only sit inside a JSON string, where backslashreplace writes
        # exactly the JSON escape "\ud800": the body stays valid UTF-8 and decodes to
        # the same text, instead of the event never being produced.
        return text.encode("utf-8", "backslashreplace")


# --- stored rows -----------------------------------------------------------------------

DeliveryStatus = Literal["pending", "delivered", "dead"]


@dataclass(frozen=True, slots=True)
class WatchRow:
    """What a restart needs to resume one watch."""

    key: ExecutionKey
    state: str | None
    polls: int
    first_seen_at: float
    changed_at: float
    last_response: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Reported:
    """How an execution was reported: its one ending event (kept after retention)."""

    event_id: str
    event: str
    state: str | None
    reported_at: float  # unix seconds the event was produced


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One event's delivery to one sink, as stored in the outbox."""

    event_id: str
    sink: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: float
    last_error: str | None
    updated_at: float
    body: bytes
    key: ExecutionKey | None = None
    event: str | None = None
    created_at: float = 0.0  # when the event was produced


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An event as the store keeps it: the exact body every sink delivers."""

    event_id: str
    key: ExecutionKey
    event: str
    state: str | None
    body: bytes
    created_at: float
