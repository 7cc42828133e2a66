"""The ``/_sim/*`` endpoints drive a simulator from outside its process."""

from __future__ import annotations

import json

import aiohttp

from tests.sim.helpers import KEY, WS, get, one, post_hook
from watcher.sim import Simulator


async def test_control_endpoints_drive_a_running_simulator(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(api_key=KEY) as sim:
        control = sim.base_url.removesuffix("/api/v1") + "/_sim"
        async with session.post(f"{control}/scripts", json=[one(["Failed"])]) as r:
            assert r.status == 200
        async with session.post(f"{control}/scripts", json=[one(["!what"])]) as r:
            assert r.status == 400
            assert "!what" in (await r.json())["error"]
        async with session.post(f"{control}/scripts", data=b"not json") as r:
            assert r.status == 400
        assert (await get(session, sim)).json()["state"] == "Failed"

        async with session.post(f"{control}/hooks/h", json=["410"]) as r:
            assert r.status == 200
        async with session.post(f"{control}/hooks/h", json=["999"]) as r:
            assert r.status == 400
        assert (await post_hook(session, sim, "h", {"event_id": "evt_1"})).status == 410

        async with session.post(f"{control}/api-key", json={"key": "new"}) as r:
            assert r.status == 200
        async with session.post(f"{control}/api-key", json={"nokey": 1}) as r:
            assert r.status == 400
        assert (await get(session, sim)).status == 401
        sim.set_api_key(KEY)

        async with session.get(f"{control}/stats") as r:
            assert r.status == 200
            stats = await r.json()
    assert stats == json.loads(json.dumps(sim.stats()))
    assert stats["auth_failures"] == 1
    assert stats["requests"] == {f"{WS}/ex-1": 1}
