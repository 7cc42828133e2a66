"""The PostgreSQL store's reads: what the daemon asks of the shared database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Final

from watcher.models import DeliveryRow, DeliveryStatus, ExecutionKey, Reported, WatchRow
from watcher.store.base import WatchTuple
from watcher.store.pg_schema import key_arrays

# Keys per lookup statement (an unnest join), as the SQLite store's chunks.
LOOKUP_CHUNK: Final = 1000


class PgReads:
    """Reads, each seeing every write queued before it (``flush`` first where it matters)."""

    _outbox_mark: tuple[int, float] | None = None  # changed_elsewhere's last look

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def flush(self) -> None:
        raise NotImplementedError

    async def load_watches(self) -> list[WatchRow]:
        await self.flush()
        rows = await self._fetch(
            "SELECT workspace_id, execution_id, state, polls, first_seen_at, changed_at "
            "FROM watches"
        )
        return [WatchRow((r[0], r[1]), r[2], r[3], r[4], r[5]) for r in rows]

    async def watch_batches(self, size: int = 5000) -> AsyncIterator[list[WatchTuple]]:
        await self.flush()
        after: ExecutionKey = ("", "")
        while True:
            rows = await self._fetch(
                "SELECT workspace_id, execution_id, state, polls, first_seen_at FROM watches "
                "WHERE (workspace_id, execution_id) > (%s, %s) "
                "ORDER BY workspace_id, execution_id LIMIT %s",
                (*after, size),
            )
            if not rows:
                return
            yield [(r[0], r[1], r[2], r[3], r[4]) for r in rows]
            after = (rows[-1][0], rows[-1][1])

    async def reported_keys(self, keys: Iterable[ExecutionKey]) -> set[ExecutionKey]:
        wanted = list(keys)
        found: set[ExecutionKey] = set()
        for start in range(0, len(wanted), LOOKUP_CHUNK):
            chunk = wanted[start : start + LOOKUP_CHUNK]
            rows = await self._fetch(
                "SELECT r.workspace_id, r.execution_id FROM reported r "
                "JOIN unnest(%s::text[], %s::text[]) AS k (ws, ex) "
                "ON r.workspace_id = k.ws AND r.execution_id = k.ex",
                key_arrays(chunk),
            )
            found.update((r[0], r[1]) for r in rows)
        return found

    async def last_response(self, key: ExecutionKey) -> dict[str, Any] | None:
        await self.flush()
        rows = await self._fetch(
            "SELECT last_response FROM watches WHERE workspace_id = %s AND execution_id = %s", key
        )
        if not rows or rows[0][0] is None:
            return None
        value = json.loads(rows[0][0])
        return value if isinstance(value, dict) else None

    async def open_deliveries(self, status: DeliveryStatus = "pending") -> list[DeliveryRow]:
        await self.flush()
        rows = await self._fetch(
            "SELECT d.event_id, d.sink, d.status, d.attempts, d.next_attempt_at, d.last_error, "
            "d.updated_at, e.body, e.workspace_id, e.execution_id, e.event, e.created_at "
            "FROM deliveries d JOIN events e USING (event_id) "
            "WHERE d.status != 'delivered' AND d.status = %s "
            "ORDER BY e.created_at, d.event_id, d.sink",
            (status,),
        )
        return [
            DeliveryRow(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6], bytes(r[7]), (r[8], r[9]), r[10], r[11]
            )
            for r in rows
        ]

    async def dead_letters(self) -> dict[str, int]:
        await self.flush()
        rows = await self._fetch(
            "SELECT sink, count(*) FROM deliveries WHERE status = 'dead' GROUP BY sink"
        )
        return {sink: count for sink, count in rows}

    async def changed_elsewhere(self) -> bool:
        """Whether the open outbox changed (e.g. ``deliveries --retry-dead`` elsewhere)."""
        rows = await self._fetch(
            "SELECT count(*), coalesce(max(updated_at), 0) FROM deliveries WHERE status = 'dead'"
        )
        mark = (int(rows[0][0]), float(rows[0][1]))
        changed = self._outbox_mark is not None and mark != self._outbox_mark
        self._outbox_mark = mark
        return changed

    async def watch_sources(self) -> dict[ExecutionKey, str]:
        await self.flush()
        rows = await self._fetch(
            "SELECT workspace_id, execution_id, source FROM watches WHERE source != 'config'"
        )
        return {(r[0], r[1]): r[2] for r in rows}

    async def load_cursor(self, rule: str) -> str | None:
        await self.flush()
        rows = await self._fetch("SELECT cursor FROM cursors WHERE rule = %s", (rule,))
        # '' is a rule claimed (by a replica) before its first page.
        return None if not rows or not rows[0][0] else str(rows[0][0])

    async def watch_page(
        self, after: str, limit: int
    ) -> list[tuple[str, str, str | None, int, str | None]]:
        """Watches after ``after`` ("ws/id", in code point order), whichever replica holds them."""
        await self.flush()
        rows = await self._fetch(
            "SELECT workspace_id, execution_id, state, polls, owner FROM watches "
            "WHERE (workspace_id || '/' || execution_id) COLLATE \"C\" > %s "
            "ORDER BY (workspace_id || '/' || execution_id) COLLATE \"C\" LIMIT %s",
            (after, limit),
        )
        return [(r[0], r[1], r[2], int(r[3]), r[4]) for r in rows]

    async def find_watch(self, key: ExecutionKey) -> tuple[str | None, int, str, str | None] | None:
        """(state, polls, source, owner) of a watch, whichever replica holds it."""
        await self.flush()
        rows = await self._fetch(
            "SELECT state, polls, source, owner FROM watches "
            "WHERE workspace_id = %s AND execution_id = %s",
            key,
        )
        return None if not rows else (rows[0][0], int(rows[0][1]), str(rows[0][2]), rows[0][3])

    async def reported(self, keys: Iterable[ExecutionKey]) -> dict[ExecutionKey, Reported]:
        """The ending event of each of ``keys`` that was reported."""
        wanted = list(keys)
        found: dict[ExecutionKey, Reported] = {}
        for start in range(0, len(wanted), LOOKUP_CHUNK):
            chunk = wanted[start : start + LOOKUP_CHUNK]
            rows = await self._fetch(
                "SELECT r.workspace_id, r.execution_id, r.event_id, r.event, r.state, "
                "r.reported_at FROM reported r "
                "JOIN unnest(%s::text[], %s::text[]) AS k (ws, ex) "
                "ON r.workspace_id = k.ws AND r.execution_id = k.ex",
                key_arrays(chunk),
            )
            found.update(((r[0], r[1]), Reported(r[2], r[3], r[4], float(r[5]))) for r in rows)
        return found
