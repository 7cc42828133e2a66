"""The simulated Blink API and webhook receiver, exercised over real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from watcher.sim import (
    DEMO_MISSING_EXECUTION_ID,
    TERMINAL_STATES,
    Simulator,
    demo_scripts,
    main,
)

KEY = "sim-test-key"
WS = "ws-main"

# Every property of models.PlaybookExecutionWithSubflowNames in the seed
# OpenAPI text, with its schema type. Written out here, not imported, so a
# field dropped or mistyped in sim.py fails the test.
SCHEMA: dict[str, type] = {
    "app_id": str,
    "async_parent_execution_id": str,
    "cancel_reason": str,
    "created_at": int,
    "created_by": str,
    "ctrl_id": str,
    "display_name": str,
    "draft_execution_number": int,
    "duration": int,
    "engine_v2_compile_error": str,
    "engine_version": str,
    "error_details": dict,
    "event": dict,
    "execution_depth": int,
    "execution_number": int,
    "finished_at": int,
    "id": str,
    "input_values_origin_exec_id": str,
    "inputs": dict,
    "last_playbook_name": str,
    "name": str,
    "net_runtime_ms": int,
    "pack_id": str,
    "parent_execution_id": str,
    "playbook": str,
    "playbook_deleted": bool,
    "playbook_id": str,
    "playbook_name": str,
    "runner_cluster_version": str,
    "runner_group_id": str,
    "runner_id": str,
    "runner_version": str,
    "scheduled_trigger_timezone": str,
    "started_at": int,
    "state": str,
    "state_ui": str,
    "step_results": dict,
    "subflows_reference_to_name_mapping": dict,
    "tenant_id": str,
    "test_session_id": str,
    "timeout": int,
    "top_execution_id": str,
    "top_execution_started_at": int,
    "trigger_type": str,
    "type": str,
    "updated_at": int,
    "updated_by": str,
    "version": str,
    "with_concurrency_limit": bool,
    "workspace_id": str,
}
ERROR_WRAPPER_KEYS = {"data", "details", "identifier", "message", "status", "user_error"}


def one(steps: list[str], execution_id: str = "ex-1", **extra: Any) -> dict[str, Any]:
    return {"workspace_id": WS, "execution_id": execution_id, "steps": steps, **extra}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # force_close: a fresh connection per request. On a reused keep-alive
    # connection aiohttp transparently retries a GET once when the server
    # disconnects, which would hide !reset and consume an extra step.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, headers={"BLINK-API-KEY": KEY}) as client:
        yield client


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


async def get(
    session: aiohttp.ClientSession,
    sim: Simulator,
    execution_id: str = "ex-1",
    workspace_id: str = WS,
    **kwargs: Any,
) -> Reply:
    url = f"{sim.base_url}/workspace/{workspace_id}/executions/{execution_id}"
    async with session.get(url, **kwargs) as resp:
        return Reply(resp.status, dict(resp.headers), await resp.read())


async def states(session: aiohttp.ClientSession, sim: Simulator, n: int) -> list[str]:
    return [(await get(session, sim)).json()["state_ui"] for _ in range(n)]


# ----------------------------------------------------------------- 200 bodies


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


# ---------------------------------------------------------------- fault tokens


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500, 502, 503])
async def test_error_tokens_answer_an_error_wrapper(
    session: aiohttp.ClientSession, status: int
) -> None:
    async with Simulator(api_key=KEY, scripts=[one([f"!{status}"])]) as sim:
        reply = await get(session, sim)
        assert sim.requests_for(WS, "ex-1") == 1
        assert sim.auth_failures == 0  # a scripted !401 is not an auth failure
    assert reply.status == status
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert set(body) >= ERROR_WRAPPER_KEYS
    assert body["status"] == status
    assert body["message"]
    assert "Retry-After" not in reply.headers


@pytest.mark.parametrize(("token", "retry_after"), [("!429", "1"), ("!429:0.05", "0.05")])
async def test_429_sends_retry_after_verbatim(
    session: aiohttp.ClientSession, token: str, retry_after: str
) -> None:
    async with Simulator(api_key=KEY, scripts=[one([token])]) as sim:
        reply = await get(session, sim)
    assert reply.status == 429
    assert reply.headers["Retry-After"] == retry_after
    assert reply.json()["status"] == 429


async def test_html_is_a_502_load_balancer_page(session: aiohttp.ClientSession) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["!html"])]) as sim:
        reply = await get(session, sim)
    assert reply.status == 502
    assert reply.headers["Content-Type"].startswith("text/html")
    assert reply.body.startswith(b"<html>")


async def test_empty_is_a_500_without_a_body(session: aiohttp.ClientSession) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["!empty"])]) as sim:
        reply = await get(session, sim)
    assert reply.status == 500
    assert reply.body == b""


async def test_reset_closes_the_connection_without_a_response(
    session: aiohttp.ClientSession,
) -> None:
    # Two resets: aiohttp retries a GET once by itself after a disconnect.
    async with Simulator(api_key=KEY, scripts=[one(["!reset", "!reset", "Running"])]) as sim:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await get(session, sim)
        assert sim.requests_for(WS, "ex-1") == 2
        assert (await get(session, sim)).json()["state"] == "Running"


async def test_a_single_reset_is_absorbed_by_aiohttps_own_retry(
    session: aiohttp.ClientSession,
) -> None:
    # Pinned so the client's authors know: one !reset costs two steps and is
    # invisible to an aiohttp caller.
    async with Simulator(api_key=KEY, scripts=[one(["!reset", "Running"])]) as sim:
        assert (await get(session, sim)).json()["state"] == "Running"
        assert sim.requests_for(WS, "ex-1") == 2


async def test_truncated_gives_the_client_a_payload_error(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["!truncated", "Running"])]) as sim:
        with pytest.raises(aiohttp.ClientPayloadError):
            await get(session, sim)
        assert (await get(session, sim)).status == 200


async def test_notjson_is_a_200_json_content_type_that_does_not_parse(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["!notjson"])]) as sim:
        reply = await get(session, sim)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        reply.json()


async def test_nonutf8_body_has_invalid_utf8_around_the_recent_state(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["Running", "!nonutf8"])]) as sim:
        await get(session, sim)
        reply = await get(session, sim)
    assert reply.status == 200
    with pytest.raises(UnicodeDecodeError):
        reply.body.decode("utf-8")
    assert json.loads(reply.body.decode("utf-8", "replace"))["state"] == "Running"


async def test_wrongtypes_sends_wrong_types_in_the_used_fields(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["!wrongtypes"])]) as sim:
        reply = await get(session, sim)
    assert reply.status == 200
    body = reply.json()
    assert body["duration"] == "abc"
    assert body["step_results"] == [1, 2]
    assert body["error_details"] == "x"
    assert body["state"] == 42
    assert body["started_at"] == "yesterday"
    assert not isinstance(body["state_ui"], str)


async def test_huge_is_about_8_mib_of_valid_json(session: aiohttp.ClientSession) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["Running", "!huge"])]) as sim:
        await get(session, sim)
        reply = await get(session, sim)
    assert reply.status == 200
    assert 8 << 20 <= len(reply.body) < 9 << 20
    body = reply.json()
    assert body["state"] == "Running"
    assert set(SCHEMA) <= set(body)


async def test_slow_waits_then_answers_the_most_recent_state(
    session: aiohttp.ClientSession,
) -> None:
    steps = ["!slow:0.1", "Running", "!slow:0.1", "!slow:5", "Completed"]
    async with Simulator(api_key=KEY, scripts=[one(steps)]) as sim:
        started = time.monotonic()
        assert (await get(session, sim)).json()["state"] == "Pending"  # no state step yet
        assert time.monotonic() - started >= 0.09
        assert (await get(session, sim)).json()["state"] == "Running"
        assert (await get(session, sim)).json()["state"] == "Running"
        with pytest.raises(TimeoutError):
            await get(session, sim, timeout=aiohttp.ClientTimeout(total=0.1))
        assert (await get(session, sim)).json()["state"] == "Completed"
        assert sim.requests_for(WS, "ex-1") == 5


# ------------------------------------------------------- consumption, auth, 404


async def test_each_get_consumes_a_step_and_the_last_repeats(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["Pending", "Running", "Completed"])]) as sim:
        assert await states(session, sim, 5) == [
            "Pending",
            "Running",
            "Completed",
            "Completed",
            "Completed",
        ]
        assert sim.requests_for(WS, "ex-1") == 5
        assert sim.requests_after_terminal(WS, "ex-1") == 2
        assert sim.total_requests == 5


async def test_faults_after_terminal_count_as_after_terminal(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["!503", "Completed", "!503"])]) as sim:
        assert (await get(session, sim)).status == 503
        assert sim.requests_after_terminal(WS, "ex-1") == 0
        await get(session, sim)
        await get(session, sim)
        assert sim.requests_after_terminal(WS, "ex-1") == 1


@pytest.mark.parametrize("headers", [{}, {"BLINK-API-KEY": "wrong"}, {"BLINK-API-KEY": ""}])
async def test_wrong_or_missing_key_is_401_without_consuming_a_step(
    headers: dict[str, str],
) -> None:
    async with (
        Simulator(api_key=KEY, scripts=[one(["Pending", "Completed"])]) as sim,
        aiohttp.ClientSession(headers=headers) as bad,
        aiohttp.ClientSession(headers={"BLINK-API-KEY": KEY}) as good,
    ):
        for _ in range(2):
            reply = await get(bad, sim)
            assert reply.status == 401
            assert set(reply.json()) >= ERROR_WRAPPER_KEYS
            assert b"wrong" not in reply.body
            assert KEY.encode() not in reply.body
        assert sim.auth_failures == 2
        assert sim.requests_for(WS, "ex-1") == 0
        assert (await get(good, sim)).json()["state"] == "Pending"
        assert sim.total_requests == 3


async def test_set_api_key_turns_auth_failures_on_and_off(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["Running"])]) as sim:
        sim.set_api_key("rotated")
        assert (await get(session, sim)).status == 401
        sim.set_api_key(KEY)
        assert (await get(session, sim)).status == 200
        assert sim.auth_failures == 1


async def test_unknown_execution_or_workspace_is_404_and_counted(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["Running"])]) as sim:
        missing = await get(session, sim, "nope")
        other_ws = await get(session, sim, "ex-1", "ws-other")
        assert sim.requests_for(WS, "nope") == 1
        assert sim.requests_for("ws-other", "ex-1") == 1
        assert sim.requests_for(WS, "ex-1") == 0
    for reply in (missing, other_ws):
        assert reply.status == 404
        assert reply.json()["status"] == 404


async def test_head_does_not_consume_a_step(session: aiohttp.ClientSession) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["Pending", "Running"])]) as sim:
        url = f"{sim.base_url}/workspace/{WS}/executions/ex-1"
        async with session.head(url) as r:
            assert r.status == 405
        assert (await get(session, sim)).json()["state"] == "Pending"


async def test_with_apply_view_is_recorded(session: aiohttp.ClientSession) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["Running"])]) as sim:
        await get(session, sim)
        assert not sim.apply_view_seen
        await get(session, sim, params={"withApplyView": "true"})
        assert sim.apply_view_seen


async def test_terminal_at_is_when_the_first_terminal_200_was_served(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(api_key=KEY, scripts=[one(["Running", "Failed"])]) as sim:
        await get(session, sim)
        assert sim.terminal_at(WS, "ex-1") is None
        before = time.time()
        body = (await get(session, sim)).json()
        after = time.time()
        at = sim.terminal_at(WS, "ex-1")
        assert at is not None
        assert before <= at <= after
        await get(session, sim)
        assert sim.terminal_at(WS, "ex-1") == at
        assert sim.terminal_at(WS, "unknown") is None
    assert abs(body["finished_at"] - at * 1000) <= 1


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


async def poll_until(
    session: aiohttp.ClientSession, sim: Simulator, execution_id: str, workspace_id: str = WS
) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        body: dict[str, Any] = (await get(session, sim, execution_id, workspace_id)).json()
        if body["state"].casefold() in TERMINAL_STATES or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.01)


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


# ---------------------------------------------------------------- receiver


async def post_hook(
    session: aiohttp.ClientSession, sim: Simulator, name: str, event: dict[str, Any], **kw: Any
) -> Reply:
    headers = {"webhook-id": event["event_id"], "Content-Type": "application/json"}
    async with session.post(sim.hook_url(name), data=json.dumps(event), headers=headers, **kw) as r:
        return Reply(r.status, dict(r.headers), await r.read())


async def test_receiver_records_every_request(session: aiohttp.ClientSession) -> None:
    event = {"event": "execution.finished", "event_id": "evt_1", "state": "Completed"}
    async with Simulator(api_key=KEY) as sim:
        before = time.time()
        reply = await post_hook(session, sim, "chatops", event)
        after = time.time()
        assert sim.hook_url("chatops") == f"http://127.0.0.1:{sim.port}/hooks/chatops"
    assert reply.status == 200
    [delivery] = sim.deliveries
    assert delivery.name == "chatops"
    assert delivery.headers["webhook-id"] == "evt_1"  # keys lower-cased
    assert delivery.headers["content-type"] == "application/json"
    assert json.loads(delivery.body) == event
    assert before <= delivery.received_at <= after
    assert delivery.status == 200
    assert sim.delivered_events() == [event]


async def test_receiver_tokens_are_consumed_per_request_and_the_last_repeats(
    session: aiohttp.ClientSession,
) -> None:
    tokens = ["503", "500", "400", "410", "429:0.5", "429", "204"]
    async with Simulator(api_key=KEY, hook_scripts={"h": tokens}) as sim:
        replies = [await post_hook(session, sim, "h", {"event_id": f"evt_{i}"}) for i in range(9)]
        other = await post_hook(session, sim, "other", {"event_id": "evt_x"})
    assert [r.status for r in replies] == [503, 500, 400, 410, 429, 429, 204, 204, 204]
    assert replies[4].headers["Retry-After"] == "0.5"
    assert replies[5].headers["Retry-After"] == "1"
    assert "Retry-After" not in replies[0].headers
    assert other.status == 200  # other names keep the default ["200"]
    assert [d.status for d in sim.deliveries][:9] == [r.status for r in replies]
    assert [e["event_id"] for e in sim.delivered_events()] == ["evt_6", "evt_7", "evt_8", "evt_x"]


async def test_receiver_drop_aborts_and_records_no_status(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(api_key=KEY, hook_scripts={"h": ["drop", "200"]}) as sim:
        with pytest.raises(aiohttp.ClientConnectionError):
            await post_hook(session, sim, "h", {"event_id": "evt_1"})
        assert (await post_hook(session, sim, "h", {"event_id": "evt_1"})).status == 200
    assert [d.status for d in sim.deliveries] == [None, 200]
    assert sim.delivered_events() == [{"event_id": "evt_1"}]


async def test_receiver_slow_delays_and_a_client_that_gives_up_is_not_answered(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(api_key=KEY, hook_scripts={"h": ["slow:0.1", "slow:0.4"]}) as sim:
        started = time.monotonic()
        assert (await post_hook(session, sim, "h", {"event_id": "evt_1"})).status == 200
        assert time.monotonic() - started >= 0.09
        timeout = aiohttp.ClientTimeout(total=0.1)
        with pytest.raises(TimeoutError):
            await post_hook(session, sim, "h", {"event_id": "evt_2"}, timeout=timeout)
        await asyncio.sleep(0.6)  # past the delay: the handler would have answered by now
    assert [d.status for d in sim.deliveries] == [200, None]


@pytest.mark.parametrize("token", ["600", "199", "drop:1", "slow", "429:x", ""])
def test_unknown_hook_tokens_are_rejected(token: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(token))):
        Simulator(api_key=KEY, hook_scripts={"h": ["200", token]})


# ---------------------------------------------------------------- control, stats


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


# ---------------------------------------------------------------------- demo


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


# ----------------------------------------------------------------------- CLI


async def test_cli_prints_its_listening_line_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts.json"
    scripts.write_text(json.dumps([one(["Running", "Completed"])]))
    hooks = tmp_path / "hooks.json"
    hooks.write_text(json.dumps({"h": ["503"]}))
    env = {**os.environ, "SIM_KEY": KEY}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "watcher.sim", "--scripts", str(scripts),
        "--hook-scripts", str(hooks), "--api-key-env", "SIM_KEY", "--demo",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = json.loads(await asyncio.wait_for(proc.stdout.readline(), timeout=20))
        port = line["port"]
        assert line["base_url"] == f"http://127.0.0.1:{port}/api/v1"
        assert line["hooks_base"] == f"http://127.0.0.1:{port}/hooks"
        async with aiohttp.ClientSession(headers={"BLINK-API-KEY": KEY}) as client:
            url = f"{line['base_url']}/workspace/{WS}/executions/ex-1"
            async with client.get(url) as r:
                assert (await r.json())["state"] == "Running"
            async with client.post(f"{line['hooks_base']}/h", json={}) as r:
                assert r.status == 503
            demo = demo_scripts()[0]
            ws, ex = demo["workspace_id"], demo["execution_id"]
            url = f"{line['base_url']}/workspace/{ws}/executions/{ex}"
            async with client.get(url) as r:
                assert r.status == 200  # --demo loaded the demo scripts too
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), timeout=20)
        rest, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert rc == 0, err
    assert rest == b""  # exactly one line on stdout


def test_cli_refuses_to_start_without_an_api_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SIM_NO_SUCH_KEY", raising=False)
    assert main(["--api-key-env", "SIM_NO_SUCH_KEY"]) == 2
    assert "SIM_NO_SUCH_KEY" in capsys.readouterr().err


def test_cli_reports_a_bad_scripts_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "scripts.json"
    bad.write_text(json.dumps([one(["!bogus"])]))
    monkeypatch.setenv("BLINK_API_KEY", KEY)
    assert main(["--scripts", str(bad)]) == 2
    err = capsys.readouterr()
    assert "!bogus" in err.err
    assert err.out == ""
