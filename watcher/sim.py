"""The simulated Blink API and a webhook receiver, on one loopback aiohttp server.

The demo, the integration tests and the benchmark all run against this, so it
answers ``GET /api/v1/workspace/{ws_id}/executions/{id}`` the way the real API
does (every field of ``models.PlaybookExecutionWithSubflowNames``, errors as
``api_responses.ErrorWrapper``) and can inject every fault the SPEC names.

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

``POST /hooks/{name}`` is the webhook receiver: every request is recorded as a
:class:`Delivery`, and a per-name token list (``200 204 400 410 500 503 429
429:S drop slow:S``, last repeated, default ``["200"]``) decides the answer.

Control endpoints for a simulator run in another process (no API key needed,
it is a loopback test tool): ``GET /_sim/stats``, ``POST /_sim/scripts`` (JSON
list of scripts), ``POST /_sim/hooks/{name}`` (JSON list of tokens),
``POST /_sim/api-key`` (``{"key": "..."}``).

Run it alone with ``python -m watcher.sim --scripts FILE.json``; it prints one
JSON line (``base_url``, ``hooks_base``, ``port``) once listening and serves
until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import hmac
import json
import math
import os
import re
import signal
import ssl
import sys
import time
import zlib
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeAlias

from aiohttp import web

Script: TypeAlias = Mapping[str, Any]
"""One execution script (or a bulk range of them); see the module docstring."""

API_PREFIX: Final = "/api/v1"
# The sim's own bookkeeping (requests_after_terminal, terminal_at) uses the
# watcher's default terminal set, looked at via state_ui-else-state.
TERMINAL_STATES: Final = frozenset(
    {"completed", "failed", "cancelled", "canceled", "timeout", "skipped"}
)
HUGE_BODY_BYTES: Final = 8 << 20

DEMO_MISSING_EXECUTION_ID: Final = "01HZZX0M1SS1NG0000000000NF"
"""An ID :func:`demo_scripts` deliberately does not script: the demo's 404 case."""

# Names look like states; this rejects typos such as "503" for "!503" or "Runing "
# with stray punctuation while accepting any real or invented state name.
_STATE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9 _.-]*")
_ERROR_STATUSES: Final = frozenset({400, 401, 403, 404, 500, 502, 503})
_HOOK_STATUSES: Final = frozenset(range(200, 600))
_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_MASK64: Final = (1 << 64) - 1


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class _Step:
    kind: str  # "state", "error", "html", "empty", "reset", "slow", "truncated", ...
    token: str
    state: str = ""
    state_ui: str = ""
    status: int = 200
    retry_after: str | None = None
    delay_s: float = 0.0


_PENDING: Final = _Step("state", "Pending", "Pending", "Pending")
_SIMPLE_FAULTS: Final = frozenset(
    {"html", "empty", "reset", "truncated", "notjson", "nonutf8", "wrongtypes", "huge"}
)


