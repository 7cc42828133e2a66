"""Reported executions: the indexed "already reported?" lookup and retention's prune batches.

Plain functions on a connection, run on the store's writer thread. Every
execution whose event was produced keeps one compact row in ``reported``
forever, so it is never watched or reported again; its event body and
delivery rows go once it is older than ``keep_reported`` and every delivery
of it is delivered (an event with a pending or dead delivery keeps them all).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Final

from watcher.models import ExecutionId, ExecutionKey, Reported, WorkspaceId

# Execution IDs per lookup statement. Measured with 100,000 keys against
# 1,000,000 reported (sorted IDs, one workspace): 500 to 5,000 all take about
# 0.2 s, a statement per key 0.8 s, a temp-table join 0.35 s, row-value
# IN (VALUES ...) over a minute (SQLite scans for it). Small chunks keep each
# hop on the writer thread short, so writes queued meanwhile are not held up.
LOOKUP_CHUNK: Final = 1000

# (created_at, rowid) of the last event a prune pass looked at.
PruneCursor = tuple[float, int]
START: Final[PruneCursor] = (float("-inf"), 0)


def by_workspace(keys: Iterable[ExecutionKey]) -> dict[WorkspaceId, list[ExecutionId]]:
    """Execution IDs per workspace, sorted: neighbouring lookups share B-tree pages."""
    groups: dict[WorkspaceId, list[ExecutionId]] = {}
    for workspace_id, execution_id in keys:
        groups.setdefault(workspace_id, []).append(execution_id)
    for ids in groups.values():
        ids.sort()
    return groups


def reported_among(
    db: sqlite3.Connection, workspace_id: WorkspaceId, execution_ids: list[ExecutionId]
) -> list[ExecutionKey]:
    """Which of ``execution_ids`` (in ``workspace_id``) were reported: a primary-key probe each."""
    marks = ",".join("?" * len(execution_ids))
    rows = db.execute(
        f"SELECT execution_id FROM reported WHERE workspace_id = ? AND execution_id IN ({marks})",
        [workspace_id, *execution_ids],
    )
    return [(workspace_id, r[0]) for r in rows]


def reported_rows(
    db: sqlite3.Connection, workspace_id: WorkspaceId, execution_ids: list[ExecutionId]
) -> list[tuple[ExecutionKey, Reported]]:
    """The reported row of each of ``execution_ids`` that has one."""
    marks = ",".join("?" * len(execution_ids))
    rows = db.execute(
        "SELECT execution_id, event_id, event, state, reported_at FROM reported "
        f"WHERE workspace_id = ? AND execution_id IN ({marks})",
        [workspace_id, *execution_ids],
    )
    return [((workspace_id, r[0]), Reported(r[1], r[2], r[3], r[4])) for r in rows]


def prune_batch(
    db: sqlite3.Connection, cutoff: float, after: PruneCursor, batch: int
) -> tuple[int, PruneCursor] | None:
    """Look at up to ``batch`` events produced before ``cutoff`` (past ``after``) and delete
    those whose deliveries are all delivered, with those deliveries, in one short transaction.

    Returns (events deleted, where to continue), or None once nothing is left to look at.
    The cursor steps over the events kept (pending or dead deliveries), so a pass
    reads each old event once however many dead letters sit at the front.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = db.execute(
            "SELECT e.rowid, e.created_at, e.event_id, EXISTS ("
            "  SELECT 1 FROM deliveries d WHERE d.event_id = e.event_id AND d.status != 'delivered'"
            ") FROM events e "
            "WHERE e.created_at < :cutoff AND (e.created_at, e.rowid) > (:at, :rowid) "
            "ORDER BY e.created_at, e.rowid LIMIT :batch",
            {"cutoff": cutoff, "at": after[0], "rowid": after[1], "batch": batch},
        ).fetchall()
        gone = [(r[2],) for r in rows if not r[3]]
        if gone:
            db.executemany("DELETE FROM deliveries WHERE event_id = ?", gone)
            db.executemany("DELETE FROM events WHERE event_id = ?", gone)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    if not rows:
        return None
    last = rows[-1]
    return len(gone), (last[1], last[0])
