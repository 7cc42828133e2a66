"""``blink-watcher watch``: follow a few executions in the foreground, for a person.

No state store and no sinks: the real ``Scheduler`` and ``BlinkClient`` with an
in-memory ``WatchStore``, a ``LiveTable`` for progress, and a summary at the
end. Exit 0 if every execution ended Completed, 1 otherwise (or when the API
rejects the key), 2 on usage errors, 78 on a bad config file, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from watcher import logs as wlogging
from watcher.cli.live import LiveTable
from watcher.cli.rows import Row, playbook_of
from watcher.config import (
    DEFAULT_BASE_URL,
    BlinkConfig,
    PollConfig,
    Secret,
    load_config,
    parse_config,
    split_execution,
)
from watcher.errors import EX_FAILURE, EX_INTERRUPTED, EX_OK, EX_USAGE, AuthError, ConfigError
from watcher.models import Event, Execution, ExecutionKey, WatchRow
from watcher.scheduler import Fetcher, Scheduler

API_KEY_ENV: Final = "BLINK_API_KEY"


class UsageError(Exception):
    """The command line cannot work; ``str()`` is the one line shown (exit 2)."""


class WatchAborted(Exception):
    """Watching cannot go on (the API rejects the key); ``str()`` is shown (exit 1)."""


@dataclass(frozen=True, slots=True)
class WatchPlan:
    """Everything ``watch`` needs, resolved from flags, environment and config."""

    blink: BlinkConfig
    poll: PollConfig
    keys: tuple[ExecutionKey, ...]
    log_level: str = "warning"


# --- the command line -----------------------------------------------------------------------


def parse_ids(raw_ids: Sequence[str], default_ws: str | None) -> tuple[ExecutionKey, ...]:
    """``EXEC_ID`` (in ``default_ws``) or ``WS_ID/EXEC_ID``, duplicates dropped, order kept.

    The config file's rules (``config.split_execution``), with messages naming the flags.
    """
    keys: dict[ExecutionKey, None] = {}  # an insertion-ordered set
    for raw in raw_ids:
        try:
            ws, ex = split_execution(raw, default_ws or "")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if not ws:
            raise UsageError(
                f"{ex!r} has no workspace: pass --workspace WS or write it as WS_ID/{ex}"
            )
        keys[(ws, ex)] = None
    return tuple(keys)


def _config_path(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    path: str | None = getattr(args, "config", None)
    if path:
        return path  # named on the command line: a missing file is a config error (78)
    # Unlike the daemon, watch works without any config file, so the variable
    # only counts when it names a file we can read.
    env = environ.get("BLINK_WATCHER_CONFIG")
    if env and os.path.isfile(env) and os.access(env, os.R_OK):
        return env
    return None


def _checked_base_url(url: str, allow_insecure_http: bool) -> str:
    # config.py owns the URL rules (https, or http on loopback only): run the
    # flag through them rather than keep a second copy of those rules here.
    try:
        config = parse_config(
            {"blink": {"base_url": url, "allow_insecure_http": allow_insecure_http}},
            "--base-url",
            resolve_secrets=False,
        )
    except ConfigError as exc:
        raise UsageError(f"--base-url: {exc.message}") from None
    return config.blink.base_url


def _checked_workspace(workspace: str | None) -> str | None:
    if workspace is not None and (
        not workspace.strip() or "/" in workspace or any(c.isspace() for c in workspace)
    ):
        raise UsageError(f"--workspace {workspace!r} is not a workspace ID")
    return workspace


def plan_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> WatchPlan:
    """Resolve the API settings and IDs; ``UsageError`` (exit 2) or ``ConfigError`` (78).

    With a config file (``-c`` or a readable ``$BLINK_WATCHER_CONFIG``) its
    ``[blink]`` and ``[poll]`` settings apply; without one the key comes from
    ``$BLINK_API_KEY``. ``--workspace`` and ``--base-url`` override either way.
    ``environ`` (default ``os.environ``) is where this function looks; a config
    file's own ``api_key_env`` is read by config.py from ``os.environ``.
    """
    env = os.environ if environ is None else environ
    workspace = _checked_workspace(args.workspace)
    path = _config_path(args, env)
    log_level = "warning"
    if path is not None:
        config = load_config(path)
        blink, poll = config.blink, config.poll
        if config.log_level == "error":
            log_level = "error"
    else:
        key = env.get(API_KEY_ENV, "").strip()
        if not key:
            raise UsageError(f"${API_KEY_ENV} is not set (export it, or pass -c FILE)")
        if any(c in key for c in "\r\n\x00"):
            raise UsageError(f"${API_KEY_ENV} contains a line break or NUL byte")
        blink = BlinkConfig(api_key=Secret(key), api_key_source=f"env {API_KEY_ENV}")
        poll = PollConfig()
    if args.base_url is not None or path is None:
        url = args.base_url if args.base_url is not None else DEFAULT_BASE_URL
        blink = replace(blink, base_url=_checked_base_url(url, blink.allow_insecure_http))
    if workspace is not None:
        blink = replace(blink, workspace_id=workspace)
    if args.interval is not None:
        interval = float(args.interval)
        if not math.isfinite(interval) or interval <= 0:
            raise UsageError(f"--interval must be a positive number of seconds, got {interval}")
        # The interval still grows while a state is unchanged, but never below
        # what was asked for.
        poll = replace(poll, interval_s=interval, max_interval_s=max(poll.max_interval_s, interval))
    keys = parse_ids(args.ids, blink.workspace_id)
    return WatchPlan(blink=blink, poll=poll, keys=keys, log_level=log_level)


# --- the pieces around the real scheduler ---------------------------------------------------


class MemoryStore:
    """The scheduler's ``WatchStore`` kept in memory: a one-off watch resumes nothing.

    ``on_change`` runs after each saved change (a new state, or the first answer),
    which is exactly when the progress view has something new to show.
    """

    def __init__(self, on_change: Callable[[WatchRow], None] | None = None) -> None:
        self.rows: dict[ExecutionKey, WatchRow] = {}
        self._on_change = on_change

    def save_watch(self, row: WatchRow) -> None:
        self.rows[row.key] = row
        if self._on_change is not None:
            self._on_change(row)

    async def room(self) -> None:
        return None  # memory: no write backlog to wait for

    def forget_watch(self, key: ExecutionKey) -> None:
        self.rows.pop(key, None)

    async def last_response(self, key: ExecutionKey) -> dict[str, object] | None:
        row = self.rows.get(key)
        return None if row is None else row.last_response


class RecordingClient:
    """Wraps a ``Fetcher``: remembers each execution's last answer, notices auth failures.

    The scheduler keeps only states; the table also wants playbook names.
    """

    def __init__(self, inner: Fetcher) -> None:
        self._inner = inner
        self.last: dict[ExecutionKey, Execution] = {}
        self.auth_error: AuthError | None = None
        self.auth_failed = asyncio.Event()

    async def get_execution(self, key: ExecutionKey) -> Execution:
        try:
            execution = await self._inner.get_execution(key)
        except AuthError as exc:
            self.auth_error = exc
            self.auth_failed.set()
            raise
        self.last[key] = execution
        return execution


class _Run:
    """One ``watch`` run: the scheduler, what it produced, and the rows for the table."""

    def __init__(
        self, plan: WatchPlan, fetcher: Fetcher, table: LiveTable, wall: Callable[[], float]
    ) -> None:
        self.plan = plan
        self.table = table
        self.wall = wall
        self.client = RecordingClient(fetcher)
        self.events: dict[ExecutionKey, Event] = {}
        self.scheduler = Scheduler(
            plan.poll,
            self.client,
            MemoryStore(lambda _row: self.refresh()),
            self._on_event,
            concurrency=plan.blink.max_concurrency,
            wall=wall,
        )
        self.scheduler.add_many(list(plan.keys), {})
        # Remembered now: once a watch ends the scheduler forgets it.
        self.first_seen = {
            key: watch.first_seen_at
            for key in plan.keys
            if (watch := self.scheduler.get(key)) is not None
        }

    async def _on_event(self, event: Event) -> None:
        self.events[event.key] = event
        self.refresh()

    def rows(self) -> list[Row]:
        now = self.wall()
        rows = []
        for key in self.plan.keys:
            playbook = playbook_of(self.client.last.get(key))
            event = self.events.get(key)
            watch = self.scheduler.get(key)
            if event is not None:
                rows.append(Row.from_event(event, self.first_seen.get(key), playbook))
            elif watch is not None:
                rows.append(Row.from_watch(watch, now, playbook))
            else:  # pragma: no cover - every key is watched until its event
                rows.append(Row(key))
        return rows

    def refresh(self) -> None:
        try:
            self.table.update(self.rows())
        except BrokenPipeError:
            # Whoever read our output (`| head`) is gone; keep watching for the exit code.
            self.table.close()

    async def _tick(self) -> None:
        # On a TTY elapsed times and poll counts move between state changes.
        while True:
            await asyncio.sleep(LiveTable.REFRESH_S)
            self.refresh()

    async def run(self) -> list[Event]:
        self.refresh()
        async with asyncio.TaskGroup() as tg:
            tasks: list[asyncio.Task[Any]] = [tg.create_task(self.scheduler.run())]
            if self.table.tty:
                tasks.append(tg.create_task(self._tick()))
            done = tg.create_task(self.scheduler.all_done.wait())
            auth = tg.create_task(self.client.auth_failed.wait())
            await asyncio.wait({done, auth}, return_when=asyncio.FIRST_COMPLETED)
            for task in (*tasks, done, auth):
                task.cancel()
        if done.done() and not done.cancelled():
            self.refresh()
            return [self.events[key] for key in self.plan.keys]
        # The scheduler would keep polling at max_interval, which suits a
        # daemon waiting for a reload; a person at a terminal must fix the key.
        raise WatchAborted(f"the Blink API rejected the API key: {self.client.auth_error}")


async def run_watch(
    plan: WatchPlan,
    table: LiveTable,
    *,
    fetcher: Fetcher | None = None,
    wall: Callable[[], float] = time.time,
) -> list[Event]:
    """Watch ``plan.keys`` until each has its event; the events in ``plan.keys`` order.

    Shows progress on ``table`` but not the summary (the caller decides).
    ``fetcher`` replaces the ``BlinkClient`` built from ``plan.blink`` (tests).
    Raises ``WatchAborted`` when the API rejects the key.
    """
    if fetcher is not None:
        return await _Run(plan, fetcher, table, wall).run()
    # Imported here: aiohttp takes about half a second to import, which a
    # usage error (or --help) should not have to wait for.
    from watcher.blink import BlinkClient

    async with BlinkClient(plan.blink) as client:
        return await _Run(plan, client, table, wall).run()


def all_completed(events: Sequence[Event]) -> bool:
    """Did every watch end with a terminal ``Completed`` (any case)?"""
    return all(
        e.event == "execution.finished" and (e.state or "").casefold() == "completed"
        for e in events
    )


def _fail(message: str) -> None:
    print(f"blink-watcher: {message}", file=sys.stderr, flush=True)


def watch(args: argparse.Namespace) -> int:
    """``blink-watcher watch``: the process exit code (``ConfigError`` propagates: 78)."""
    try:
        plan = plan_from_args(args)
    except UsageError as exc:
        _fail(str(exc))
        return EX_USAGE
    assert plan.blink.api_key is not None  # resolved by load_config or from the environment
    wlogging.register_secret(plan.blink.api_key.reveal())
    table = LiveTable(sys.stdout)
    # Diagnostics stay on stderr, warnings and up only, and on a TTY they are
    # printed above the table so a redraw does not tear them apart.
    log_stream = table.diagnostics_stream(sys.stderr) if table.tty else sys.stderr
    wlogging.configure(plan.log_level, "console", stream=log_stream)
    with table:
        try:
            events = asyncio.run(run_watch(plan, table))
        except KeyboardInterrupt:
            table.close()  # the cursor first, then the message below the table
            _fail("interrupted")
            return EX_INTERRUPTED
        except WatchAborted as exc:
            table.close()
            _fail(str(exc))
            return EX_FAILURE
        with contextlib.suppress(BrokenPipeError):  # `| head` may stop reading early
            table.finish(events)
    return EX_OK if all_completed(events) else EX_FAILURE