def _seconds(token: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"step token {token!r}: {text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"step token {token!r}: seconds must be finite and >= 0")
    return value


def parse_step(token: object) -> _Step:
    """Compile one API step token; raises ValueError naming an unknown token."""
    if not isinstance(token, str):
        raise ValueError(f"step token {token!r} is not a string")
    if token.startswith("!"):
        word, _, arg = token[1:].partition(":")
        if word == "429":
            retry_after = arg if arg else "1"
            _seconds(token, retry_after)
            return _Step("error", token, status=429, retry_after=retry_after)
        if word == "slow" and arg:
            return _Step("slow", token, delay_s=_seconds(token, arg))
        if not arg and word.isdigit() and int(word) in _ERROR_STATUSES:
            return _Step("error", token, status=int(word))
        if not arg and word in _SIMPLE_FAULTS:
            return _Step(word, token)
        raise ValueError(f"unknown step token {token!r}")
    prefix, sep, name = token.partition("=")
    if sep and prefix in ("state", "ui") and _STATE_NAME.fullmatch(name):
        if prefix == "state":
            return _Step("state", token, state=name)
        return _Step("state", token, state_ui=name)
    if _STATE_NAME.fullmatch(token):
        return _Step("state", token, state=token, state_ui=token)
    raise ValueError(f"unknown step token {token!r}")


@dataclass(frozen=True, slots=True)
class _HookStep:
    status: int | None  # None: drop the connection
    retry_after: str | None = None
    delay_s: float = 0.0


def parse_hook_step(token: object) -> _HookStep:
    """Compile one webhook receiver token; raises ValueError naming an unknown token."""
    if not isinstance(token, str):
        raise ValueError(f"hook token {token!r} is not a string")
    word, _, arg = token.partition(":")
    if word == "429":
        retry_after = arg if arg else "1"
        _seconds(token, retry_after)
        return _HookStep(429, retry_after=retry_after)
    if word == "slow" and arg:
        return _HookStep(200, delay_s=_seconds(token, arg))
    if token == "drop":
        return _HookStep(None)
    if not arg and word.isdigit() and int(word) in _HOOK_STATUSES:
        return _HookStep(int(word))
    raise ValueError(f"unknown hook token {token!r}")


def _reported(state: object, state_ui: object) -> str | None:
    # What Blink's own tools show: state_ui when non-empty, else state.
    if isinstance(state_ui, str) and state_ui:
        return state_ui
    if isinstance(state, str) and state:
        return state
    return None


def _is_terminal(state: str | None) -> bool:
    return state is not None and state.casefold() in TERMINAL_STATES


# ------------------------------------------------------------------------- programs


@dataclass(frozen=True, slots=True, eq=False)
class _Program:
    """A compiled step list, shared by every execution of one script."""

    steps: tuple[_Step, ...]
    # For each index: the state step a 200 at that index shows (itself for a
    # state step, the most recent state step for !slow/!huge/...).
    shown: tuple[_Step, ...]
    # For each index: does serving it mean "a terminal 200 was served"?
    terminal: tuple[bool, ...]
    offsets: tuple[float, ...] | None  # timeline form: seconds since the first GET
    first_terminal_offset_s: float | None
    fields: Mapping[str, Any] | None
    # A script naming a known playbook gets that playbook's inputs, errors, ...
    playbook: _Playbook | None


def _compile_program(
    steps: Sequence[_Step], offsets: Sequence[float] | None, fields: Mapping[str, Any] | None
) -> _Program:
    shown: list[_Step] = []
    terminal: list[bool] = []
    recent = _PENDING
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
            terminal.append(_is_terminal(_reported(state, state_ui)))
        else:
            terminal.append(False)
    name = None if fields is None else fields.get("playbook_name")
    first_terminal: float | None = None
    if offsets is not None and True in terminal:
        first_terminal = offsets[terminal.index(True)]
    return _Program(
        steps=tuple(steps),
        shown=tuple(shown),
        terminal=tuple(terminal),
        offsets=None if offsets is None else tuple(offsets),
        first_terminal_offset_s=first_terminal,
        fields=fields,
        playbook=_PLAYBOOKS_BY_NAME.get(name) if isinstance(name, str) else None,
    )


class _Group:
    """One script: a single execution or a bulk range sharing one program.

    Per execution only fixed-size counters are kept (24 bytes each), so a
    100,000-execution bulk range costs about 2.4 MB, not 100,000 dicts.
    """

    __slots__ = (
        "after_terminal",
        "count",
        "execution_id",
        "first_at",
        "prefix",
        "program",
        "requests",
        "served_terminal_at",
        "workspace_id",
    )

    def __init__(
        self,
        workspace_id: str,
        program: _Program,
        *,
        execution_id: str | None = None,
        prefix: str = "",
        count: int = 1,
    ) -> None:
        self.workspace_id = workspace_id
        self.execution_id = execution_id
        self.prefix = prefix
        self.count = count
        self.program = program
        self.requests = array("I", [0]) * count
        self.after_terminal = array("I", [0]) * count
        self.first_at = array("d", [0.0]) * count  # 0.0: never requested
        self.served_terminal_at = array("d", [0.0]) * count  # 0.0: no terminal 200 yet

    def execution_id_at(self, index: int) -> str:
        return self.execution_id if self.execution_id is not None else f"{self.prefix}{index}"

    def terminal_at(self, index: int) -> float | None:
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


_SCRIPT_KEYS: Final = frozenset(
    {"workspace_id", "execution_id", "id_prefix", "count", "steps", "timeline", "fields"}
)


def _path_segment(script: Script, key: str, *, allow_empty: bool = False) -> str:
    value = script.get(key)
    if not isinstance(value, str) or (not value and not allow_empty) or "/" in value:
        raise ValueError(f"script {key} must be a non-empty string without '/': {value!r}")
    return value


def _compile_script(script: Script) -> _Group:
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
            steps.insert(0, _PENDING)
    program = _compile_program(steps, offsets, None if fields is None else dict(fields))

    if "execution_id" in script:
        if "id_prefix" in script or "count" in script:
            raise ValueError("a script has either execution_id or id_prefix + count")
        return _Group(workspace_id, program, execution_id=_path_segment(script, "execution_id"))
    count = script.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"bulk script count must be a positive integer: {count!r}")
    prefix = _path_segment(script, "id_prefix", allow_empty=True)
    return _Group(workspace_id, program, prefix=prefix, count=count)


# ------------------------------------------------------------------- realistic data


