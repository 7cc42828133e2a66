"""Replicas sharing PostgreSQL: registration, watch claims, lease renewal, fencing, release.

A claim sets a watch's ``owner``, a ``lease_until`` in the database's clock
(``now()`` plus the lease) and bumps its ``fence``. Claims take a bounded batch
with ``FOR UPDATE SKIP LOCKED``, so replicas claiming together never wait for
or take each other's rows; renewing is one statement per replica (not one per
watch). A commit made with a claim checks owner, fence and expiry in the same
transaction: a replica that lost its lease (frozen, cut off) commits nothing
with it. No session-level advisory locks: claims work behind a pooler in
transaction mode. docs/replicas.md explains the choices.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

from watcher.models import ExecutionKey

CLAIM = """
WITH due AS (
    SELECT workspace_id, execution_id FROM watches
    WHERE owner IS NULL OR lease_until < now()
    ORDER BY first_seen_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE watches w
SET owner = %(me)s, lease_until = now() + make_interval(secs => %(lease)s), fence = w.fence + 1
FROM due
WHERE w.workspace_id = due.workspace_id AND w.execution_id = due.execution_id
RETURNING w.workspace_id, w.execution_id, w.state, w.polls, w.first_seen_at, w.fence
"""

RENEW = """
WITH beat AS (
    UPDATE replicas SET renewed_at = now() WHERE id = %(me)s RETURNING id
)
UPDATE watches SET lease_until = now() + make_interval(secs => %(lease)s)
WHERE owner = %(me)s AND lease_until >= now()
RETURNING workspace_id, execution_id
"""


def replica_id() -> str:
    """host + pid + random: unique even when a pid is reused after a restart."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class Claims:
    """One replica's claims: which watches it holds, with the fence of each claim."""

    me: str = field(default_factory=replica_id)
    lease_s: float = 30.0
    held: dict[ExecutionKey, int] = field(default_factory=dict)
    takeovers: int = 0

    async def register(self, conn: Any) -> None:
        await conn.execute(
            "INSERT INTO replicas (id, host) VALUES (%s, %s) "
            "ON CONFLICT (id) DO UPDATE SET renewed_at = now()",
            (self.me, socket.gethostname()),
        )

    async def claim(self, conn: Any, limit: int) -> list[tuple[str, str, str | None, int, float]]:
        """Claim up to ``limit`` unowned or expired watches; the rows claimed."""
        if limit <= 0:
            return []
        cur = await conn.execute(CLAIM, {"limit": limit, "me": self.me, "lease": self.lease_s})
        rows = await cur.fetchall()
        claimed = []
        for ws, ex, state, polls, first_seen, fence in rows:
            if fence > 1:
                self.takeovers += 1  # someone held it before (gave it back, or lost it)
            self.held[(ws, ex)] = fence
            claimed.append((ws, ex, state, polls, first_seen))
        return claimed

    async def renew(self, conn: Any) -> set[ExecutionKey]:
        """Extend every live lease in one statement; the keys lost (expired or taken)."""
        cur = await conn.execute(RENEW, {"me": self.me, "lease": self.lease_s})
        kept = {(ws, ex) for ws, ex in await cur.fetchall()}
        lost = set(self.held) - kept
        for key in lost:
            del self.held[key]
        return lost

    async def release(self, conn: Any) -> int:
        """Give every claim back (a clean stop) so another replica takes them at once."""
        cur = await conn.execute(
            "UPDATE watches SET owner = NULL, lease_until = NULL WHERE owner = %s", (self.me,)
        )
        await conn.execute("DELETE FROM replicas WHERE id = %s", (self.me,))
        self.held.clear()
        count: int = cur.rowcount
        return count

    async def still_held(self, cur: Any, key: ExecutionKey) -> bool:
        """Inside a commit's transaction: whether this replica's claim on ``key`` is valid.

        Locks the row, so the answer holds until the transaction ends.
        """
        fence = self.held.get(key)
        if fence is None:
            return False
        await cur.execute(
            "SELECT 1 FROM watches WHERE workspace_id = %s AND execution_id = %s "
            "AND owner = %s AND fence = %s AND lease_until >= now() FOR UPDATE",
            (*key, self.me, fence),
        )
        return await cur.fetchone() is not None
