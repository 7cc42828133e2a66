"""The simulated list endpoint: the documented RQL subset, paging, late visibility, 400s."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from tests.sim.helpers import ERROR_WRAPPER_KEYS, KEY, WS
from watcher.sim import Simulator

NOW_MS = int(time.time() * 1000)
SCRIPTS = [
    {
        "workspace_id": WS,
        "id_prefix": "a-",
        "count": 5,
        "steps": ["Running"],
        "playbook_id": "pb-a",
        "trigger_type": "api",
        "created_at": NOW_MS - 5000,
        "created_every": 10,
    },
    {
        "workspace_id": WS,
        "execution_id": "b-0",
        "steps": ["Completed"],
        "playbook_id": "pb-b",
        "trigger_type": "schedule",
        "created_at": NOW_MS - 4000,
    },
    {
        "workspace_id": WS,
        "execution_id": "late",
        "steps": ["Running"],
        "playbook_id": "pb-b",
        "created_at": NOW_MS - 6000,
        "listed_after": 3600,
    },
    {
        "workspace_id": WS,
        "execution_id": "future",
        "steps": ["Running"],
        "created_at": NOW_MS + 3_600_000,
    },
    {"workspace_id": "ws-other", "execution_id": "x", "steps": ["Running"]},
]


async def listing(
    session: aiohttp.ClientSession, sim: Simulator, q: dict[str, Any]
) -> tuple[int, Any]:
    url = f"{sim.base_url}/workspace/{WS}/executions"
    async with session.get(url, params={"q": json.dumps(q)}) as resp:
        return resp.status, await resp.json()


def ids(body: dict[str, Any]) -> list[str]:
    return [item["id"] for item in body["results"]]


async def test_filters_sort_and_paging(session: aiohttp.ClientSession) -> None:
    async with Simulator(api_key=KEY, scripts=SCRIPTS) as sim:
        _, everything = await listing(session, sim, {"sort": ["+created_at"], "limit": 1000})
        # Not yet created, not yet visible and other workspaces are not listed.
        assert ids(everything) == ["a-0", "a-1", "a-2", "a-3", "a-4", "b-0"]
        assert everything["total"] == 6
        status, body = await listing(
            session,
            sim,
            {
                "filter": {
                    "created_at": {"$gte": NOW_MS - 4990, "$lt": NOW_MS},
                    "$or": [{"playbook_id": "pb-a"}, {"trigger_type": {"$eq": "schedule"}}],
                },
                "sort": ["-created_at"],
                "limit": 2,
                "offset": 1,
            },
        )
        assert status == 200
        assert ids(body) == ["a-4", "a-3"]
        assert (body["total"], body["limit"], body["offset"]) == (5, 2, 1)
        _, like = await listing(session, sim, {"filter": {"id": {"$like": "A-%"}}})
        assert sorted(ids(like)) == ["a-0", "a-1", "a-2", "a-3", "a-4"]
        _, neq = await listing(session, sim, {"filter": {"playbook_id": {"$neq": "pb-a"}}})
        assert ids(neq) == ["b-0"]
        item = body["results"][0]
        assert set(item) >= {"id", "workspace_id", "playbook_id", "created_at", "state"}
        assert item["state"] == "Running"


async def test_a_bad_query_or_a_rejected_filter_is_a_400_error_wrapper(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(api_key=KEY, scripts=SCRIPTS) as sim:
        assert (await listing(session, sim, {"limit": 1001}))[0] == 400
        assert (await listing(session, sim, {"filter": {"id": {"$regex": "x"}}}))[0] == 400
        sim.reject_list_filter("trigger_type", "trigger_type cannot be filtered on")
        status, body = await listing(session, sim, {"filter": {"trigger_type": "api"}})
        assert status == 400
        assert set(body) >= ERROR_WRAPPER_KEYS
        assert "trigger_type cannot be filtered on" in body["message"]
        assert sim.list_requests == 3
