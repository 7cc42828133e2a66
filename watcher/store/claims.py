"""Replicas sharing PostgreSQL: registration, claims, one-row lease renewal, fencing, release.

A replica's lease is its row in ``replicas``: ``lease_until`` in the
database's clock (``now()`` plus the lease). Renewing it is one row, whatever
the replica holds, so an unchanged poll still writes nothing and 100,000
watches cost no more to renew than one. A claim sets a row's ``owner`` and
bumps its ``fence``; a row is free when it has no owner or its owner's lease
ran out. Claims take a bounded batch with ``FOR UPDATE SKIP LOCKED``, so
replicas claiming together never wait for or take each other's rows.

A commit made with a claim checks owner, fence and the owner's lease in the
same transaction, with the row locked: a replica that lost its lease (frozen,
cut off) commits nothing with it. A replica whose lease ran out rejoins under
a new id, so nothing it held is mistaken for held. No session-level advisory
locks: claims work behind a pooler in transaction mode. docs/replicas.md
explains the choices.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

from watcher.models import DeliveryRow, ExecutionKey
from watcher.store.pg_schema import key_arrays

# The rows another replica may take: no owner, or an owner whose lease ran out.
FREE: Final = "(owner IS NULL OR owner IN (SELECT id FROM replicas WHERE lease_until < now()))"
# This replica's lease is live (checked inside the statements that use it).
LIVE: Final = "EXISTS (SELECT 1 FROM replicas WHERE id = %(me)s AND lease_until >= now())"

CLAIM_WATCHES: Final = f"""
WITH due AS (
    SELECT workspace_id, execution_id FROM watches
    WHERE {FREE} AND {LIVE}
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE watches w SET owner = %(me)s, fence = w.fence + 1
FROM due
WHERE w.workspace_id = due.workspace_id AND w.execution_id = due.execution_id
RETURNING w.workspace_id, w.execution_id, w.state, w.polls, w.first_seen_at, w.source, w.fence
"""

CLAIM_DELIVERIES: Final = f"""
WITH due AS (
    SELECT event_id, sink FROM deliveries
    WHERE status = 'pending' AND sink = ANY(%(sinks)s) AND {FREE} AND {LIVE}
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), taken AS (
    UPDATE deliveries d SET owner = %(me)s, fence = d.fence + 1
    FROM due WHERE d.event_id = due.event_id AND d.sink = due.sink
    RETURNING d.event_id, d.sink, d.status, d.attempts, d.next_attempt_at, d.last_error,
              d.updated_at, d.fence
)
SELECT t.event_id, t.sink, t.status, t.attempts, t.next_attempt_at, t.last_error, t.updated_at,
       e.body, e.workspace_id, e.execution_id, e.event, e.created_at, t.fence
FROM taken t JOIN events e USING (event_id)
"""

CLAIM_RULES: Final = f"""
UPDATE cursors SET owner = %(me)s, fence = fence + 1
WHERE rule = ANY(%(rules)s) AND {FREE} AND {LIVE}
RETURNING rule
"""

RENEW: Final = """
UPDATE replicas SET lease_until = now() + make_interval(secs => %(lease)s), renewed_at = now()
WHERE id = %(me)s AND lease_until >= now()
RETURNING id
"""

# A replica gone for an hour, holding nothing any more, leaves the list.
FORGET_GONE: Final = """
DELETE FROM replicas r WHERE lease_until < now() - interval '1 hour'
AND NOT EXISTS (SELECT 1 FROM watches WHERE owner = r.id)
AND NOT EXISTS (SELECT 1 FROM deliveries WHERE owner = r.id AND status = 'pending')
AND NOT EXISTS (SELECT 1 FROM cursors WHERE owner = r.id)
"""

CENSUS: Final = (
    "SELECT (SELECT count(*) FROM watches), "
    "(SELECT count(*) FROM replicas WHERE lease_until >= now()), "
    "(SELECT count(*) FROM watches WHERE owner = %(me)s)"
)


# (key, state, polls, first_seen_at, source): a watch just claimed.
ClaimedWatch = tuple[ExecutionKey, str | None, int, float, str]


def replica_id() -> str:
    """host + pid + random: unique even when a pid is reused after a restart."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class Claims:
    """One replica's claims: the watches it holds (with each claim's fence), rules, deliveries."""

    me: str = field(default_factory=replica_id)
    lease_s: float = 30.0
    # key -> fence; a replica's scheduler keeps them on its watches (HeldWatches).
    held: MutableMapping[ExecutionKey, int] = field(default_factory=dict)
    rules: set[str] = field(default_factory=set)
    # Deliveries whose outcome the database refused (taken over): the outbox drops them.
    lost_deliveries: set[tuple[str, str]] = field(default_factory=set)
    takeovers: int = 0

    def params(self, **more: Any) -> dict[str, Any]:
        return {"me": self.me, "lease": self.lease_s, **more}

    async def register(self, conn: Any) -> None:
        await conn.execute(
            "INSERT INTO replicas (id, host, lease_until) "
            "VALUES (%(me)s, %(host)s, now() + make_interval(secs => %(lease)s)) "
            "ON CONFLICT (id) DO UPDATE SET renewed_at = now(), lease_until = excluded.lease_until",
            self.params(host=socket.gethostname()),
        )

    async def rejoin(self, conn: Any) -> None:
        """After losing the lease: forget every claim and register under a new id."""
        self.held.clear()
        self.rules.clear()
        self.me = replica_id()
        await self.register(conn)

    async def renew(self, conn: Any) -> bool:
        """Extend this replica's lease (one row); False if it had already run out."""
        cur = await conn.execute(RENEW, self.params())
        return await cur.fetchone() is not None

    async def claim(self, conn: Any, limit: int) -> list[ClaimedWatch]:
        """Claim up to ``limit`` free watches; the rows claimed."""
        if limit <= 0:
            return []
        cur = await conn.execute(CLAIM_WATCHES, self.params(limit=limit))
        claimed = []
        intern = sys.intern  # a handful of workspaces, states and sources: one string each
        for ws, ex, state, polls, first_seen, source, fence in await cur.fetchall():
            if fence > 1:
                self.takeovers += 1  # someone held it before (gave it back, or lost it)
            key = (intern(ws), ex)
            self.held[key] = fence
            claimed.append((key, state, polls, first_seen, intern(source)))
        return claimed

    async def claim_deliveries(self, conn: Any, limit: int, sinks: list[str]) -> list[DeliveryRow]:
        """Claim up to ``limit`` free pending deliveries to ``sinks``, with their event bodies.

        Only to sinks this replica has: one whose config lacks a sink leaves its
        deliveries to a replica that has it.
        """
        if limit <= 0 or not sinks:
            return []
        cur = await conn.execute(CLAIM_DELIVERIES, self.params(limit=limit, sinks=sinks))
        rows = []
        for r in await cur.fetchall():
            if r[12] > 1:
                self.takeovers += 1
            rows.append(
                DeliveryRow(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    r[6],
                    bytes(r[7]),
                    (r[8], r[9]),
                    r[10],
                    r[11],
                )
            )
        return rows

    async def claim_rules(self, conn: Any, rules: list[str]) -> set[str]:
        """Claim the free discovery rules among ``rules``: one replica lists a rule at a time."""
        if rules:
            await conn.execute(
                "INSERT INTO cursors (rule, cursor, updated_at) "
                "SELECT r, '', 0 FROM unnest(%s::text[]) AS r ON CONFLICT DO NOTHING",
                (rules,),
            )
        cur = await conn.execute(CLAIM_RULES, self.params(rules=rules))
        taken = {str(r[0]) for r in await cur.fetchall()}
        self.rules = (self.rules & set(rules)) | taken
        return taken

    async def census(self, conn: Any) -> tuple[int, int, int]:
        """(watches in the database, live replicas, watches this replica owns there)."""
        cur = await conn.execute(CENSUS, self.params())
        row = await cur.fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    async def owned(self, conn: Any) -> set[ExecutionKey]:
        cur = await conn.execute(
            "SELECT workspace_id, execution_id FROM watches WHERE owner = %(me)s", self.params()
        )
        return {(ws, ex) for ws, ex in await cur.fetchall()}

    async def give_back(self, conn: Any, keys: list[ExecutionKey]) -> None:
        """Release some watches (rebalancing): other replicas claim them at once."""
        await conn.execute(
            "UPDATE watches w SET owner = NULL FROM unnest(%s::text[], %s::text[]) AS k (ws, ex) "
            "WHERE w.workspace_id = k.ws AND w.execution_id = k.ex AND w.owner = %s",
            (*key_arrays(keys), self.me),
        )
        for key in keys:
            self.held.pop(key, None)

    async def release(self, conn: Any) -> int:
        """Give every claim back (a clean stop) so another replica takes them at once."""
        async with conn.transaction():
            cur = await conn.execute("UPDATE watches SET owner = NULL WHERE owner = %s", (self.me,))
            count: int = cur.rowcount
            await conn.execute(
                "UPDATE deliveries SET owner = NULL WHERE owner = %s AND status = 'pending'",
                (self.me,),
            )
            await conn.execute("UPDATE cursors SET owner = NULL WHERE owner = %s", (self.me,))
            await conn.execute("DELETE FROM replicas WHERE id = %s", (self.me,))
        self.held.clear()
        self.rules.clear()
        return count

    async def forget_gone(self, conn: Any) -> None:
        await conn.execute(FORGET_GONE)

    async def still_held(self, cur: Any, key: ExecutionKey) -> bool:
        """Inside a commit's transaction: whether this replica's claim on ``key`` is valid.

        Locks the row, so the answer holds until the transaction ends.
        """
        fence = self.held.get(key)
        if fence is None:
            return False
        await cur.execute(
            "SELECT 1 FROM watches WHERE workspace_id = %(ws)s AND execution_id = %(ex)s "
            f"AND owner = %(me)s AND fence = %(fence)s AND {LIVE} FOR UPDATE",
            self.params(ws=key[0], ex=key[1], fence=fence),
        )
        return await cur.fetchone() is not None
