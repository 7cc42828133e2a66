"""The step language: scripts of step tokens compiled into programs and per-execution counters.

What each execution answers is a *script*: a list of step tokens, one consumed
per GET, the last repeated forever::

    {"workspace_id": "ws-main", "execution_id": "ex-1",
     "steps": ["Pending", "Running", "!503", "Running", "Completed"],
     "fields": {"playbook_name": "Rotate IAM keys"}}      # merged into every 200 body

    # bulk: ex-0 ... ex-99999 share one compiled step list
    {"workspace_id": "ws-bench", "id_prefix": "ex-", "count": 100000, "steps": [...]}

    # timeline: the step is chosen by seconds since the execution's first GET
    {"workspace_id": "ws-lat", "execution_id": "ex-1",
     "timeline": [[0, "Running"], [2.5, "Completed"]]}

Step tokens (:func:`parse_step` is the authority)::

    NAME              200, state = state_ui = NAME (any name, e.g. "completed", "Weird-New-State")
    state=NAME        200, state = NAME, state_ui = ""
    ui=NAME           200, state = "", state_ui = NAME
    !400 !401 !403 !404 !500 !502 !503     that status, ErrorWrapper body
    !429 / !429:S     429, Retry-After: S (default "1", sent verbatim), ErrorWrapper body
    !html             502, a load balancer's HTML page
    !empty            500, empty body
    !reset            the connection is aborted without a response (note: an aiohttp
                      client retries a GET once by itself after that, consuming the
                      next step too; use "!reset", "!reset" to make it see the error)
    !slow:S           wait S seconds, then answer as the most recent state step (Pending if none)
    !truncated        200, Content-Length larger than what is sent, then the connection closes
    !notjson          200, application/json, a body that is not JSON
    !nonutf8          200, a JSON body with invalid UTF-8 bytes in an unknown field
    !wrongtypes       200, JSON with wrong types in the fields the watcher uses
    !huge             200, ~8 MiB of valid JSON (padding in an unknown field)

``!truncated``, ``!nonutf8`` and ``!huge`` carry the most recent state like
``!slow`` does, but are faults: they never count as "a terminal 200 was
served" in the bookkeeping. ``fields`` overrides apply to every 200 body built
from a state, not to ``!wrongtypes`` (which exists to have wrong types).
"""

from __future__ import annotations

import bisect
import math
import re
import time
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from watcher.sim.playbooks import PLAYBOOKS_BY_NAME, Playbook

Script: TypeAlias = Mapping[str, Any]
"""One execution script (or a bulk range of them); see the module docstring."""

# The sim's own bookkeeping (requests_after_terminal, terminal_at) uses the
# watcher's default terminal set, looked at via state_ui-else-state.
TERMINAL_STATES: Final = frozenset(
    {"completed", "failed", "cancelled", "canceled", "timeout", "skipped"}
)

# Names look like states; this rejects typos such as "503" for "!503" or "Runing "
# with stray punctuation while accepting any real or invented state name.
_STATE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9 _.-]*")
_ERROR_STATUSES: Final = frozenset({400, 401, 403, 404, 500, 502, 503})


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class Step:
    """One compiled API step token."""

    kind: str  # "state", "error", "html", "empty", "reset", "slow", "truncated", ...
    token: str
    state: str = ""
    state_ui: str = ""
    status: int = 200
    retry_after: str | None = None
    delay_s: float = 0.0


PENDING: Final = Step("state", "Pending", "Pending", "Pending")
_SIMPLE_FAULTS: Final = frozenset(
    {"html", "empty", "reset", "truncated", "notjson", "nonutf8", "wrongtypes", "huge"}
)


def parse_seconds(token: str, text: str) -> float:
    """The ``S`` of a ``...:S`` token; raises ValueError naming the token."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"step token {token!r}: {text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"step token {token!r}: seconds must be finite and >= 0")
    return value


def parse_step(token: object) -> Step:
    """Compile one API step token; raises ValueError naming an unknown token."""
    if not isinstance(token, str):
        raise ValueError(f"step token {token!r} is not a string")
    if token.startswith("!"):
        word, _, arg = token[1:].partition(":")
        if word == "429":
            retry_after = arg if arg else "1"
            parse_seconds(token, retry_after)
            return Step("error", token, status=429, retry_after=retry_after)
        if word == "slow" and arg:
            return Step("slow", token, delay_s=parse_seconds(token, arg))
        if not arg and word.isdigit() and int(word) in _ERROR_STATUSES:
            return Step("error", token, status=int(word))
        if not arg and word in _SIMPLE_FAULTS:
            return Step(word, token)
        raise ValueError(f"unknown step token {token!r}")
    prefix, sep, name = token.partition("=")
    if sep and prefix in ("state", "ui") and _STATE_NAME.fullmatch(name):
        if prefix == "state":
            return Step("state", token, state=name)
        return Step("state", token, state_ui=name)
    if _STATE_NAME.fullmatch(token):
        return Step("state", token, state=token, state_ui=token)
    raise ValueError(f"unknown step token {token!r}")


def reported(state: object, state_ui: object) -> str | None:
    """The state Blink's own tools show: state_ui when non-empty, else state."""
    if isinstance(state_ui, str) and state_ui:
        return state_ui
    if isinstance(state, str) and state:
        return state
    return None


