"""BlinkClient against aioresponses: every fault in docs/contract.md, plus its helpers."""

from __future__ import annotations

import asyncio
import contextlib
import random
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from watcher import __version__
from watcher.blink import BlinkClient, RateLimiter
from watcher.config import BlinkConfig, Secret
from watcher.errors import AuthError, PermanentApiError, TransientApiError
from watcher.http import backoff_delay, parse_retry_after
from watcher.models import Execution

API_KEY = "blink-api-key-Zq8X2w7RkP3m"
KEY = ("ws-1", "ex-1")
EXECUTION_URL = "https://app.blinkops.com/api/v1/workspace/ws-1/executions/ex-1"


class _Response(aiohttp.ClientResponse):
    # aioresponses 0.7.9 predates aiohttp 3.14's required ``stream_writer`` argument
    # (pnuckowski/aioresponses#289); a finished request only reads its output_size.
    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", types.SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class _NoReadResponse(_Response):
    async def read(self) -> bytes:
        raise AssertionError("the body must not be read")


class MockApi(aioresponses):
    """aioresponses with the 3.14 shim, and a count of requests per URL."""

    def add(self, url: Any, method: str = "GET", **kwargs: Any) -> None:  # type: ignore[override]
        kwargs.setdefault("response_class", _Response)
        super().add(url, method, **kwargs)

    def calls(self, url: str = EXECUTION_URL) -> list[Any]:
        return list(self.requests.get(("GET", URL(url)), []))


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_config(**overrides: Any) -> BlinkConfig:
    # No rate limit and zero backoff: retries cost no wall time.
    values: dict[str, Any] = {
        "api_key": Secret(API_KEY),
        "rate_limit_per_s": 0.0,
        "retry_attempts": 1,
        "retry_backoff_s": 0.0,
        "retry_backoff_max_s": 0.0,
    }
    values.update(overrides)
    return BlinkConfig(**values)


OpenClient = Callable[..., Awaitable[BlinkClient]]


@pytest.fixture
def api() -> Iterator[MockApi]:
    with MockApi() as mock:
        yield mock


@pytest.fixture
async def open_client(sleep: RecordingSleep) -> AsyncIterator[OpenClient]:
    async with contextlib.AsyncExitStack() as stack:

        async def _open(
            *,
            limiter: RateLimiter | None = None,
            uniform: Callable[[float, float], float] = random.uniform,
            **overrides: Any,
        ) -> BlinkClient:
            client = BlinkClient(
                make_config(**overrides), limiter=limiter, sleep=sleep, uniform=uniform
            )
            return await stack.enter_async_context(client)

        yield _open


