"""One discovery rule against a fake list endpoint and store: cursor, de-duplication, the cap."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from watcher.config import DiscoverRule
from watcher.discovery.page import ExecutionPage, Listed
from watcher.discovery.query import build_query
from watcher.discovery.rule import RuleRunner
from watcher.models import ExecutionKey, WatchRow

WS = "ws-1"
NOW_S = 1_800_000_000.0


class FakeList:
    def __init__(self, items: list[Listed]) -> None:
        self.items = items
        self.queries: list[dict[str, Any]] = []

    async def list_executions(self, workspace_id: str, query: dict[str, Any]) -> ExecutionPage:
        self.queries.append(query)
        since = query["filter"]["created_at"]["$gte"]
        shown = sorted(
            (i for i in self.items if i.created_at_ms >= since), key=lambda i: i.created_at_ms
        )
        offset = query["offset"]
        return ExecutionPage(tuple(shown[offset : offset + query["limit"]]), len(shown))


class FakeStore:
    def __init__(self, reported: Iterable[ExecutionKey] = ()) -> None:
        self.cursors: dict[str, str] = {}
        self.added: list[tuple[list[ExecutionKey], str, tuple[str, str] | None]] = []
        self.reported = set(reported)

    async def load_cursor(self, rule: str) -> str | None:
        return self.cursors.get(rule)

    async def drop_cursor(self, rule: str) -> None:
        self.cursors.pop(rule, None)

    async def reported_keys(self, keys: Iterable[ExecutionKey]) -> set[ExecutionKey]:
        return self.reported & set(keys)

    async def add_watches(
        self,
        rows: Sequence[WatchRow],
        source: str,
        *,
        take_over: bool = False,
        cursor: tuple[str, str] | None = None,
    ) -> None:
        self.added.append(([r.key for r in rows], source, cursor))
        if cursor is not None:
            self.cursors[cursor[0]] = cursor[1]


def runner(
    items: list[Listed], store: FakeStore, room: int = 1000, **rule: Any
) -> tuple[RuleRunner, list[ExecutionKey]]:
    handed: list[ExecutionKey] = []
    r = RuleRunner(
        DiscoverRule(name="r", workspace_id=WS, **rule),
        client=FakeList(items),
        store=store,
        room=lambda: room - len(handed),
        hand_over=lambda keys, _: handed.extend(keys),
        is_watched=lambda key: key in handed,
        wall=lambda: NOW_S,
    )
    return r, handed


def at(ms_before_now: int, name: str) -> Listed:
    return Listed(name, int(NOW_S * 1000) - ms_before_now)


async def test_the_first_start_stores_its_cursor_at_once() -> None:
    store = FakeStore()
    r, _ = runner([], store, start_back_s=3600)
    assert await r._initial_cursor() == int(NOW_S * 1000) - 3_600_000
    assert store.cursors == {"r": str(int(NOW_S * 1000) - 3_600_000)}
    # A restart resumes from the stored cursor, not from a later "now".
    r2, _ = runner([], store)
    assert await r2._initial_cursor() == int(NOW_S * 1000) - 3_600_000


async def test_each_is_handed_over_once_and_reported_ones_never() -> None:
    items = [at(3000, "a"), at(2000, "b"), at(2000, "c"), at(1000, "done")]
    store = FakeStore(reported=[(WS, "done")])
    r, handed = runner(items, store, start_back_s=60)
    cursor = await r._initial_cursor()
    cursor, full = await r.sweep(cursor)
    assert not full
    assert handed == [(WS, "a"), (WS, "b"), (WS, "c")]
    assert cursor == int(NOW_S * 1000) - 1000  # past everything read, "done" included
    assert store.added[-1][1:] == ("discover:r", ("r", str(cursor)))
    items.append(at(2500, "late"))  # shows up behind the cursor, within the overlap
    await r.sweep(cursor)
    assert handed == [(WS, "a"), (WS, "b"), (WS, "c"), (WS, "late")]


async def test_at_the_cap_the_cursor_stays_before_what_was_not_taken() -> None:
    items = [at(5000 - i, f"e{i}") for i in range(5)]
    store = FakeStore()
    r, handed = runner(items, store, room=2, start_back_s=60)
    cursor, full = await r.sweep(await r._initial_cursor())
    assert full
    assert handed == [(WS, "e0"), (WS, "e1")]
    assert cursor == items[1].created_at_ms  # e2 onwards are read again later
    assert store.added[-1][0] == [(WS, "e0"), (WS, "e1")]


def test_the_query_names_the_filters_the_window_and_the_order() -> None:
    rule = DiscoverRule(
        name="r", workspace_id=WS, playbook_ids=("p1", "p2"), trigger_types=("api",)
    )
    query = build_query(rule, 1000, 2000)
    assert query == {
        "filter": {
            "created_at": {"$gte": 1000},
            "$or": [
                {"playbook_id": "p1", "trigger_type": "api"},
                {"playbook_id": "p2", "trigger_type": "api"},
            ],
        },
        "sort": ["+created_at"],
        "limit": 1000,
        "offset": 2000,
    }
    one = build_query(DiscoverRule(name="r", workspace_id=WS, playbook_ids=("p1",)), 5, 0)
    assert one["filter"] == {"created_at": {"$gte": 5}, "playbook_id": "p1"}