def _is_terminal(state: str | None) -> bool:
    return state is not None and state.casefold() in TERMINAL_STATES


# ------------------------------------------------------------------------- programs


@dataclass(frozen=True, slots=True, eq=False)
class Program:
    """A compiled step list, shared by every execution of one script."""

    steps: tuple[Step, ...]
    # For each index: the state step a 200 at that index shows (itself for a
    # state step, the most recent state step for !slow/!huge/...).
    shown: tuple[Step, ...]
    # For each index: does serving it mean "a terminal 200 was served"?
    terminal: tuple[bool, ...]
    offsets: tuple[float, ...] | None  # timeline form: seconds since the first GET
    first_terminal_offset_s: float | None
    fields: Mapping[str, Any] | None
    # A script naming a known playbook gets that playbook's inputs, errors, ...
    playbook: Playbook | None


def _compile_program(
    steps: Sequence[Step], offsets: Sequence[float] | None, fields: Mapping[str, Any] | None
) -> Program:
    shown: list[Step] = []
    terminal: list[bool] = []
    recent = PENDING
    for step in steps:
        if step.kind == "state":
            recent = step
        shown.append(recent)
        if step.kind in ("state", "slow"):
            state: object = recent.state
            state_ui: object = recent.state_ui
            if fields is not None:
                state = fields.get("state", state)
                state_ui = fields.get("state_ui", state_ui)
            terminal.append(_is_terminal(reported(state, state_ui)))
        else:
            terminal.append(False)
    name = None if fields is None else fields.get("playbook_name")
    first_terminal: float | None = None
    if offsets is not None and True in terminal:
        first_terminal = offsets[terminal.index(True)]
    return Program(
        steps=tuple(steps),
        shown=tuple(shown),
        terminal=tuple(terminal),
        offsets=None if offsets is None else tuple(offsets),
        first_terminal_offset_s=first_terminal,
        fields=fields,
        playbook=PLAYBOOKS_BY_NAME.get(name) if isinstance(name, str) else None,
    )


@dataclass(frozen=True, slots=True)
class ListMeta:
    """How a script's executions show in the list endpoint (see watcher.sim.listing)."""

    created_at_ms: int  # the first execution's created_at
    every_ms: float = 0.0  # a bulk range: execution i is created i * every_ms later
    listed_after_ms: int = 0  # late visibility: listed this long after its created_at
    playbook_id: str | None = None
    trigger_type: str | None = None


class Group:
    """One script: a single execution or a bulk range sharing one program.

    Per execution only fixed-size counters are kept (24 bytes each), so a
    100,000-execution bulk range costs about 2.4 MB, not 100,000 dicts.
    """

    __slots__ = (
        "after_terminal",
        "count",
        "execution_id",
        "first_at",
        "listing",
        "prefix",
        "program",
        "requests",
        "served_terminal_at",
        "workspace_id",
    )

    def __init__(
        self,
        workspace_id: str,
        program: Program,
        *,
        execution_id: str | None = None,
        prefix: str = "",
        count: int = 1,
        listing: ListMeta | None = None,
    ) -> None:
        self.workspace_id = workspace_id
        self.listing = listing or ListMeta(int(time.time() * 1000))
        self.execution_id = execution_id
        self.prefix = prefix
        self.count = count
        self.program = program
        self.requests = array("I", [0]) * count
        self.after_terminal = array("I", [0]) * count
        self.first_at = array("d", [0.0]) * count  # 0.0: never requested
        self.served_terminal_at = array("d", [0.0]) * count  # 0.0: no terminal 200 yet

    def execution_id_at(self, index: int) -> str:
        """The ID of the execution at ``index`` (always the one ID for an exact script)."""
        return self.execution_id if self.execution_id is not None else f"{self.prefix}{index}"

    def listed_state(self, index: int, now: float) -> str:
        """The state the list shows: the one its last GET served (its first before any)."""
        program = self.program
        n = self.requests[index]
        if program.offsets is None:
            at = max(0, min(n, len(program.steps)) - 1)
        else:
            first = self.first_at[index]
            at = 0 if not first else bisect.bisect_right(program.offsets, now - first) - 1
        step = program.shown[at]
        return step.state or step.state_ui

    def terminal_at(self, index: int) -> float | None:
        """Wall time the execution at ``index`` became terminal, or None."""
        first_terminal = self.program.first_terminal_offset_s
        if self.program.offsets is None:
            served = self.served_terminal_at[index]
            return served if served else None
        first_at = self.first_at[index]
        if not first_at or first_terminal is None:
            return None
        at = first_at + first_terminal
        # Not terminal yet is not "terminal at a future time".
        return at if time.time() >= at else None


