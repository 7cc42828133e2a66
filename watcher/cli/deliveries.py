"""``blink-watcher deliveries``: list pending and dead-lettered deliveries, or retry the dead.

Reads through a read-only connection to the SQLite state file or the shared
PostgreSQL database (``[state] url``), so it is safe while daemons run;
``--retry-dead`` is the one write, through the store itself.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any, Final

from watcher.cli.render import Column, format_ago, table, terminal_width
from watcher.config import Config
from watcher.config.shared import SharedState
from watcher.errors import EX_OK
from watcher.models import DeliveryRow, rfc3339
from watcher.store import Store, open_readonly, query_deliveries

DELIVERY_COLUMNS: Final = (
    Column("EXECUTION"),
    Column("SINK", shrink=2),
    Column("STATUS"),
    Column("ATTEMPTS"),
    Column("UPDATED"),
    Column("LAST ERROR", max_width=80, shrink=1),
)


def delivery_dict(d: DeliveryRow) -> dict[str, Any]:
    """One delivery as the ``--json`` output shows it."""
    return {
        "event_id": d.event_id,
        "execution_id": d.key[1] if d.key else None,
        "workspace_id": d.key[0] if d.key else None,
        "event": d.event,
        "sink": d.sink,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": rfc3339(d.next_attempt_at) if d.status == "pending" else None,
        "last_error": d.last_error,
        "updated_at": rfc3339(d.updated_at),
    }


def delivery_table(items: list[DeliveryRow], now_s: float, width: int | None = None) -> str:
    """Deliveries as a table for people (shared with ``status``), fitted to ``width``.

    No trailing newline.
    """
    rows = [
        [
            f"{d.key[0]}/{d.key[1]}" if d.key else "?",
            d.sink,
            d.status,
            str(d.attempts),
            format_ago(d.updated_at, now_s),
            d.last_error or "",
        ]
        for d in items
    ]
    return table(DELIVERY_COLUMNS, rows, width=width)


def deliveries(config: Config, *, retry_dead: bool, as_json: bool) -> int:
    """List pending and dead deliveries; ``retry_dead`` queues dead letters again."""
    if config.shared_state is not None:
        items = _shared(config.shared_state, retry_dead=retry_dead)
    else:
        if retry_dead:

            async def requeue() -> int:
                async with Store(config.state_path) as store:
                    return await store.retry_dead()

            _requeued(asyncio.run(requeue()))
        db = open_readonly(config.state_path)
        try:
            items = query_deliveries(db, ("pending", "dead"))
        finally:
            db.close()
    if as_json:
        print(json.dumps([delivery_dict(d) for d in items], indent=2))
    elif items:
        print(delivery_table(items, time.time(), terminal_width(sys.stdout)))
    else:
        print("no pending or dead-lettered deliveries")
    return EX_OK


def _shared(shared: SharedState, *, retry_dead: bool) -> list[DeliveryRow]:
    """The open deliveries of the shared database, after queueing its dead letters again."""
    from watcher.store import pg_status
    from watcher.store.postgres import PostgresStore

    # Connected (and the schema checked) first: a database the daemon has not
    # set up yet is reported, not migrated by a retry.
    with pg_status.connect(shared) as conn:
        if retry_dead:
            password = None if shared.password is None else shared.password.reveal()

            async def requeue() -> int:
                async with PostgresStore(shared.url, password=password, pool_size=1) as store:
                    return await store.retry_dead()

            _requeued(asyncio.run(requeue()))
        return pg_status.query_deliveries(conn, ("pending", "dead"))


def _requeued(count: int) -> None:
    if count:
        print(
            f"queued {count} dead letter(s) again; a running daemon picks them up within "
            "a few seconds, a stopped one at its next start",
            file=sys.stderr,
        )
    else:
        print("no dead letters to retry", file=sys.stderr)
