"""The state store as the daemon sees it: a Protocol every backend (SQLite, PostgreSQL) meets.

What the daemon relies on, whatever holds the state:

- a watch's progress is saved only when it changed (``save_watch`` queues it,
  later saves replace earlier ones) and never needs a reply;
- the backlog of queued writes is bounded: the scheduler awaits ``room()``
  after each save, which holds it back while the writer is behind, so a slow
  disk slows polling down instead of growing memory;
- ``record_event`` returns once the event, its outbox rows and the end of its
  watch are durable together; only then may a delivery start;
- one event per execution, ever: an execution once reported stays reported
  (``reported_keys``) after retention pruned its event (``prune``);
- a read sees every write queued before it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import Any, Protocol, Self, TypeAlias

from watcher.models import (
    DeliveryRow,
    DeliveryStatus,
    EventRecord,
    ExecutionKey,
    Reported,
    WatchRow,
)

# (workspace_id, execution_id, state, polls, first_seen_at): one resumable watch, compact.
WatchTuple: TypeAlias = tuple[str, str, str | None, int, float]


class StateStore(Protocol):
    """Watches in progress, produced events, the delivery outbox, and what was reported."""

    @property
    def healthy(self) -> bool:
        """False while writes fail (``/readyz`` reports it); queued writes are kept."""
        ...

    @property
    def writes(self) -> int:
        """Committed write transactions (the benchmark and metrics count them)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def open(self) -> None:
        """Connect, and create or upgrade the schema; refuse a newer one."""
        ...

    async def close(self) -> None:
        """Flush what is queued and close; closing twice is harmless."""
        ...

    # --- reads ----------------------------------------------------------------------------

    async def load_watches(self) -> list[WatchRow]:
        """Every watch in progress."""
        ...

    def watch_batches(self, size: int = 5000) -> AsyncIterator[list[WatchTuple]]:
        """Every watch in progress, ``size`` at a time (resuming 100,000 in bounded memory)."""
        ...

    async def reported_keys(self, keys: Iterable[ExecutionKey]) -> set[ExecutionKey]:
        """Which of ``keys`` were already reported (an indexed lookup, never the history)."""
        ...

    async def reported(self, keys: Iterable[ExecutionKey]) -> dict[ExecutionKey, Reported]:
        """The ending event of each of ``keys`` that was reported (pruned ones included)."""
        ...

    async def last_response(self, key: ExecutionKey) -> dict[str, Any] | None:
        """The API response stored at a watch's last state change."""
        ...

    async def open_deliveries(self, status: DeliveryStatus = "pending") -> list[DeliveryRow]:
        """Deliveries with ``status``, with their event bodies, oldest event first."""
        ...

    # --- writes ---------------------------------------------------------------------------

    def save_watch(self, row: WatchRow) -> None:
        """Queue a watch's new state."""
        ...

    async def room(self) -> None:
        """Wait while the write backlog is over its bound; return at once when it is not.

        Backpressure for ``save_watch`` callers: writes queued or being written
        stay within a fixed number, whatever the poll rate and the disk speed.
        """
        ...

    def backlog(self) -> int:
        """Writes queued or being written, not yet durable (what ``room()`` bounds)."""
        ...

    def forget_watch(self, key: ExecutionKey) -> None:
        """Queue removal of a watch that is no longer configured."""
        ...

    async def add_watches(
        self,
        rows: Sequence[WatchRow],
        source: str,
        *,
        take_over: bool = False,
        cursor: tuple[str, str] | None = None,
    ) -> None:
        """Store new watches from ``source`` ('api', 'discover:RULE'), durably.

        In order with queued writes; an existing watch keeps its progress (and
        its source unless ``take_over``); a reported execution is skipped;
        ``cursor`` = (rule, value) is committed in the same transaction.
        """
        ...

    async def watch_sources(self) -> dict[ExecutionKey, str]:
        """The source of every watch in progress that the config did not list."""
        ...

    async def load_cursor(self, rule: str) -> str | None:
        """A discovery rule's stored cursor, or None before its first page."""
        ...

    async def drop_cursor(self, rule: str) -> None:
        """Forget a removed rule's cursor; the watches it found stay."""
        ...

    async def record_event(
        self, record: EventRecord, sinks: Sequence[str], now: float | None = None
    ) -> None:
        """Store an event, a pending delivery per sink and the end of its watch, durably."""
        ...

    async def record_change(self, record: EventRecord, sinks: Sequence[str], row: WatchRow) -> None:
        """Store a state-change event, its outbox rows and the watch's new state, durably."""
        ...

    async def update_delivery(
        self,
        event_id: str,
        sink: str,
        status: DeliveryStatus,
        attempts: int,
        next_attempt_at: float,
        last_error: str | None,
        *,
        wait: bool = False,
    ) -> None:
        """Record a delivery attempt's outcome; ``wait`` to know it is durable."""
        ...

    async def retry_dead(self) -> int:
        """Put every dead letter back in the queue; how many."""
        ...

    async def dead_letters(self) -> dict[str, int]:
        """Dead-lettered deliveries per sink."""
        ...

    async def changed_elsewhere(self) -> bool:
        """Whether another process changed the store since the last call."""
        ...

    async def flush(self) -> None:
        """Wait until everything queued so far is durable."""
        ...

    async def prune(self, keep_s: float, *, now: float | None = None, batch: int = 500) -> int:
        """Drop events reported over ``keep_s`` ago whose deliveries are all delivered.

        In short batches that let other writes through; the executions stay
        reported. Returns how many events went.
        """
        ...
