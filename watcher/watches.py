"""One execution being followed (``Watch``), and a replica's claims kept on its watches.

The scheduler holds 100,000 of these: they are slotted, and a replica's
claim (the fence its commits are checked against) is one slot more on the
same object rather than an entry in a dict of its own.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import cast

from watcher.models import ExecutionKey


class Watch:
    """One execution being followed. Slotted: 100,000 of these must stay small."""

    __slots__ = (
        "active",
        "first_seen_at",
        "key",
        "level",
        "not_found",
        "polls",
        "state",
    )

    def __init__(
        self, key: ExecutionKey, first_seen_at: float, state: str | None = None, polls: int = 0
    ) -> None:
        self.key = key
        self.state = state
        self.polls = polls
        self.first_seen_at = first_seen_at
        self.level = 0  # how many times the interval has grown since the last change
        self.not_found = 0  # consecutive 404s
        self.active = True


class ClaimedWatch(Watch):
    """A watch of a replica sharing a database: with the fence of its claim (0: none)."""

    __slots__ = ("fence",)

    def __init__(
        self, key: ExecutionKey, first_seen_at: float, state: str | None = None, polls: int = 0
    ) -> None:
        super().__init__(key, first_seen_at, state, polls)
        self.fence = 0


class HeldWatches(MutableMapping[ExecutionKey, int]):
    """The claims a replica holds, key -> fence, kept on the scheduler's watches.

    A dict of its own beside the scheduler's would cost about 50 bytes per
    watch; instead each claim's fence is a slot of its ``Watch``, and only the
    claims not scheduled yet (stored a moment before the scheduler takes them)
    wait in a small dict of their own.
    """

    def __init__(self, watches: dict[ExecutionKey, ClaimedWatch]) -> None:
        self._watches = watches
        self._waiting: dict[ExecutionKey, int] = {}
        self._on_watches = 0  # scheduled watches with a claim (fence > 0)

    def scheduled(self, watch: Watch) -> None:
        """``watch`` joined the scheduler: it takes its claim along, if it has one."""
        watch = cast(ClaimedWatch, watch)  # a scheduler holding claims makes no other
        fence = self._waiting.pop(watch.key, 0)
        if fence:
            watch.fence = fence
            self._on_watches += 1

    def unscheduled(self, watch: Watch) -> None:
        """``watch`` left the scheduler: so does its claim."""
        watch = cast(ClaimedWatch, watch)
        if watch.fence:
            watch.fence = 0
            self._on_watches -= 1

    def __getitem__(self, key: ExecutionKey) -> int:
        watch = self._watches.get(key)
        if watch is not None and watch.fence:
            return watch.fence
        return self._waiting[key]

    def __setitem__(self, key: ExecutionKey, fence: int) -> None:
        watch = self._watches.get(key)
        if watch is None:
            self._waiting[key] = fence
            return
        if not watch.fence:
            self._on_watches += 1
        watch.fence = fence

    def __delitem__(self, key: ExecutionKey) -> None:
        watch = self._watches.get(key)
        if watch is not None and watch.fence:
            self.unscheduled(watch)
        else:
            del self._waiting[key]

    def __contains__(self, key: object) -> bool:
        watch = self._watches.get(key)  # type: ignore[call-overload]
        return (watch is not None and watch.fence > 0) or key in self._waiting

    def __iter__(self) -> Iterator[ExecutionKey]:
        yield from [k for k, w in self._watches.items() if w.fence]
        yield from list(self._waiting)

    def __len__(self) -> int:
        return self._on_watches + len(self._waiting)

    def clear(self) -> None:
        for watch in self._watches.values():
            watch.fence = 0
        self._on_watches = 0
        self._waiting.clear()