# -------------------------------------------------------------------------- scripts


_SCRIPT_KEYS: Final = frozenset(
    {"workspace_id", "execution_id", "id_prefix", "count", "steps", "timeline", "fields"}
    | {"created_at", "created_every", "listed_after", "playbook_id", "trigger_type"}
)


def _list_meta(script: Script) -> ListMeta:
    def number(key: str, default: float) -> float:
        value = script.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"script {key} must be a number >= 0: {value!r}")
        return float(value)

    def text(key: str) -> str | None:
        value = script.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"script {key} must be a string: {value!r}")
        return value

    return ListMeta(
        created_at_ms=int(number("created_at", time.time() * 1000)),
        every_ms=number("created_every", 0.0),
        listed_after_ms=int(number("listed_after", 0.0) * 1000),
        playbook_id=text("playbook_id"),
        trigger_type=text("trigger_type"),
    )


def _path_segment(script: Script, key: str, *, allow_empty: bool = False) -> str:
    value = script.get(key)
    if not isinstance(value, str) or (not value and not allow_empty) or "/" in value:
        raise ValueError(f"script {key} must be a non-empty string without '/': {value!r}")
    return value


def compile_script(script: Script) -> Group:
    """Validate and compile one script; raises ValueError saying what is wrong."""
    if not isinstance(script, Mapping):
        raise ValueError(f"a script must be an object, not {type(script).__name__}")
    unknown = set(script) - _SCRIPT_KEYS
    if unknown:
        raise ValueError(f"unknown script keys: {', '.join(sorted(map(str, unknown)))}")
    workspace_id = _path_segment(script, "workspace_id")

    fields = script.get("fields")
    if fields is not None and not isinstance(fields, Mapping):
        raise ValueError("script fields must be an object")

    if ("steps" in script) == ("timeline" in script):
        raise ValueError("a script needs exactly one of 'steps' and 'timeline'")
    offsets: list[float] | None = None
    if "steps" in script:
        raw_steps = script["steps"]
        if not isinstance(raw_steps, list) or not raw_steps:
            raise ValueError("script steps must be a non-empty list of tokens")
        steps = [parse_step(token) for token in raw_steps]
    else:
        timeline = script["timeline"]
        if not isinstance(timeline, list) or not timeline:
            raise ValueError("script timeline must be a non-empty list of [seconds, token]")
        offsets, steps = [], []
        for entry in timeline:
            if (
                not isinstance(entry, list | tuple)
                or len(entry) != 2
                or isinstance(entry[0], bool)
                or not isinstance(entry[0], int | float)
            ):
                raise ValueError(f"timeline entry {entry!r} is not [seconds, token]")
            offset = float(entry[0])
            if not math.isfinite(offset) or offset < 0 or (offsets and offset < offsets[-1]):
                raise ValueError(f"timeline offsets must be >= 0 and non-decreasing: {entry!r}")
            offsets.append(offset)
            steps.append(parse_step(entry[1]))
        if offsets[0] > 0:  # before the first entry the execution is simply queued
            offsets.insert(0, 0.0)
            steps.insert(0, PENDING)
    program = _compile_program(steps, offsets, None if fields is None else dict(fields))

    if "execution_id" in script:
        if "id_prefix" in script or "count" in script:
            raise ValueError("a script has either execution_id or id_prefix + count")
        return Group(
            workspace_id,
            program,
            execution_id=_path_segment(script, "execution_id"),
            listing=_list_meta(script),
        )
    count = script.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"bulk script count must be a positive integer: {count!r}")
    prefix = _path_segment(script, "id_prefix", allow_empty=True)
    return Group(workspace_id, program, prefix=prefix, count=count, listing=_list_meta(script))
