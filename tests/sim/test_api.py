"""The execution GET: fault tokens, one step per GET, auth, 404s and the bookkeeping."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from tests.sim.helpers import ERROR_WRAPPER_KEYS, KEY, SCHEMA, WS, get, one, states
from tests.waiting import until
from watcher.sim import Simulator

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
    steps = ["!slow:0.1", "Running", "!slow:0.1", "!slow:30", "Completed"]
    async with Simulator(api_key=KEY, scripts=[one(steps)]) as sim:
        started = time.monotonic()
        assert (await get(session, sim)).json()["state"] == "Pending"  # no state step yet
        assert time.monotonic() - started >= 0.09
        assert (await get(session, sim)).json()["state"] == "Running"
        assert (await get(session, sim)).json()["state"] == "Running"
        # A client that gives up on !slow:30 has consumed the step all the same.
        giving_up = asyncio.create_task(get(session, sim))
        await until(lambda: sim.requests_for(WS, "ex-1") == 4)
        giving_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await giving_up
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
