"""The HTTP client every simulator test talks through."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.sim.helpers import KEY


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # force_close: a fresh connection per request. On a reused keep-alive
    # connection aiohttp transparently retries a GET once when the server
    # disconnects, which would hide !reset and consume an extra step.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, headers={"BLINK-API-KEY": KEY}) as client:
        yield client
