"""The demo's scripts end the way the demo needs them to."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.sim.helpers import KEY, get
from watcher.sim import DEMO_MISSING_EXECUTION_ID, TERMINAL_STATES, Simulator, demo_scripts


async def test_demo_scripts_are_a_realistic_mix_that_ends_within_8_polls(
    session: aiohttp.ClientSession,
) -> None:
    scripts = demo_scripts()
    assert 8 <= len(scripts) <= 12
    assert len({s["workspace_id"] for s in scripts}) == 2
    seen: set[str] = set()
    faults: set[int] = set()
    finals: dict[str, dict[str, Any]] = {}
    async with Simulator(api_key=KEY, scripts=scripts) as sim:
        for script in scripts:
            ws, ex = script["workspace_id"], script["execution_id"]
            for polls in range(1, 9):  # noqa: B007 (used after the loop)
                try:
                    reply = await get(session, sim, ex, ws)
                except aiohttp.ClientError:
                    faults.add(0)
                    continue
                if reply.status == 400:
                    finals[ex] = {"state": "invalid"}
                    break
                if reply.status != 200:
                    faults.add(reply.status)
                    continue
                body = reply.json()
                state = body["state_ui"] or body["state"]
                seen.add(state)
                if state.casefold() in TERMINAL_STATES:
                    finals[ex] = body
                    break
            assert ex in finals, f"{ex} did not end within 8 polls"
            assert polls >= 2 or finals[ex] == {"state": "invalid"}
        assert (await get(session, sim, DEMO_MISSING_EXECUTION_ID)).status == 404
    states = {b["state_ui"] or b["state"] for b in finals.values() if "id" in b}
    assert {"Completed", "completed", "Failed", "Cancelled", "Timeout"} <= states
    assert "Paused" in seen
    assert {0, 429, 502, 503} <= faults
    failed = [b for b in finals.values() if b.get("state") == "Failed"]
    assert failed
    assert failed[0]["error_details"]
    assert "invalid" in {b["state"] for b in finals.values()}
