"""The webhook receiver: Delivery records and answers driven by hook tokens."""

from __future__ import annotations

import asyncio
import json
import re
import time

import aiohttp
import pytest

from tests.sim.helpers import KEY, post_hook
from tests.waiting import until
from watcher.sim import Simulator


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
    async with Simulator(api_key=KEY, hook_scripts={"h": ["slow:0.1", "slow:30"]}) as sim:
        started = time.monotonic()
        assert (await post_hook(session, sim, "h", {"event_id": "evt_1"})).status == 200
        assert time.monotonic() - started >= 0.09
        giving_up = asyncio.create_task(post_hook(session, sim, "h", {"event_id": "evt_2"}))
        await until(lambda: len(sim.deliveries) == 2)
        assert sim.hooks_in_flight == 1  # waiting out slow:30
        giving_up.cancel()  # the client gives up: its connection closes
        with pytest.raises(asyncio.CancelledError):
            await giving_up
        # The handler ends with the connection instead of answering 30 s later.
        await until(lambda: sim.hooks_in_flight == 0)
    assert [d.status for d in sim.deliveries] == [200, None]


@pytest.mark.parametrize("token", ["600", "199", "drop:1", "slow", "429:x", ""])
def test_unknown_hook_tokens_are_rejected(token: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(token))):
        Simulator(api_key=KEY, hook_scripts={"h": ["200", token]})
