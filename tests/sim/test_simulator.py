"""The Simulator as a whole: its stats summary and its lifecycle."""

from __future__ import annotations

import json
import re

import aiohttp
import pytest

from tests.sim.helpers import KEY, WS, get, one, post_hook
from watcher.sim import Simulator


async def test_stats_summarise_requests_and_deliveries(session: aiohttp.ClientSession) -> None:
    scripts = [
        one(["Running", "Completed"]),
        {"workspace_id": "ws-b", "id_prefix": "b-", "count": 1000, "steps": ["Completed"]},
    ]
    async with Simulator(api_key=KEY, scripts=scripts, hook_scripts={"h": ["503", "200"]}) as sim:
        for _ in range(3):
            await get(session, sim)
        await get(session, sim, "b-7", "ws-b")
        await get(session, sim, "missing")
        async with aiohttp.ClientSession() as no_key:
            await get(no_key, sim)
        for _ in range(2):
            await post_hook(session, sim, "h", {"event_id": "evt_1"})
        stats = sim.stats()
    json.dumps(stats)  # JSON-able
    assert stats["total_requests"] == 6
    assert stats["auth_failures"] == 1
    assert stats["requests"] == {f"{WS}/ex-1": 3, "ws-b/b-7": 1, f"{WS}/missing": 1}
    assert stats["after_terminal"] == {f"{WS}/ex-1": 1, "ws-b/b-7": 0}
    assert set(stats["terminal_at"]) == {f"{WS}/ex-1", "ws-b/b-7"}
    assert [
        (d["name"], d["status"], d["event_id"], d["webhook_id"]) for d in stats["deliveries"]
    ] == [
        ("h", 503, "evt_1", "evt_1"),
        ("h", 200, "evt_1", "evt_1"),
    ]
    assert all(isinstance(d["received_at"], float) for d in stats["deliveries"])


async def test_stopping_twice_is_harmless_and_urls_need_a_started_simulator() -> None:
    sim = Simulator(api_key=KEY)
    with pytest.raises(RuntimeError):
        _ = sim.base_url
    async with sim:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/v1", sim.base_url)
    await sim.stop()
    await sim.__aexit__(None, None, None)
