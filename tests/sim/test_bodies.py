"""The 200 bodies: every schema field, realistic values, state tokens, ``fields`` overrides."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest

from tests.sim.helpers import KEY, SCHEMA, WS, get, one
from watcher.sim import TERMINAL_STATES, Simulator


async def test_running_body_has_every_schema_field_with_its_schema_type(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["Running"])]) as sim:
        reply = await get(session, sim)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert set(SCHEMA) <= set(body)
    for name, typ in SCHEMA.items():
        value = body[name]
        assert isinstance(value, typ), (name, value)
        if typ is int:
            assert not isinstance(value, bool), name
    assert body["id"] == "ex-1"
    assert body["workspace_id"] == WS
    assert body["state"] == body["state_ui"] == "Running"
    assert body["finished_at"] == 0
    assert body["started_at"] > 0
    assert body["display_name"] == f"{body['playbook_name']} #{body['execution_number']}"
    assert re.fullmatch(r"01[0-9A-HJKMNP-TV-Z]{24}", body["playbook_id"])


async def test_completed_body_reports_duration_and_step_results(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["Running", "Completed"])]) as sim:
        await get(session, sim)
        body = (await get(session, sim)).json()
    assert body["state"] == body["state_ui"] == "Completed"
    assert body["finished_at"] >= body["started_at"] > 0
    assert body["duration"] == body["finished_at"] - body["started_at"]
    assert 0 <= body["net_runtime_ms"] <= body["duration"]
    assert body["step_results"]
    assert all(isinstance(v, int) for v in body["step_results"].values())
    assert body["step_results"]["failed"] == 0
    assert body["error_details"] == {}


@pytest.mark.parametrize("state", ["Failed", "Timeout"])
async def test_failed_and_timeout_carry_error_details(
    session: aiohttp.ClientSession, state: str
) -> None:
    async with Simulator(api_key=KEY, scripts=[one([state])]) as sim:
        body = (await get(session, sim)).json()
    assert body["state_ui"] == state
    assert body["error_details"]
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in body["error_details"].items())
    assert body["step_results"]["failed"] >= 1
    assert body["finished_at"] > 0


async def test_cancelled_has_a_cancel_reason_and_no_error_details(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["Cancelled"])]) as sim:
        body = (await get(session, sim)).json()
    assert body["cancel_reason"]
    assert body["error_details"] == {}
    assert body["finished_at"] > 0


async def test_duration_grows_while_running_and_identity_is_stable(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["Running"])]) as sim:
        first = (await get(session, sim)).json()
        await asyncio.sleep(0.03)
        second = (await get(session, sim)).json()
    assert second["duration"] > first["duration"] >= 0
    for name in ("created_at", "started_at", "execution_number", "playbook_id", "display_name"):
        assert first[name] == second[name], name


async def test_state_only_and_ui_only_tokens(session: aiohttp.ClientSession) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["state=Running", "ui=Completed"])]) as sim:
        state_only = (await get(session, sim)).json()
        ui_only = (await get(session, sim)).json()
        assert sim.requests_after_terminal(WS, "ex-1") == 0
        await get(session, sim)
        # ui=Completed is terminal (state_ui wins), so this GET came after it.
        assert sim.requests_after_terminal(WS, "ex-1") == 1
    assert (state_only["state"], state_only["state_ui"]) == ("Running", "")
    assert (ui_only["state"], ui_only["state_ui"]) == ("", "Completed")


@pytest.mark.parametrize("name", ["completed", "Weird-New-State", "Paused", "Skipped"])
async def test_any_state_name_is_echoed_verbatim(session: aiohttp.ClientSession, name: str) -> None:
    async with Simulator(api_key=KEY, scripts=[one([name])]) as sim:
        body = (await get(session, sim)).json()
        after = sim.terminal_at(WS, "ex-1")
    assert body["state"] == body["state_ui"] == name
    assert (after is not None) == (name.casefold() in TERMINAL_STATES)


async def test_fields_overrides_are_applied_last(session: aiohttp.ClientSession) -> None:
    fields = {"playbook_name": "Custom flow", "duration": 5, "error_details": {"a": "b"}, "x": 1}
    async with Simulator(api_key=KEY, scripts=[one(["Failed"], fields=fields)]) as sim:
        body = (await get(session, sim)).json()
    assert {k: body[k] for k in fields} == fields
    assert body["state"] == "Failed"


async def test_naming_a_known_playbook_gives_its_details(session: aiohttp.ClientSession) -> None:
    fields = {"playbook_name": "Isolate compromised host"}
    async with Simulator(api_key=KEY, scripts=[one(["Failed"], fields=fields)]) as sim:
        body = (await get(session, sim)).json()
    assert body["display_name"].startswith("Isolate compromised host #")
    assert "CrowdStrike" in json.dumps(body["error_details"])
