"""Script forms (exact, bulk, timeline) and the validation of scripts and step tokens."""

from __future__ import annotations

import asyncio
import re
import time
import tracemalloc
from typing import Any

import aiohttp
import pytest

from tests.sim.helpers import KEY, WS, get, one, poll_until
from watcher.sim import Simulator

# --------------------------------------------------------------- bulk, timeline


async def test_bulk_form_shares_steps_with_independent_cursors(
    session: aiohttp.ClientSession,
) -> None:
    bulk = {"workspace_id": "ws-bench", "id_prefix": "ex-", "count": 100_000}
    async with Simulator(api_key=KEY, scripts=[{**bulk, "steps": ["Running", "Completed"]}]) as sim:
        first = [(await get(session, sim, "ex-0", "ws-bench")).json() for _ in range(3)]
        last = (await get(session, sim, "ex-99999", "ws-bench")).json()
        for bad in ("ex-100000", "ex-01", "ex-", "ex-1x", "ab-1"):
            assert (await get(session, sim, bad, "ws-bench")).status == 404, bad
        assert sim.requests_for("ws-bench", "ex-0") == 3
        assert sim.requests_after_terminal("ws-bench", "ex-0") == 1
        assert sim.requests_for("ws-bench", "ex-5") == 0
        stats = sim.stats()
    assert [b["state"] for b in first] == ["Running", "Completed", "Completed"]
    assert (last["id"], last["state"]) == ("ex-99999", "Running")
    # Only the two requested bulk executions, plus the unscripted IDs tried.
    expected = {"ex-0": 3, "ex-99999": 1, "ex-100000": 1, "ex-01": 1, "ex-": 1, "ex-1x": 1}
    assert stats["requests"] == {f"ws-bench/{k}": v for k, v in {**expected, "ab-1": 1}.items()}
    assert stats["after_terminal"]["ws-bench/ex-0"] == 1


def test_bulk_form_keeps_no_per_execution_objects() -> None:
    script = {"workspace_id": "w", "id_prefix": "e", "count": 100_000, "steps": ["Running"]}
    tracemalloc.start()
    try:
        sim = Simulator(api_key=KEY, scripts=[script])
        size, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Counters cost 24 bytes an execution; a dict or object each would be 10x that.
    assert size < 100_000 * 40
    assert sim.requests_for("w", "e99999") == 0


async def test_an_exact_script_wins_over_a_bulk_range(session: aiohttp.ClientSession) -> None:
    scripts = [
        {"workspace_id": WS, "id_prefix": "ex-", "count": 10, "steps": ["Running"]},
        one(["Failed"]),
    ]
    async with Simulator(api_key=KEY, scripts=scripts) as sim:
        assert (await get(session, sim, "ex-1")).json()["state"] == "Failed"
        assert (await get(session, sim, "ex-2")).json()["state"] == "Running"


async def test_timeline_form_follows_time_since_the_first_request(
    session: aiohttp.ClientSession,
) -> None:
    script = {
        "workspace_id": WS,
        "execution_id": "ex-1",
        "timeline": [[0, "Running"], [0.05, "Completed"]],
    }
    async with Simulator(api_key=KEY, scripts=[script]) as sim:
        before = time.time()
        assert (await get(session, sim)).json()["state"] == "Running"
        after = time.time()
        body = await poll_until(session, sim, "ex-1")
        assert body["state"] == "Completed"
        at = sim.terminal_at(WS, "ex-1")
        assert at is not None
        assert before + 0.05 <= at <= after + 0.05
        assert abs(body["finished_at"] - at * 1000) <= 1
        assert sim.requests_after_terminal(WS, "ex-1") == 0
        await get(session, sim)
        assert sim.requests_after_terminal(WS, "ex-1") == 1
        assert sim.stats()["terminal_at"][f"{WS}/ex-1"] == at


async def test_timeline_before_its_first_entry_is_pending(
    session: aiohttp.ClientSession,
) -> None:
    script = {"workspace_id": WS, "execution_id": "ex-1", "timeline": [[60, "Completed"]]}
    async with Simulator(api_key=KEY, scripts=[script]) as sim:
        assert (await get(session, sim)).json()["state"] == "Pending"
        assert sim.terminal_at(WS, "ex-1") is None  # an hour away is not terminal yet


async def test_bulk_timeline_times_each_execution_from_its_own_first_request(
    session: aiohttp.ClientSession,
) -> None:
    script = {
        "workspace_id": WS,
        "id_prefix": "lat-",
        "count": 3,
        "timeline": [[0, "Running"], [0.05, "Completed"]],
    }
    async with Simulator(api_key=KEY, scripts=[script]) as sim:
        await get(session, sim, "lat-0")
        after_first = time.time()
        await asyncio.sleep(0.1)
        before_second = time.time()
        await get(session, sim, "lat-2")
        assert (await poll_until(session, sim, "lat-0"))["state"] == "Completed"
        assert (await poll_until(session, sim, "lat-2"))["state"] == "Completed"
        at0 = sim.terminal_at(WS, "lat-0")
        at2 = sim.terminal_at(WS, "lat-2")
        assert at0 is not None
        assert at2 is not None
        assert at2 - at0 >= before_second - after_first
        assert sim.terminal_at(WS, "lat-1") is None


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "token", ["!504", "!slow", "!slow:x", "!429:soon", "!reset:1", "503", "", "Run ning!", "ui="]
)
def test_unknown_step_tokens_are_rejected_naming_the_token(token: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(token))):
        Simulator(api_key=KEY, scripts=[one(["Running", token])])


@pytest.mark.parametrize(
    "script",
    [
        {"workspace_id": WS, "execution_id": "e", "steps": []},
        {"workspace_id": WS, "execution_id": "e"},
        {
            "workspace_id": WS,
            "execution_id": "e",
            "steps": ["Running"],
            "timeline": [[0, "Running"]],
        },
        {"workspace_id": WS, "execution_id": "a/b", "steps": ["Running"]},
        {"execution_id": "e", "steps": ["Running"]},
        {"workspace_id": WS, "execution_id": "e", "steps": ["Running"], "step": ["x"]},
        {"workspace_id": WS, "execution_id": "e", "steps": ["Running"], "fields": []},
        {"workspace_id": WS, "id_prefix": "e", "count": 0, "steps": ["Running"]},
        {"workspace_id": WS, "id_prefix": "e", "steps": ["Running"]},
        {"workspace_id": WS, "execution_id": "e", "timeline": [[1, "Running"], [0, "Completed"]]},
        {"workspace_id": WS, "execution_id": "e", "timeline": [["0", "Running"]]},
        {"workspace_id": WS, "execution_id": "e", "timeline": [[0, "!nope"]]},
    ],
)
def test_malformed_scripts_are_rejected(script: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"script|timeline|token"):
        Simulator(api_key=KEY, scripts=[script])


async def test_add_scripts_adds_all_or_nothing(session: aiohttp.ClientSession) -> None:
    async with Simulator(api_key=KEY) as sim:
        with pytest.raises(ValueError, match="!bogus"):
            sim.add_scripts([one(["Running"]), one(["!bogus"], "ex-2")])
        assert (await get(session, sim)).status == 404
        sim.add_scripts([one(["Running"])])
        assert (await get(session, sim)).status == 200
