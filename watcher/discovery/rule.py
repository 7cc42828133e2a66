"""One ``[[discover]]`` rule at work: list, de-duplicate, store with the cursor, hand over.

The contract is in docs/discovery.md. In short: the cursor is the newest
``created_at`` the rule has taken in, committed in the same transaction as the
watches it covers; each sweep re-reads ``overlap`` behind it (late visibility,
ties) and de-duplicates by ID; at ``max_watches`` the rule waits with its
cursor in place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, Protocol

import structlog

from watcher.config import DiscoverRule
from watcher.discovery.page import ExecutionPage, Listed
from watcher.discovery.query import PAGE_SIZE, build_query
from watcher.errors import AuthError, PermanentApiError, StoreError, TransientApiError
from watcher.models import ExecutionKey, WatchRow

log = structlog.get_logger("watcher.discovery")

# How often a rule at the cap looks whether watches have ended.
ROOM_CHECK_S: Final = 0.5
# How often a replica not holding a rule looks again (another replica lists it meanwhile).
HELD_CHECK_S: Final = 0.5


class Lister(Protocol):
    async def list_executions(self, workspace_id: str, query: dict[str, Any]) -> ExecutionPage: ...


class CursorStore(Protocol):
    async def load_cursor(self, rule: str) -> str | None: ...

    async def drop_cursor(self, rule: str) -> None: ...

    async def reported_keys(self, keys: Iterable[ExecutionKey]) -> set[ExecutionKey]: ...

    async def add_watches(
        self,
        rows: Sequence[WatchRow],
        source: str,
        *,
        take_over: bool = False,
        cursor: tuple[str, str] | None = None,
    ) -> None: ...


class RuleState:
    """What operators see of a rule (status, metrics)."""

    def __init__(self) -> None:
        self.cursor_ms: int | None = None
        self.queries = 0
        self.found = 0
        self.errors = 0
        self.last_query_at: float | None = None
        self.last_error: str | None = None
        self.waiting = False  # at max_watches
        self.sweeps = 0  # complete sweeps (to the end of the list)


class RuleRunner:
    """Runs one rule until cancelled."""

    def __init__(
        self,
        rule: DiscoverRule,
        *,
        client: Lister,
        store: CursorStore,
        room: Callable[[], int],
        hand_over: Callable[[list[ExecutionKey], str], None],
        is_watched: Callable[[ExecutionKey], bool],
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        held: Callable[[], bool] = lambda: True,
    ) -> None:
        self.rule = rule
        # Replicas sharing a database: whether this one holds the rule now (one lists it).
        self.held = held
        self.state = RuleState()
        self._client = client
        self._store = store
        self._room = room
        self._hand_over = hand_over
        self._is_watched = is_watched
        self._wall = wall
        self._sleep = sleep
        # IDs taken in within the overlap window: a re-read costs no store lookup.
        self._seen: dict[str, int] = {}

    async def run(self) -> None:
        while True:
            while not self.held():
                await self._sleep(HELD_CHECK_S)
            await self._run_while_held()

    async def _run_while_held(self) -> None:
        try:
            cursor = await self._initial_cursor()
        except StoreError as exc:
            self._failed(exc, "discover.query_failed", "warning")
            await self._sleep(self.rule.interval_s)
            return
        while self.held():
            try:
                cursor, full = await self.sweep(cursor)
                self.state.last_error = None
                if not full:
                    self.state.sweeps += 1
            except PermanentApiError as exc:
                self._failed(exc, "discover.query_rejected", "error")
                full = False
            except AuthError as exc:
                self._failed(exc, "discover.auth_failed", "error")
                full = False
            except (TransientApiError, StoreError) as exc:
                self._failed(exc, "discover.query_failed", "warning")
                full = False
            if full:
                await self._wait_for_room()
            else:
                await self._sleep(self.rule.interval_s)

    def _failed(self, exc: Exception, event: str, level: str) -> None:
        self.state.errors += 1
        self.state.last_error = str(exc)
        action = (
            "check the rule's filters against what the list endpoint accepts; "
            f"asked again every {self.rule.interval_s:g}s"
            if event == "discover.query_rejected"
            else f"asked again in {self.rule.interval_s:g}s; other rules and watches go on"
        )
        getattr(log, level)(
            event,
            rule=self.rule.name,
            workspace_id=self.rule.workspace_id,
            reason=str(exc),
            action=action,
        )

    async def _initial_cursor(self) -> int:
        stored = await self._store.load_cursor(self.rule.name)
        if stored is not None:
            cursor = int(stored)
        else:
            # The very first start: "now" does not flood the workspace's history
            # into the sinks; "1h" looks back that far. Stored at once, so a
            # restart resumes from here rather than from a later "now".
            cursor = int((self._wall() - self.rule.start_back_s) * 1000)
            await self._store.add_watches(
                [], self.rule.source, cursor=(self.rule.name, str(cursor))
            )
        self.state.cursor_ms = cursor
        return cursor

    async def sweep(self, cursor: int) -> tuple[int, bool]:
        """List from ``overlap`` behind ``cursor`` to the end; (new cursor, stopped at the cap)."""
        since = cursor - int(self.rule.overlap_s * 1000)
        self._seen = {k: v for k, v in self._seen.items() if v >= since}
        offset = 0
        while True:
            query = build_query(self.rule, since, offset)
            page = await self._client.list_executions(self.rule.workspace_id, query)
            self.state.queries += 1
            self.state.last_query_at = self._wall()
            cursor, full = await self._take(page.items, cursor)
            if full:
                return cursor, True
            if len(page.items) < PAGE_SIZE:
                return cursor, False
            offset += PAGE_SIZE

    async def _take(self, items: Sequence[Listed], cursor: int) -> tuple[int, bool]:
        """Store and hand over the new ones among ``items``, as many as there is room for."""
        ws = self.rule.workspace_id
        fresh = [i for i in items if i.execution_id not in self._seen]
        reported = await self._store.reported_keys([(ws, i.execution_id) for i in fresh])
        room = self._room()
        taken: list[Listed] = []
        newest = cursor
        full = False
        for item in items:
            key = (ws, item.execution_id)
            new = item.execution_id not in self._seen
            if new and key not in reported and not self._is_watched(key):
                if room <= 0:
                    full = True
                    break  # the cursor stays before it: found again once there is room
                room -= 1
                taken.append(item)
            self._seen[item.execution_id] = item.created_at_ms
            newest = max(newest, item.created_at_ms)
        now = self._wall()
        rows = [WatchRow((ws, i.execution_id), None, 0, now, now) for i in taken]
        # One transaction: the watches and the cursor past them, or neither.
        await self._store.add_watches(rows, self.rule.source, cursor=(self.rule.name, str(newest)))
        self.state.cursor_ms = newest
        if taken:
            self.state.found += len(taken)
            self._hand_over([(ws, i.execution_id) for i in taken], self.rule.name)
        return newest, full

    async def _wait_for_room(self) -> None:
        self.state.waiting = True
        log.warning(
            "discover.at_capacity",
            rule=self.rule.name,
            action="waiting with the cursor in place until watches end (watch.max_watches)",
        )
        while self._room() <= 0:
            await self._sleep(ROOM_CHECK_S)
        self.state.waiting = False
        log.info("discover.resumed", rule=self.rule.name)