class RecordingSleep:
    """An injected sleep: records every delay asked for, waits for none of them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


def ceiling(low: float, high: float) -> float:
    """An injected ``uniform``: jitter always at its ceiling."""
    return high


def floor(low: float, high: float) -> float:
    return low


# --- requests and 200 ----------------------------------------------------------------------


async def test_sends_api_key_and_user_agent(api: MockApi, open_client: OpenClient) -> None:
    client = await open_client()
    api.get(EXECUTION_URL, payload={"state": "Running"})

    await client.get_execution(KEY)

    [call] = api.calls()
    headers = call.kwargs["headers"]
    assert headers["BLINK-API-KEY"] == API_KEY
    assert headers["user-agent"] == f"blink-watcher/{__version__}"
    assert call.kwargs["allow_redirects"] is False


async def test_with_apply_view_adds_the_query(api: MockApi, open_client: OpenClient) -> None:
    client = await open_client(with_apply_view=True)
    api.get(EXECUTION_URL + "?withApplyView=true", payload={"state": "Running"})

    execution = await client.get_execution(KEY)

    assert execution.state == "Running"
    assert len(api.calls(EXECUTION_URL + "?withApplyView=true")) == 1


async def test_without_apply_view_there_is_no_query(api: MockApi, open_client: OpenClient) -> None:
    client = await open_client()
    api.get(EXECUTION_URL, payload={})

    await client.get_execution(KEY)

    assert len(api.calls()) == 1


def test_url_for_quotes_ids_and_uses_the_base_url() -> None:
    client = BlinkClient(make_config(base_url="http://127.0.0.1:8080/api/v1"))

    assert client.url_for(("w s", "a/b?c")) == (
        "http://127.0.0.1:8080/api/v1/workspace/w%20s/executions/a%2Fb%3Fc"
    )


async def test_200_parses_the_execution(api: MockApi, open_client: OpenClient) -> None:
    client = await open_client()
    api.get(
        EXECUTION_URL,
        payload={
            "id": "ex-1",
            "state": "completed",
            "state_ui": "Completed",
            "duration": 1523,
            "step_results": {"Completed": 3},
            "unknown_field": {"ignored": True},
        },
    )

    execution = await client.get_execution(KEY)

    assert execution == Execution(
        id="ex-1",
        state="completed",
        state_ui="Completed",
        duration_ms=1523,
        step_results={"Completed": 3},
    )


async def test_wrong_field_types_give_none_fields(api: MockApi, open_client: OpenClient) -> None:
    client = await open_client()
    api.get(
        EXECUTION_URL,
        payload={"state": 3, "duration": "12", "error_details": [1], "finished_at": True},
    )

    execution = await client.get_execution(KEY)

    assert execution == Execution()


# --- transient failures: retried, then TransientApiError -----------------------------------


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
async def test_retryable_status_is_retried_up_to_retry_attempts(
    api: MockApi, open_client: OpenClient, status: int
) -> None:
    client = await open_client(retry_attempts=3)
    api.get(EXECUTION_URL, status=status, repeat=True)

    with pytest.raises(TransientApiError) as info:
        await client.get_execution(KEY)

    assert info.value.status == status
    assert len(api.calls()) == 3


async def test_transient_failures_then_success_returns_the_execution(
    api: MockApi, open_client: OpenClient
) -> None:
    client = await open_client(retry_attempts=4)
    api.get(EXECUTION_URL, status=503)
    api.get(EXECUTION_URL, exception=aiohttp.ServerDisconnectedError())
    api.get(EXECUTION_URL, payload={"state": "Running"})

    execution = await client.get_execution(KEY)

    assert execution.state == "Running"
    assert len(api.calls()) == 3


async def test_one_attempt_means_no_retry(api: MockApi, open_client: OpenClient) -> None:
    client = await open_client(retry_attempts=1)
    api.get(EXECUTION_URL, status=503, repeat=True)

    with pytest.raises(TransientApiError):
        await client.get_execution(KEY)

    assert len(api.calls()) == 1


async def test_retry_waits_grow_exponentially_by_attempt(
    api: MockApi, open_client: OpenClient, sleep: RecordingSleep
) -> None:
    client = await open_client(
        retry_attempts=4, retry_backoff_s=0.5, retry_backoff_max_s=1.5, uniform=ceiling
    )
    api.get(EXECUTION_URL, status=500, repeat=True)

    with pytest.raises(TransientApiError):
        await client.get_execution(KEY)

    assert sleep.delays == [0.5, 1.0, 1.5]
    assert len(api.calls()) == 4


async def test_429_retry_after_is_a_floor_on_the_wait(
    api: MockApi, open_client: OpenClient, sleep: RecordingSleep
) -> None:
    client = await open_client(retry_attempts=2)
    api.get(EXECUTION_URL, status=429, headers={"Retry-After": "7"})
    api.get(EXECUTION_URL, payload={"state": "Running"})

    execution = await client.get_execution(KEY)

    assert execution.state == "Running"
    assert 7.0 in sleep.delays  # zero backoff configured: only Retry-After makes it 7


async def test_429_carries_retry_after_when_attempts_run_out(
    api: MockApi, open_client: OpenClient, sleep: RecordingSleep
) -> None:
    client = await open_client(retry_attempts=1)
    api.get(EXECUTION_URL, status=429, headers={"Retry-After": "2.5"})

    with pytest.raises(TransientApiError) as info:
        await client.get_execution(KEY)

    assert info.value.status == 429
    assert info.value.retry_after_s == 2.5


async def test_429_slows_the_rate_limiter_and_success_recovers_it(
    api: MockApi, open_client: OpenClient
) -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock)
    client = await open_client(limiter=limiter)
    api.get(EXECUTION_URL, status=429)
    api.get(EXECUTION_URL, payload={"state": "Running"})

    with pytest.raises(TransientApiError):
        await client.get_execution(KEY)
    slowed = limiter.rate
    clock.now += 60  # past every reserved slot: nothing to wait for
    await client.get_execution(KEY)

    assert slowed == 5.0
    assert slowed < limiter.rate <= 10.0


@pytest.mark.parametrize(
    "exception",
    [
        aiohttp.ClientConnectionError("connection refused"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("truncated"),
        TimeoutError(),
    ],
    ids=["connection", "disconnected", "payload", "timeout"],
)
async def test_network_errors_are_transient(
    api: MockApi, open_client: OpenClient, exception: Exception
) -> None:
    client = await open_client(retry_attempts=2)
    api.get(EXECUTION_URL, exception=exception, repeat=True)

    with pytest.raises(TransientApiError) as info:
        await client.get_execution(KEY)

    assert info.value.status is None
    assert len(api.calls()) == 2


@pytest.mark.parametrize(
    "body",
    [
        b"<html>gateway</html>",
        b"",
        b'{"state": "Runn',
        b'{"state": "\xff\xfe"}',
        b"[1, 2, 3]",
        b'"Completed"',
        b"null",
        b"[" * 50_000,
    ],
    ids=["html", "empty", "truncated", "not-utf8", "array", "string", "null", "deep"],
)
async def test_unusable_200_body_is_transient(
    api: MockApi, open_client: OpenClient, body: bytes
) -> None:
    client = await open_client()
    api.get(EXECUTION_URL, body=body)

    with pytest.raises(TransientApiError) as info:
        await client.get_execution(KEY)

    assert info.value.status == 200


async def test_declared_body_over_the_cap_is_transient_without_reading_it(
    api: MockApi, open_client: OpenClient
) -> None:
    client = await open_client(max_response_bytes=1024)
    api.get(
        EXECUTION_URL,
        body=b"{}",
        headers={"Content-Length": str(10 * 1024 * 1024)},
        response_class=_NoReadResponse,
    )

    with pytest.raises(TransientApiError) as info:
        await client.get_execution(KEY)

    assert "cap" in str(info.value)


async def test_streamed_body_over_the_cap_is_transient(
    api: MockApi, open_client: OpenClient
) -> None:
    client = await open_client(max_response_bytes=1024)
    api.get(EXECUTION_URL, body=b'{"state": "Running"}' + b" " * 1024)

    with pytest.raises(TransientApiError) as info:
        await client.get_execution(KEY)

    assert "1024-byte cap" in str(info.value)


async def test_body_of_exactly_the_cap_is_read(api: MockApi, open_client: OpenClient) -> None:
    client = await open_client(max_response_bytes=1024)
    body = b'{"state": "Running"}'
    api.get(EXECUTION_URL, body=body.ljust(1024))

    execution = await client.get_execution(KEY)

    assert execution.state == "Running"


@pytest.mark.parametrize("status", [204, 301, 302, 409, 422])
async def test_unexpected_status_is_transient_not_the_end_of_the_watch(
    api: MockApi, open_client: OpenClient, status: int
) -> None:
    client = await open_client()
    api.get(EXECUTION_URL, status=status, headers={"Location": "https://elsewhere.example/"})

    with pytest.raises(TransientApiError) as info:
        await client.get_execution(KEY)

    assert info.value.status == status
    assert f"unexpected HTTP {status}" in str(info.value)


# --- definitive answers: at once, no retries -----------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_raises_at_once_without_the_key(
    api: MockApi, open_client: OpenClient, status: int
) -> None:
    client = await open_client(retry_attempts=4)
    api.get(EXECUTION_URL, status=status, payload={"message": f"invalid key {API_KEY}"})

    with pytest.raises(AuthError) as info:
        await client.get_execution(KEY)

    assert info.value.status == status
    assert API_KEY not in str(info.value)
    assert "API key" in str(info.value)
    assert len(api.calls()) == 1


@pytest.mark.parametrize("status", [400, 404])
async def test_invalid_or_not_found_raises_permanent_at_once(
    api: MockApi, open_client: OpenClient, status: int
) -> None:
    client = await open_client(retry_attempts=4)
    api.get(
        EXECUTION_URL,
        status=status,
        payload={"message": "Execution not found", "details": "id ex-1", "status": status},
    )

    with pytest.raises(PermanentApiError) as info:
        await client.get_execution(KEY)

    assert info.value.status == status
    assert str(info.value) == f"HTTP {status}: Execution not found: id ex-1"
    assert len(api.calls()) == 1


@pytest.mark.parametrize(("status", "error"), [(401, AuthError), (404, PermanentApiError)])
async def test_definitive_answer_during_retries_stops_them(
    api: MockApi, open_client: OpenClient, status: int, error: type[Exception]
) -> None:
    client = await open_client(retry_attempts=4)
    api.get(EXECUTION_URL, status=503)
    api.get(EXECUTION_URL, status=503)
    api.get(EXECUTION_URL, status=status)
    api.get(EXECUTION_URL, payload={"state": "Running"})

    with pytest.raises(error):
        await client.get_execution(KEY)

    assert len(api.calls()) == 3


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"<!DOCTYPE html><html><h1>502 Bad Gateway</h1></html>", "text/html", "HTML error page"),
        (b"<html><body>oops</body></html>", "application/octet-stream", "HTML error page"),
        (b"", "application/json", "empty body"),
        (b'{"message": "timed out"}', "Application/JSON; charset=utf-8", "timed out"),
        (b'{"message": ""}', "application/json", '{"message": ""}'),
        (b"[" * 50_000, "application/json", "[" * 200),
        (b"plain words\n", "text/plain", "plain words"),
    ],
    ids=["html", "html-sniffed", "empty", "error-wrapper", "empty-message", "deep-json", "text"],
)  # fmt: skip
async def test_error_body_gives_a_short_readable_reason(
    api: MockApi, open_client: OpenClient, body: bytes, content_type: str, reason: str
) -> None:
    client = await open_client()
    api.get(EXECUTION_URL, status=500, body=body, content_type=content_type)

    with pytest.raises(TransientApiError) as info:
        await client.get_execution(KEY)

    assert str(info.value) == f"HTTP 500: {reason}"


async def test_long_error_body_is_cut_short(api: MockApi, open_client: OpenClient) -> None:
    client = await open_client()
    api.get(EXECUTION_URL, status=503, body="x" * 100_000, content_type="text/plain")

    with pytest.raises(TransientApiError) as info:
        await client.get_execution(KEY)

    assert len(str(info.value)) < 300


async def test_error_body_echoing_the_key_is_scrubbed(
    api: MockApi, open_client: OpenClient
) -> None:
    client = await open_client()
    api.get(EXECUTION_URL, status=500, payload={"message": f"bad header BLINK-API-KEY={API_KEY}"})

    with pytest.raises(TransientApiError) as info:
        await client.get_execution(KEY)

    assert str(info.value) == "HTTP 500: bad header BLINK-API-KEY=<redacted>"


async def test_key_straddling_the_reason_cut_leaks_no_prefix(
    api: MockApi, open_client: OpenClient
) -> None:
    client = await open_client()
    api.get(EXECUTION_URL, status=502, body="e" * 190 + API_KEY, content_type="text/plain")

    with pytest.raises(TransientApiError) as info:
        await client.get_execution(KEY)

    assert API_KEY[:8] not in str(info.value)


# --- observer and lifecycle ----------------------------------------------------------------


async def test_observer_sees_each_outcome(api: MockApi) -> None:
    outcomes: list[str] = []
    client = BlinkClient(make_config(), observer=lambda outcome, _s: outcomes.append(outcome))
    for status in (200, 404, 400, 401, 503):
        api.get(EXECUTION_URL, status=status, payload={})

    async with client:
        for _ in range(5):
            with contextlib.suppress(Exception):
                await client.get_execution(KEY)

    assert outcomes == ["ok", "not_found", "invalid", "auth", "transient"]


async def test_client_must_be_open_and_closes_once() -> None:
    client = BlinkClient(make_config())

    with pytest.raises(RuntimeError, match="not open"):
        await client.fetch(KEY)
    async with client:
        pass
    await client.close()  # twice is harmless
    with pytest.raises(RuntimeError, match="closed"):
        await client.__aenter__()


def test_client_needs_a_resolved_api_key() -> None:
    with pytest.raises(ValueError, match="API key"):
        BlinkClient(BlinkConfig())


# --- parse_retry_after ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("1.5", 1.5),
        (" 30 ", 30.0),
        ("0", 0.0),
        ("-3", 0.0),
        ("3600", 300.0),
        ("inf", 300.0),
        ("nan", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_parse_retry_after_http_date_is_relative_to_now() -> None:
    now_s = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC).timestamp()

    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now_s=now_s) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:20:00 GMT", now_s=now_s) == 0.0
    assert parse_retry_after("Thu, 22 Oct 2015 07:28:00 GMT", now_s=now_s) == 300.0


# --- backoff_delay -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "top"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 5.0), (30, 5.0)]
)
def test_backoff_ceiling_doubles_per_attempt_up_to_max(attempt: int, top: float) -> None:
    assert backoff_delay(attempt, 0.5, 5.0, uniform=ceiling) == top


def test_backoff_is_full_jitter_between_zero_and_the_ceiling() -> None:
    delays = [backoff_delay(3, 0.5, 5.0) for _ in range(500)]

    assert all(0.0 <= d <= 2.0 for d in delays)
    assert min(delays) < 0.5
    assert max(delays) > 1.5


def test_backoff_retry_after_is_a_floor() -> None:
    assert backoff_delay(1, 0.5, 5.0, uniform=floor) == 0.0
    assert backoff_delay(1, 0.5, 5.0, retry_after_s=7.0, uniform=floor) == 7.0  # above max_s
    assert backoff_delay(1, 0.5, 5.0, retry_after_s=0.0, uniform=floor) == 0.0
    assert backoff_delay(4, 0.5, 5.0, retry_after_s=1.0, uniform=ceiling) == 4.0


# --- RateLimiter ---------------------------------------------------------------------------


def test_rate_limiter_spaces_requests_one_over_rate_apart() -> None:
    limiter = RateLimiter(4.0, clock=FakeClock())

    assert [limiter.delay() for _ in range(4)] == [0.0, 0.25, 0.5, 0.75]


def test_rate_limiter_does_not_burst_after_idle() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, clock=clock)
    limiter.delay()

    clock.now += 3600
    delays = [limiter.delay() for _ in range(3)]

    assert delays == [0.0, 0.5, 1.0]


def test_unlimited_rate_never_waits_unless_paused_by_retry_after() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0.0, clock=clock)

    assert all(limiter.delay() == 0.0 for _ in range(1000))
    limiter.slow_down(3.0)
    assert limiter.rate == 0.0
    assert [limiter.delay(), limiter.delay()] == [3.0, 3.0]
    clock.now += 3.0
    assert limiter.delay() == 0.0


def test_rate_limiter_retry_after_pauses_everyone() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock)

    limiter.slow_down(2.0)

    assert limiter.delay() == 2.0


def test_slow_down_halves_rate_down_to_a_floor_and_recover_climbs_back() -> None:
    limiter = RateLimiter(64.0, clock=FakeClock())

    limiter.slow_down(None)
    assert limiter.rate == 32.0
    for _ in range(20):
        limiter.slow_down(None)
    assert limiter.rate == 1.0  # configured / 64
    limiter.recover()
    assert limiter.rate == pytest.approx(1.0 + 64.0 / 50)
    for _ in range(100):
        limiter.recover()
    assert limiter.rate == 64.0


async def test_acquire_sleeps_for_its_slot(sleep: RecordingSleep) -> None:
    limiter = RateLimiter(4.0, clock=FakeClock(), sleep=sleep)

    for _ in range(3):
        await limiter.acquire()

    assert sleep.delays == [0.25, 0.5]
