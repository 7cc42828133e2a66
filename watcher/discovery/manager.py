"""The daemon's discovery rules: one task each, started, stopped and swapped on reload."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from watcher.config import DiscoverRule
from watcher.discovery.page import ExecutionPage
from watcher.discovery.rule import CursorStore, Lister, RuleRunner
from watcher.errors import StoreError
from watcher.models import ExecutionKey
from watcher.scheduler import Scheduler

log = structlog.get_logger("watcher.discovery")

Spawn = Callable[[str, Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]

SOURCE_PREFIX = "discover:"


class _Current:
    """The client the daemon runs now: a reload may replace it between two queries."""

    def __init__(self, get: Callable[[], Lister]) -> None:
        self._get = get

    async def list_executions(self, workspace_id: str, query: dict[str, Any]) -> ExecutionPage:
        return await self._get().list_executions(workspace_id, query)


class Discovery:
    """Every ``[[discover]]`` rule of the running config."""

    def __init__(
        self,
        *,
        client: Callable[[], Lister],
        store: CursorStore,
        scheduler: Scheduler,
        max_watches: Callable[[], int],
        spawn: Spawn,
        holds: Callable[[str], bool] = lambda rule: True,
    ) -> None:
        self._client = _Current(client)
        self._store = store
        self._scheduler = scheduler
        self._max_watches = max_watches
        self._spawn = spawn
        self._holds = holds  # replicas: whether this one lists the rule now
        self.runners: dict[str, RuleRunner] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    def resumed(self, sources: dict[ExecutionKey, str]) -> None:
        """Mark the stored watches a rule found, so their events say which."""
        for key, source in sources.items():
            if source.startswith(SOURCE_PREFIX):
                self._scheduler.discovered_by[key] = source.removeprefix(SOURCE_PREFIX)

    def start(self, rules: tuple[DiscoverRule, ...]) -> None:
        for rule in rules:
            self._start(rule)

    def _start(self, rule: DiscoverRule) -> None:
        runner = RuleRunner(
            rule,
            client=self._client,
            store=self._store,
            room=lambda: self._max_watches() - len(self._scheduler),
            hand_over=self._hand_over,
            is_watched=self._scheduler.__contains__,
            held=lambda: self._holds(rule.name),
        )
        self.runners[rule.name] = runner
        self._tasks[rule.name] = self._spawn(f"discover {rule.name}", runner.run())

    def settled(self) -> bool:
        """Has every rule listed to the end at least once (``run --exit-when-done``)?"""
        return all(r.state.sweeps > 0 or not r.held() for r in self.runners.values())

    def _hand_over(self, keys: list[ExecutionKey], rule: str) -> None:
        for key in keys:
            self._scheduler.discovered_by[key] = rule
        self._scheduler.add_many(keys, {})

    async def apply(self, rules: tuple[DiscoverRule, ...]) -> None:
        """Swap to ``rules``: new ones start, removed ones stop (what they found stays)."""
        wanted = {r.name: r for r in rules}
        for name in list(self.runners):
            rule = wanted.get(name)
            if rule is not None and rule == self.runners[name].rule:
                continue
            await self._stop(name)
            if rule is None:
                with contextlib.suppress(StoreError):
                    await self._store.drop_cursor(name)
                log.info("discover.rule_removed", rule=name, kept="the watches it found")
        for name, rule in wanted.items():
            if name not in self.runners:
                self._start(rule)

    async def _stop(self, name: str) -> None:
        self.runners.pop(name)
        task = self._tasks.pop(name)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