def _ulid(seed: int, prefix: str = "01HZ") -> str:
    """A deterministic 26-character ULID-looking ID (Crockford base32)."""
    chars = [prefix]
    x = (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK64
    for _ in range(26 - len(prefix)):
        x = (x * 6364136223846793005 + 1442695040888963407) & _MASK64
        chars.append(_CROCKFORD[x >> 59])
    return "".join(chars)


@dataclass(frozen=True, slots=True)
class _Playbook:
    name: str
    slug: str
    trigger_type: str
    steps_total: int
    failing_step: str
    failure: str
    inputs: Mapping[str, Any]
    event: Mapping[str, Any]
    subflows: Mapping[str, str]
    timezone: str = ""

    @property
    def playbook_id(self) -> str:
        return _PLAYBOOK_IDS[self.slug]

    @property
    def pack_id(self) -> str:
        return "pack_01HZZ" + self.slug.upper().replace("-", "")[:8]


_PLAYBOOKS: Final[tuple[_Playbook, ...]] = (
    _Playbook(
        name="Isolate compromised host",
        slug="isolate-compromised-host",
        trigger_type="Webhook",
        steps_total=7,
        failing_step="Contain host in CrowdStrike",
        failure="CrowdStrike API returned 403: API client lacks the Hosts:Write scope",
        inputs={"hostname": "wks-fin-0412", "severity": "high"},
        event={"source": "crowdstrike", "detection_id": "ldt:4f2a9c:88213"},
        subflows={"subflow_ref_1": "Notify on-call", "subflow_ref_2": "Open incident ticket"},
    ),
    _Playbook(
        name="Rotate IAM keys",
        slug="rotate-iam-keys",
        trigger_type="Scheduled",
        steps_total=6,
        failing_step="Deactivate old access key",
        failure="AccessDenied: iam:UpdateAccessKey on user svc-deploy",
        inputs={"account_id": "123456789012", "max_key_age_days": 90},
        event={"schedule": "0 3 * * 1"},
        subflows={"subflow_ref_1": "Post to #secops"},
        timezone="America/New_York",
    ),
    _Playbook(
        name="Enrich phishing IOC",
        slug="enrich-phishing-ioc",
        trigger_type="Event",
        steps_total=5,
        failing_step="Query VirusTotal",
        failure="VirusTotal quota exceeded (429) after 3 attempts",
        inputs={"ioc": "hxxps://login-m1crosoft[.]com/auth", "ioc_type": "url"},
        event={"source": "email-gateway", "message_id": "<CAF3x9@mail.example.com>"},
        subflows={"subflow_ref_1": "Lookup URL reputation"},
    ),
    _Playbook(
        name="Restart pod",
        slug="restart-pod",
        trigger_type="Manual",
        steps_total=4,
        failing_step="kubectl rollout restart",
        failure='deployments.apps "checkout" is forbidden for service account blink-runner',
        inputs={"namespace": "payments", "deployment": "checkout"},
        event={"requested_by": "oncall@acme.example"},
        subflows={},
    ),
    _Playbook(
        name="Block malicious IP on firewall",
        slug="block-malicious-ip",
        trigger_type="Webhook",
        steps_total=5,
        failing_step="Push block rule to Palo Alto",
        failure="commit failed: another commit is in progress on fw-edge-01",
        inputs={"ip": "203.0.113.77", "ttl_hours": 24},
        event={"source": "siem", "rule": "Brute force from single IP"},
        subflows={"subflow_ref_1": "Check IP allowlist"},
    ),
    _Playbook(
        name="Offboard departing employee",
        slug="offboard-employee",
        trigger_type="Manual",
        steps_total=9,
        failing_step="Transfer Google Drive ownership",
        failure="Drive transfer API timed out after 300 s",
        inputs={"employee_email": "j.doe@acme.example", "manager_email": "a.lee@acme.example"},
        event={"ticket": "HR-2291"},
        subflows={"subflow_ref_1": "Revoke SaaS sessions", "subflow_ref_2": "Archive mailbox"},
    ),
    _Playbook(
        name="Triage GuardDuty finding",
        slug="triage-guardduty-finding",
        trigger_type="Event",
        steps_total=6,
        failing_step="Describe EC2 instance",
        failure="InvalidInstanceID.NotFound: i-0a1b2c3d4e5f67890",
        inputs={"finding_type": "UnauthorizedAccess:EC2/SSHBruteForce", "region": "eu-west-1"},
        event={"source": "aws.guardduty", "finding_id": "8ec3b2f0c1d94e6a"},
        subflows={"subflow_ref_1": "Enrich AWS resource"},
    ),
    _Playbook(
        name="Disable compromised Okta user",
        slug="disable-okta-user",
        trigger_type="Webhook",
        steps_total=4,
        failing_step="Wait for analyst approval",
        failure="no approval within the step timeout (3600 s)",
        inputs={"user": "m.smith@acme.example", "reason": "impossible travel"},
        event={"source": "okta", "event_type": "security.threat.detected"},
        subflows={},
    ),
    _Playbook(
        name="Quarantine suspicious email",
        slug="quarantine-suspicious-email",
        trigger_type="Event",
        steps_total=4,
        failing_step="Move message to quarantine",
        failure="Graph API returned 404: message already deleted by the user",
        inputs={"mailbox": "finance@acme.example", "message_id": "AAMkAGI2TG93AAA="},
        event={"source": "microsoft-defender", "alert_id": "da637291085411733957"},
        subflows={"subflow_ref_1": "Notify reporter"},
    ),
)
_PLAYBOOK_IDS: Final = {pb.slug: _ulid(zlib.crc32(pb.slug.encode()), "01HY") for pb in _PLAYBOOKS}
_PLAYBOOKS_BY_NAME: Final = {pb.name: pb for pb in _PLAYBOOKS}


# ------------------------------------------------------------------------ receiver


@dataclass(slots=True)
class Delivery:
    """One request the webhook receiver got.

    ``headers`` keys are lower-cased; ``status`` is the status answered, or
    None when no response reached the client (``drop``, or the client gave up
    during ``slow``).
    """

    name: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    status: int | None = None

    def event(self) -> Any:
        """The decoded JSON body (raises ValueError when it is not JSON)."""
        return json.loads(self.body)


# ----------------------------------------------------------------------- simulator


class Simulator:
    """The simulated Blink API and webhook receiver on one loopback aiohttp server.

    Use as an async context manager; ``port=0`` picks a free port. Scripts and
    hook scripts may be added while it runs. Stopping twice is harmless.
    """

    def __init__(
        self,
        *,
        api_key: str,
        scripts: Iterable[Script] = (),
        hook_scripts: Mapping[str, list[str]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._api_key = api_key.encode()
        self._host = host
        self._port = port
        self._ssl_context = ssl_context  # serve https (tests of certificates and tunnels)
        self._exact: dict[tuple[str, str], _Group] = {}
        self._bulk: dict[str, list[_Group]] = {}  # per workspace, newest first
        self._unknown_requests: dict[tuple[str, str], int] = {}
        self._hook_steps: dict[str, tuple[_HookStep, ...]] = {}
        self._hook_cursor: dict[str, int] = {}
        self._workspace_ids: dict[str, dict[str, str]] = {}
        self._huge_padding: bytes | None = None
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._loaded_at = time.time()
        self.total_requests = 0
        """Every GET of an execution, including 401s and 404s."""
        self.auth_failures = 0
        self.apply_view_seen = False
        self.deliveries: list[Delivery] = []
        self.add_scripts(scripts)
        for name, tokens in (hook_scripts or {}).items():
            self.set_hook_script(name, tokens)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Simulator:
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        # 16 MiB: a control POST of scripts may be large; events are small.
        app = web.Application(client_max_size=16 << 20)
        # allow_head=False: a HEAD must not consume a step.
        app.router.add_get(
            API_PREFIX + "/workspace/{ws_id}/executions/{id}", self._handle_get, allow_head=False
        )
        app.router.add_post("/hooks/{name}", self._handle_hook)
        app.router.add_get("/_sim/stats", self._handle_stats)
        app.router.add_post("/_sim/scripts", self._handle_add_scripts)
        app.router.add_post("/_sim/hooks/{name}", self._handle_set_hook)
        app.router.add_post("/_sim/api-key", self._handle_set_key)
        # No access log: it would cost more than the simulated GET in a benchmark.
        # handler_cancellation: a client that gives up (timeout during !slow or
        # slow:S) cancels the handler, so the delivery is not recorded as answered.
        # shutdown_timeout: do not wait out a long !slow when stopping.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port, ssl_context=self._ssl_context)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop serving; harmless when already stopped."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def port(self) -> int:
        """The port listened on (the real one when constructed with ``port=0``)."""
        if self._bound_port is None:
            raise RuntimeError("simulator not started")
        return self._bound_port

    @property
    def origin(self) -> str:
        """``http://HOST:PORT`` (``https://`` when serving TLS)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API base URL, ``http://HOST:PORT/api/v1``."""
        return self.origin + API_PREFIX

    @property
    def hooks_base(self) -> str:
        """``http://HOST:PORT/hooks``; a receiver's URL is this plus ``/NAME``."""
        return self.origin + "/hooks"

    def hook_url(self, name: str) -> str:
        """The URL of the webhook receiver called ``name``."""
        return f"{self.hooks_base}/{name}"

    # ---------------------------------------------------------------- scripting

    def add_scripts(self, scripts: Iterable[Script]) -> None:
        """Add (or replace) execution scripts; all are validated before any is added.

        An exact execution script wins over a bulk range covering the same ID;
        among bulk ranges the newest wins. Replacing a script resets its counters.
        """
        groups = [_compile_script(script) for script in scripts]
        for group in groups:
            if group.execution_id is not None:
                self._exact[(group.workspace_id, group.execution_id)] = group
            else:
                self._bulk.setdefault(group.workspace_id, []).insert(0, group)

    def set_hook_script(self, name: str, tokens: list[str]) -> None:
        """Set the receiver ``name``'s answers, one token per request, last repeated."""
        if not isinstance(tokens, list) or not tokens:
            raise ValueError(f"hook script for {name!r} must be a non-empty list of tokens")
        self._hook_steps[name] = tuple(parse_hook_step(token) for token in tokens)
        self._hook_cursor[name] = 0

    def set_api_key(self, key: str) -> None:
        """Change the key the API accepts (to turn auth failures on and off)."""
        self._api_key = key.encode()

    # ------------------------------------------------------------------ inspection

    def _resolve(self, workspace_id: str, execution_id: str) -> tuple[_Group, int] | None:
        group = self._exact.get((workspace_id, execution_id))
        if group is not None:
            return group, 0
        for group in self._bulk.get(workspace_id, ()):
            if not execution_id.startswith(group.prefix):
                continue
            digits = execution_id[len(group.prefix) :]
            # Only the canonical spelling: "ex-7", not "ex-07" or non-ASCII digits.
            if digits.isascii() and digits.isdigit() and (digits == "0" or digits[0] != "0"):
                index = int(digits)
                if index < group.count:
                    return group, index
        return None

    def requests_for(self, workspace_id: str, execution_id: str) -> int:
        """GETs received for this execution, faults included, 401s excluded."""
        found = self._resolve(workspace_id, execution_id)
        if found is None:
            return self._unknown_requests.get((workspace_id, execution_id), 0)
        group, index = found
        return group.requests[index]

    def requests_after_terminal(self, workspace_id: str, execution_id: str) -> int:
        """GETs received after a 200 with a terminal state was served for it."""
        found = self._resolve(workspace_id, execution_id)
        if found is None:
            return 0
        group, index = found
        return group.after_terminal[index]

    def terminal_at(self, workspace_id: str, execution_id: str) -> float | None:
        """Wall time the execution became terminal, or None (not yet / never).

        Timeline form: its first GET plus the offset of the first terminal
        entry. Steps form: when the first terminal 200 was served.
        """
        found = self._resolve(workspace_id, execution_id)
        return None if found is None else found[0].terminal_at(found[1])

    def delivered_events(self) -> list[Any]:
        """Decoded bodies of the deliveries answered 2xx, in arrival order.

        Raises ValueError if one of them is not JSON: the watcher must only send JSON.
        """
        return [
            d.event() for d in self.deliveries if d.status is not None and 200 <= d.status < 300
        ]

    def stats(self) -> dict[str, Any]:
        """A JSON-able summary (also served at ``GET /_sim/stats``).

        ``requests``, ``after_terminal`` and ``terminal_at`` map ``"ws/id"``
        to a value for every execution requested at least once (bulk ranges
        included; unscripted IDs appear in ``requests`` only).
        """
        requests: dict[str, int] = {}
        after_terminal: dict[str, int] = {}
        terminal_at: dict[str, float] = {}
        groups = [*self._exact.values(), *(g for gs in self._bulk.values() for g in gs)]
        for group in groups:
            counts = group.requests
            for index in _nonzero(counts):
                key = f"{group.workspace_id}/{group.execution_id_at(index)}"
                requests[key] = counts[index]
                after_terminal[key] = group.after_terminal[index]
                at = group.terminal_at(index)
                if at is not None:
                    terminal_at[key] = at
        for (workspace_id, execution_id), count in self._unknown_requests.items():
            requests[f"{workspace_id}/{execution_id}"] = count
        deliveries = []
        for d in self.deliveries:
            try:
                body = d.event()
            except ValueError:
                body = None
            event_id = body.get("event_id") if isinstance(body, dict) else None
            deliveries.append(
                {
                    "name": d.name,
                    "status": d.status,
                    "event_id": event_id,
                    "webhook_id": d.headers.get("webhook-id"),
                    "received_at": d.received_at,
                }
            )
        return {
            "total_requests": self.total_requests,
            "auth_failures": self.auth_failures,
            "apply_view_seen": self.apply_view_seen,
            "requests": requests,
            "after_terminal": after_terminal,
            "terminal_at": terminal_at,
            "deliveries": deliveries,
        }

    # ---------------------------------------------------------------- the API

    async def _handle_get(self, request: web.Request) -> web.StreamResponse:
        self.total_requests += 1
        key = request.headers.get("BLINK-API-KEY")
        if key is None or not hmac.compare_digest(key.encode(), self._api_key):
            # Checked before anything else, like the real API, and without
            # consuming a step: auth failures are not polls of the execution.
            self.auth_failures += 1
            return _error_response(401)
        if request.query.get("withApplyView") == "true":
            self.apply_view_seen = True
        workspace_id = request.match_info["ws_id"]
        execution_id = request.match_info["id"]
        found = self._resolve(workspace_id, execution_id)
        if found is None:
            k = (workspace_id, execution_id)
            self._unknown_requests[k] = self._unknown_requests.get(k, 0) + 1
            return _error_response(404)

        group, index = found
        now = time.time()
        n = group.requests[index]
        group.requests[index] = n + 1
        if n == 0:
            group.first_at[index] = now
        if group.served_terminal_at[index]:
            group.after_terminal[index] += 1
        program = group.program
        if program.offsets is None:
            at = n if n < len(program.steps) else len(program.steps) - 1
        else:
            at = bisect.bisect_right(program.offsets, now - group.first_at[index]) - 1
        step = program.steps[at]
        kind = step.kind

        if kind == "state":
            body = self._execution_body(group, index, program.shown[at], n, now)
            self._served(group, index, program, at, now)
            return _json_response(body)
        if kind == "error":
            return _error_response(step.status, step.retry_after)
        if kind == "slow":
            await asyncio.sleep(step.delay_s)
            now = time.time()
            body = self._execution_body(group, index, program.shown[at], n, now)
            self._served(group, index, program, at, now)
            return _json_response(body)
        if kind == "reset":
            if request.transport is not None:
                request.transport.abort()
            return web.Response()  # never written: the transport is gone
        if kind == "html":
            return web.Response(status=502, body=_HTML_502, content_type="text/html")
        if kind == "empty":
            return web.Response(status=500)
        if kind == "notjson":
            return web.Response(body=_NOT_JSON, content_type="application/json")
        if kind == "wrongtypes":
            return _json_response(_wrong_types_body(workspace_id, execution_id))
        body = self._execution_body(group, index, program.shown[at], n, now)
        if kind == "nonutf8":
            # A lenient decoder still finds the state; a strict one must not crash.
            return web.Response(
                body=b'{"note": "caf\xe9 \xff\xfe", ' + _dumps(body)[1:],
                content_type="application/json",
            )
        if kind == "huge":
            if self._huge_padding is None:
                self._huge_padding = b"x" * HUGE_BODY_BYTES
            return web.Response(
                body=_dumps(body)[:-1] + b', "padding": "' + self._huge_padding + b'"}',
                content_type="application/json",
            )
        assert kind == "truncated", kind
        return await _truncated_response(request, _dumps(body))

    @staticmethod
    def _served(group: _Group, index: int, program: _Program, at: int, now: float) -> None:
        if program.terminal[at] and not group.served_terminal_at[index]:
            group.served_terminal_at[index] = now

    def _workspace_consts(self, workspace_id: str) -> dict[str, str]:
        # Per-workspace IDs are computed once: scripted workspaces are few.
        consts = self._workspace_ids.get(workspace_id)
        if consts is None:
            seed = zlib.crc32(workspace_id.encode())
            consts = {
                "tenant_id": _ulid(seed + 1),
                "ctrl_id": _ulid(seed + 2),
                "runner_id": _ulid(seed + 3),
                "runner_group_id": _ulid(seed + 4),
                "app_id": _ulid(seed + 5),
            }
            self._workspace_ids[workspace_id] = consts
        return consts

    def _execution_body(
        self, group: _Group, index: int, shown: _Step, n: int, now: float
    ) -> dict[str, Any]:
        workspace_id = group.workspace_id
        execution_id = group.execution_id_at(index)
        program = group.program
        fields = program.fields
        # Everything "random" derives from the execution's identity, so it is
        # stable across polls without storing anything per execution.
        h = zlib.crc32(f"{workspace_id}/{execution_id}".encode())
        pb = program.playbook or _PLAYBOOKS[h % len(_PLAYBOOKS)]
        consts = self._workspace_consts(workspace_id)
        number = 1 + (h >> 8) % 9000
        now_ms = int(now * 1000)
        created_ms = int(group.first_at[index] * 1000) - 1500 - (h >> 4) % 3000
        state = _reported(shown.state, shown.state_ui) or ""
        folded = state.casefold()
        started_ms = 0 if folded == "pending" else created_ms + 120 + (h >> 12) % 400
        terminal = folded in TERMINAL_STATES
        total = pb.steps_total
        error_details: dict[str, str] = {}
        cancel_reason = ""
        if terminal:
            if program.offsets is not None and program.first_terminal_offset_s is not None:
                finished_s = group.first_at[index] + program.first_terminal_offset_s
            else:
                finished_s = group.served_terminal_at[index] or now
            finished_ms = max(int(finished_s * 1000), started_ms)
            duration_ms = finished_ms - started_ms if started_ms else 0
            # Net runtime excludes time spent waiting (approvals, queues).
            net_runtime_ms = duration_ms * 17 // 20
            done = (h >> 16) % (total - 1)
            if folded == "completed":
                skipped = (h >> 20) % 2
                step_results = {"completed": total - skipped, "failed": 0, "skipped": skipped}
            elif folded == "failed":
                step_results = {"completed": done, "failed": 1, "skipped": total - done - 1}
                error_details = {pb.failing_step: pb.failure}
            elif folded == "timeout":
                step_results = {"completed": done, "failed": 1, "skipped": total - done - 1}
                error_details = {
                    pb.failing_step: "execution exceeded its timeout of 3600000 ms",
                }
            elif folded == "skipped":
                step_results = {"completed": 0, "failed": 0, "skipped": total}
            else:  # cancelled / canceled
                step_results = {"completed": done, "failed": 0, "skipped": total - done}
                cancel_reason = "Cancelled by analyst a.lee@acme.example from the Blink UI"
        else:
            finished_ms = 0
            duration_ms = now_ms - started_ms if started_ms else 0
            net_runtime_ms = 0
            progressed = 0 if not started_ms else min(n, total - 1)
            step_results = {"completed": progressed, "failed": 0, "skipped": 0}
        body: dict[str, Any] = {
            "app_id": consts["app_id"],
            "async_parent_execution_id": "",
            "cancel_reason": cancel_reason,
            "created_at": created_ms,
            "created_by": "svc-automation@acme.example",
            "ctrl_id": consts["ctrl_id"],
            "display_name": f"{pb.name} #{number}",
            "draft_execution_number": 0,
            "duration": duration_ms,
            "engine_v2_compile_error": "",
            "engine_version": "v2",
            "error_details": error_details,
            "event": pb.event,
            "execution_depth": 0,
            "execution_number": number,
            "finished_at": finished_ms,
            "id": execution_id,
            "input_values_origin_exec_id": "",
            "inputs": pb.inputs,
            "last_playbook_name": pb.name,
            "name": pb.name,
            "net_runtime_ms": net_runtime_ms,
            "pack_id": pb.pack_id,
            "parent_execution_id": "",
            "playbook": pb.slug,
            "playbook_deleted": False,
            "playbook_id": pb.playbook_id,
            "playbook_name": pb.name,
            "runner_cluster_version": "1.29.4",
            "runner_group_id": consts["runner_group_id"],
            "runner_id": consts["runner_id"],
            "runner_version": "2.41.0",
            "scheduled_trigger_timezone": pb.timezone,
            "started_at": started_ms,
            "state": shown.state,
            "state_ui": shown.state_ui,
            "step_results": step_results,
            "subflows_reference_to_name_mapping": pb.subflows,
            "tenant_id": consts["tenant_id"],
            "test_session_id": "",
            "timeout": 3600000,
            "top_execution_id": execution_id,
            "top_execution_started_at": started_ms,
            "trigger_type": pb.trigger_type,
            "type": "playbook",
            "updated_at": finished_ms or now_ms,
            "updated_by": "svc-automation@acme.example",
            "version": f"v{3 + h % 9}",
            "with_concurrency_limit": False,
            "workspace_id": workspace_id,
        }
        if fields:
            body.update(fields)
        return body

    # ------------------------------------------------------------ the receiver

    async def _handle_hook(self, request: web.Request) -> web.StreamResponse:
        received_at = time.time()
        name = request.match_info["name"]
        body = await request.read()
        delivery = Delivery(
            name=name,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            received_at=received_at,
        )
        self.deliveries.append(delivery)
        steps = self._hook_steps.get(name, _DEFAULT_HOOK_SCRIPT)
        cursor = self._hook_cursor.get(name, 0)
        self._hook_cursor[name] = cursor + 1
        step = steps[min(cursor, len(steps) - 1)]
        if step.status is None:
            if request.transport is not None:
                request.transport.abort()
            return web.Response()  # never written
        if step.delay_s:
            # Cancelled here (handler_cancellation) if the client gives up,
            # leaving status None: the delivery never got an answer.
            await asyncio.sleep(step.delay_s)
        delivery.status = step.status
        if step.status == 204:
            return web.Response(status=204)
        if step.status == 200:
            return web.json_response({"ok": True})
        headers = {"Retry-After": step.retry_after} if step.retry_after is not None else None
        return web.json_response(
            {"ok": False, "error": f"receiver answered {step.status}"},
            status=step.status,
            headers=headers,
        )

    # ------------------------------------------------------------ control

    async def _handle_stats(self, request: web.Request) -> web.StreamResponse:
        return _json_response(self.stats())

    async def _handle_add_scripts(self, request: web.Request) -> web.StreamResponse:
        try:
            scripts = await request.json()
            if not isinstance(scripts, list):
                raise ValueError("expected a JSON list of scripts")
            self.add_scripts(scripts)
        except ValueError as exc:  # JSONDecodeError is a ValueError
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True, "added": len(scripts)})

    async def _handle_set_hook(self, request: web.Request) -> web.StreamResponse:
        try:
            tokens = await request.json()
            self.set_hook_script(request.match_info["name"], tokens)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _handle_set_key(self, request: web.Request) -> web.StreamResponse:
        try:
            payload = await request.json()
            key = payload.get("key") if isinstance(payload, dict) else None
            if not isinstance(key, str):
                raise ValueError('expected {"key": "..."}')
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.set_api_key(key)
        return web.json_response({"ok": True})


_DEFAULT_HOOK_SCRIPT: Final = (_HookStep(200),)


def _nonzero(counts: array[int]) -> Iterable[int]:
    return (i for i, c in enumerate(counts) if c)


def _dumps(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _json_response(obj: object) -> web.Response:
    return web.Response(body=_dumps(obj), content_type="application/json")


_ERRORS: Final[Mapping[int, tuple[str, str, str]]] = {
    400: ("invalid_argument", "invalid execution id", "the execution id is missing or malformed"),
    401: ("unauthorized", "unauthorized", "missing or invalid BLINK-API-KEY header"),
    403: ("forbidden", "forbidden", "the API key has no access to this workspace"),
    404: ("not_found", "execution not found", "no execution with this id in the workspace"),
    429: ("rate_limited", "too many requests", "API rate limit exceeded, retry later"),
    500: ("internal", "internal server error", "an unexpected error occurred"),
    502: ("bad_gateway", "bad gateway", "upstream service returned an invalid response"),
    503: ("unavailable", "service unavailable", "the service is temporarily unavailable"),
}


def _error_response(status: int, retry_after: str | None = None) -> web.Response:
    identifier, message, details = _ERRORS[status]
    body = {
        "data": {},
        "details": details,
        "identifier": identifier,
        "message": message,
        "status": status,
        "user_error": {},
    }
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return web.Response(
        status=status, body=_dumps(body), content_type="application/json", headers=headers
    )


async def _truncated_response(request: web.Request, body: bytes) -> web.StreamResponse:
    # Promise the whole body, send half, close: the client sees a payload
    # error ("not enough data to satisfy content length"), not a clean EOF.
    response = web.StreamResponse()
    response.content_type = "application/json"
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.close()
    return response


_HTML_502: Final = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>awselb/2.0</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_NOT_JSON: Final = b"{'state': 'Running', 'duration': 1523}  -- upstream debug dump\n"


def _wrong_types_body(workspace_id: str, execution_id: str) -> dict[str, Any]:
    return {
        "id": execution_id,
        "workspace_id": workspace_id,
        "state": 42,
        "state_ui": ["Running"],
        "duration": "abc",
        "net_runtime_ms": "fast",
        "step_results": [1, 2],
        "error_details": "x",
        "started_at": "yesterday",
        "finished_at": {"ms": 1},
        "execution_number": "12",
        "display_name": 7,
        "playbook_name": None,
        "playbook_id": False,
        "inputs": "none",
        "event": [],
        "subflows_reference_to_name_mapping": 3,
        "created_at": 1.5,
    }


# ---------------------------------------------------------------------------- demo


def demo_scripts(
    workspace_id: str = "ws-demo", other_workspace_id: str = "ws-ops"
) -> list[dict[str, Any]]:
    """A realistic mix of executions for the product demo, each ending in 2-8 polls.

    Quick successes, a failure with error_details, a cancellation, a timeout,
    transient API faults on the way, a Paused phase, a lowercase terminal
    state, one execution in a second workspace and one that answers 400.
    :data:`DEMO_MISSING_EXECUTION_ID` is deliberately not scripted (404).
    """

    def script(
        execution_id: str, playbook: str, steps: list[str], workspace: str = workspace_id
    ) -> dict[str, Any]:
        # Naming a known playbook gives the body that playbook's inputs and errors.
        return {
            "workspace_id": workspace,
            "execution_id": execution_id,
            "steps": steps,
            "fields": {"playbook_name": playbook},
        }

    return [
        script(
            "01HZZX1ENR1CHPH1SH1NG00001", "Enrich phishing IOC", ["Pending", "Running", "Completed"]
        ),
        # state only, state_ui empty: the watcher must fall back to state.
        script(
            "01HZZX2R0TATE1AMKEYS000002",
            "Rotate IAM keys",
            ["Running", "Running", "state=Running", "state=Completed"],
        ),
        script(
            "01HZZX3S0XATEH0ST000000003",
            "Isolate compromised host",
            ["Pending", "Running", "Running", "Failed"],
        ),
        script(
            "01HZZX4BX0CK1P000000000004",
            "Block malicious IP on firewall",
            ["Running", "Running", "Cancelled"],
        ),
        # Transient faults on the way; each retry consumes a step. Two resets in a
        # row because aiohttp retries a GET once by itself after a disconnect.
        script(
            "01HZZX5GVARDDVTYTR1AGE0005",
            "Triage GuardDuty finding",
            ["Pending", "!503", "Running", "!reset", "!reset", "!429:0.2", "!html", "Completed"],
        ),
        # Blink's own tooling stops on Paused; a daemon must keep watching.
        script(
            "01HZZX60FFB0ARDEMP10YEE006",
            "Offboard departing employee",
            ["Running", "Paused", "Paused", "Running", "Completed"],
        ),
        script(
            "01HZZX7QVARANT1NEEMA1X0007", "Quarantine suspicious email", ["Running", "completed"]
        ),
        script(
            "01HZZX8D1SAB0KTAVSER000008",
            "Disable compromised Okta user",
            ["Running", "Running", "!500", "Timeout"],
        ),
        script(
            "01HZZX9RESTARTP0D000000009",
            "Restart pod",
            ["Pending", "Running", "Completed"],
            workspace=other_workspace_id,
        ),
        {"workspace_id": workspace_id, "execution_id": "not-an-execution-id", "steps": ["!400"]},
    ]


# ----------------------------------------------------------------------------- CLI


def _load_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


async def _serve(args: argparse.Namespace, api_key: str) -> None:
    scripts: list[Script] = []
    if args.scripts:
        loaded = _load_json(args.scripts)
        scripts.extend(loaded if isinstance(loaded, list) else [loaded])
    if args.demo:
        scripts.extend(demo_scripts())
    hook_scripts = _load_json(args.hook_scripts) if args.hook_scripts else None
    if hook_scripts is not None and not isinstance(hook_scripts, dict):
        raise ValueError(f"{args.hook_scripts}: expected an object of name -> tokens")
    sim = Simulator(
        api_key=api_key, scripts=scripts, hook_scripts=hook_scripts, host=args.host, port=args.port
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Signal handlers only set state; the coroutine below does the stopping.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with sim:
        line = {"base_url": sim.base_url, "hooks_base": sim.hooks_base, "port": sim.port}
        print(json.dumps(line), flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m watcher.sim``: serve the simulator until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m watcher.sim", description="Simulated Blink API and webhook receiver."
    )
    parser.add_argument("--scripts", help="JSON file: a list of execution scripts")
    parser.add_argument("--hook-scripts", help="JSON file: {receiver name: [tokens]}")
    parser.add_argument(
        "--api-key-env", default="BLINK_API_KEY", help="env var holding the accepted API key"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--demo", action="store_true", help="also load demo_scripts()")
    args = parser.parse_args(argv)
    api_key = os.environ.get(args.api_key_env)
    if not api_key:
        print(f"sim: error: ${args.api_key_env} is not set", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args, api_key))
    except ValueError as exc:
        print(f"sim: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken
        print(f"sim: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
