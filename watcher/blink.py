"""BlinkClient: the one place that talks HTTP to the Blink API.

It owns the aiohttp session, applies the global rate limit, reads bodies with a
size cap, and translates every aiohttp/JSON failure into ``errors.py`` types.
Transient failures are retried here (tenacity, exponential backoff with full
jitter, Retry-After honoured); callers see an ``Execution`` or one final error.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote

import aiohttp
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from yarl import URL

from watcher.config import BlinkConfig
from watcher.discovery.page import ExecutionPage
from watcher.errors import (
    ApiError,
    AuthError,
    PermanentApiError,
    TransientApiError,
)
from watcher.fastjson import loads
from watcher.http import (
    USER_AGENT,
    Uniform,
    backoff_delay,
    connection_error_text,
    error_snippet,
    is_retryable_status,
    parse_retry_after,
    proxy_refusal,
    proxy_request_args,
)
from watcher.models import Execution, ExecutionKey, key_fields
from watcher.proxy import proxy_for
from watcher.redact import scrub, scrub_bytes

log = structlog.get_logger("watcher.blink")

# What quote(..., safe="") leaves as it is: IDs made only of these need no quoting.
_UNRESERVED: Final = re.compile(r"[A-Za-z0-9_.~-]*")


def _quote(part: str) -> str:
    return part if _UNRESERVED.fullmatch(part) else quote(part, safe="")


Sleep = Callable[[float], Awaitable[None]]

# (outcome, seconds) after every HTTP exchange: for metrics.
ResponseObserver = Callable[[str, float], None]


class RateLimiter:
    """Paces requests to at most ``rate`` per second across every watch.

    Virtual scheduling rather than a bucket: each request takes the next free
    slot ``1/rate`` after the previous one, so there is no burst after an idle
    spell that could trip the API's own limiter. A 429 halves the effective rate
    and pauses everyone for Retry-After; each success wins back 1/50 of the
    configured rate (additive increase, multiplicative decrease).
    """

    def __init__(
        self,
        rate_per_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.configured_rate = rate_per_s
        self.rate = rate_per_s
        self._clock = clock
        self.sleep = sleep
        self._next_slot = 0.0

    def delay(self) -> float:
        """Reserve the next slot; how long the caller must wait for it."""
        now = self._clock()
        slot = max(self._next_slot, now)
        if self.rate > 0:
            self._next_slot = slot + 1.0 / self.rate
        elif slot > now:  # unlimited, but paused by a Retry-After
            self._next_slot = slot
        return slot - now

    async def acquire(self) -> None:
        wait = self.delay()
        if wait > 0:
            await self.sleep(wait)

    def slow_down(self, retry_after_s: float | None) -> None:
        if self.configured_rate > 0:
            self.rate = max(self.configured_rate / 64, self.rate / 2)
        if retry_after_s:
            self._next_slot = max(self._next_slot, self._clock() + retry_after_s)

    def recover(self) -> None:
        if self.rate < self.configured_rate:
            self.rate = min(self.configured_rate, self.rate + self.configured_rate / 50)


class BlinkClient:
    """Fetches executions from the Blink API. Use as an async context manager."""

    def __init__(
        self,
        config: BlinkConfig,
        *,
        limiter: RateLimiter | None = None,
        observer: ResponseObserver | None = None,
        on_retry: Callable[[], None] | None = None,
        sleep: Sleep = asyncio.sleep,
        uniform: Uniform = random.uniform,
    ) -> None:
        if config.api_key is None:
            raise ValueError("BlinkClient needs a resolved API key")
        self.config = config
        self.limiter = limiter or RateLimiter(config.rate_limit_per_s, sleep=sleep)
        self._observer = observer
        self._on_retry = on_retry
        # Injectable so that backoff and Retry-After are tested without patching asyncio.
        self._sleep = sleep
        self._uniform = uniform
        self._secret = config.api_key.reveal()
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._query = "?withApplyView=true" if config.with_apply_view else ""
        self._timeout = aiohttp.ClientTimeout(total=config.request_timeout_s)
        # Resolved once: the base URL and the environment are fixed for this client's life.
        # Through a proxy an https request is a CONNECT tunnel: the proxy sees the host
        # and port, and the API key header only inside TLS (tests/integration/test_network.py).
        self.proxy = proxy_for(config.base_url)
        self._proxy_args, self._proxy_headers = proxy_request_args(self.proxy, config.base_url)
        # Per request only through a proxy: aiohttp sends a session's default headers
        # to the proxy too, in clear on the CONNECT (tests/integration/test_network.py).
        # Without one, a session default spares merging a header dict on every poll.
        key_header = {"BLINK-API-KEY": self._secret}
        self._key_header = key_header if self.proxy is not None else None
        self._session_key_header = key_header if self.proxy is None else {}

    async def __aenter__(self) -> Self:
        if self._closed:
            raise RuntimeError("BlinkClient is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={
                    "accept": "application/json",
                    "user-agent": USER_AGENT,
                    **self._proxy_headers,
                    **self._session_key_header,
                },
                connector=aiohttp.TCPConnector(
                    limit=self.config.max_concurrency, ttl_dns_cache=300
                ),
                timeout=self._timeout,
                raise_for_status=False,
            )
            if self.proxy is not None:
                log.info("api.proxy", proxy=self.proxy.describe())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session; closing twice is harmless."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def url_for(self, key: ExecutionKey) -> str:
        ws, ex = key
        return f"{self.config.base_url}/workspace/{_quote(ws)}/executions/{_quote(ex)}"

    async def get_execution(self, key: ExecutionKey) -> Execution:
        """The execution, after up to ``retry_attempts`` tries on transient failures.

        Raises the final ``TransientApiError``, or ``AuthError``/``PermanentApiError``
        at once (retrying those within a poll cannot help).
        """
        try:
            return await self.fetch(key)
        except TransientApiError as exc:
            # The first try runs outside tenacity: its machinery costs about as
            # much CPU as the request itself, and nearly every poll succeeds.
            if self.config.retry_attempts == 1:
                raise
            await self._before_retry(key, exc, 1)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.retry_attempts - 1),
            wait=self._tenacity_wait,
            retry=retry_if_exception_type(TransientApiError),
            before_sleep=self._tenacity_log,
            sleep=self._sleep,
            reraise=True,
        )
        result: Execution = await retrying(self.fetch, key)
        return result

    def _wait_s(self, attempt: int, exc: BaseException | None) -> float:
        retry_after = exc.retry_after_s if isinstance(exc, TransientApiError) else None
        return backoff_delay(
            attempt,
            self.config.retry_backoff_s,
            self.config.retry_backoff_max_s,
            retry_after,
            self._uniform,
        )

    def _tenacity_wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return self._wait_s(state.attempt_number + 1, exc)

    async def _before_retry(self, key: ExecutionKey, exc: TransientApiError, attempt: int) -> None:
        delay = self._wait_s(attempt, exc)
        self._log_retry(key, exc, attempt, delay)
        await self._sleep(delay)

    def _tenacity_log(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        if isinstance(exc, TransientApiError):
            self._log_retry(state.args[0], exc, state.attempt_number + 1, delay)

    def _log_retry(self, key: ExecutionKey, exc: ApiError, attempt: int, delay_s: float) -> None:
        if self._on_retry is not None:
            self._on_retry()
        log.info(
            "api.retry",
            **key_fields(key),
            attempt=attempt,
            of=self.config.retry_attempts,
            reason=str(exc),
            status=exc.status,
            retry_in_s=round(delay_s, 3),
        )

    async def fetch(self, key: ExecutionKey) -> Execution:
        """One request, no retries: an ``Execution`` or an ``ApiError``."""
        if self._session is None:
            raise RuntimeError("BlinkClient is not open (use 'async with')")
        wait = self.limiter.delay()  # acquire() inlined: no coroutine when there is no wait
        if wait > 0:
            await self.limiter.sleep(wait)
        started = time.monotonic()
        outcome = "transient"
        try:
            result = await self._request(key)
            outcome = "ok"
            self.limiter.recover()
            return result
        except TransientApiError as exc:
            if exc.status == 429:
                self.limiter.slow_down(exc.retry_after_s)
            raise
        except AuthError:
            outcome = "auth"
            raise
        except PermanentApiError as exc:
            outcome = "not_found" if exc.status == 404 else "invalid"
            raise
        finally:
            if self._observer is not None:
                self._observer(outcome, time.monotonic() - started)

    async def _request(self, key: ExecutionKey) -> Execution:
        assert self._session is not None
        try:
            # Quoted already: encoded=True spares yarl parsing and re-quoting it per poll.
            url = URL(self.url_for(key) + self._query, encoded=True)
            async with self._session.get(
                url, headers=self._key_header, allow_redirects=False, **self._proxy_args
            ) as resp:
                status = resp.status
                length = resp.content_length
                if length is not None and length <= self.config.max_response_bytes:
                    body = await resp.read()  # the usual case, without another coroutine
                else:
                    body = await self._read_capped(resp)
                if status != 200:
                    content_type = resp.headers.get("content-type", "").lower()
                    retry_after = resp.headers.get("retry-after")
        except TransientApiError:
            raise
        except TimeoutError:
            via = f" via the proxy {self.proxy.describe()}" if self.proxy else ""
            raise TransientApiError(
                f"no answer within {self.config.request_timeout_s:g}s{via}"
            ) from None
        except aiohttp.ClientError as exc:
            raise TransientApiError(self._scrub(connection_error_text(exc, self.proxy))) from None
        if status == 200:
            return self._parse(body)
        self._raise_for(status, body, content_type, retry_after)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        cap = self.config.max_response_bytes
        if resp.content_length is not None:
            if resp.content_length > cap:
                raise TransientApiError(
                    f"response of {resp.content_length} bytes exceeds the {cap}-byte cap",
                    status=resp.status,
                )
            return await resp.read()
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > cap:
                raise TransientApiError(f"response exceeds the {cap}-byte cap", status=resp.status)
            chunks.append(chunk)
        return b"".join(chunks)

    def _parse(self, body: bytes) -> Execution:
        try:
            obj: Any = loads(body)
        except (ValueError, RecursionError) as exc:  # also UnicodeDecodeError; deep nesting
            kind = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "not JSON"
            raise TransientApiError(f"200 response body is {kind}", status=200) from None
        if not isinstance(obj, dict):
            raise TransientApiError(
                f"200 response body is a JSON {type(obj).__name__}, not an object", status=200
            )
        return Execution.from_api(obj)

    def _raise_for(
        self, status: int, body: bytes, content_type: str, retry_after: str | None
    ) -> None:
        # Scrub the whole body before it is cut short: a key straddling the cut would
        # otherwise leak its first characters.
        body = scrub_bytes(body, (self._secret,))
        reason = self._scrub(error_snippet(body, content_type) or "empty body")
        if status == 407 and self.proxy is not None:  # only a proxy asks for its own login
            raise TransientApiError(proxy_refusal(self.proxy, status, reason), status=status)
        if status in (401, 403):
            raise AuthError(
                f"HTTP {status}: {reason} (check the API key and its access to the workspace)",
                status=status,
            )
        if status in (400, 404):
            raise PermanentApiError(f"HTTP {status}: {reason}", status=status)
        if is_retryable_status(status):
            raise TransientApiError(
                f"HTTP {status}: {reason}",
                status=status,
                retry_after_s=parse_retry_after(retry_after),
            )
        # Anything else (3xx we refuse to follow, 204, 409, 422 ...) says nothing
        # definitive about the execution, so it must not end the watch.
        raise TransientApiError(f"unexpected HTTP {status}: {reason}", status=status)

    def _scrub(self, text: str) -> str:
        # Belt and braces: an error page or exception text that echoes our own
        # request headers must not carry the key into a log line.
        return scrub(text, (self._secret,))

    # --- the list endpoint (discovery) -----------------------------------------------------

    async def list_executions(self, workspace_id: str, query: dict[str, Any]) -> ExecutionPage:
        """One page of ``GET /workspace/{ws}/executions?q=RQL`` (docs/discovery.md).

        The same global rate limit and retry policy as polls: discovery shares
        the API budget. A 400 (a filter the API does not take) raises
        ``PermanentApiError`` with Blink's message.
        """
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.retry_attempts),
            wait=self._tenacity_wait,
            retry=retry_if_exception_type(TransientApiError),
            sleep=self._sleep,
            reraise=True,
        )
        page: ExecutionPage = await retrying(self._list_once, workspace_id, query)
        return page

    async def _list_once(self, workspace_id: str, query: dict[str, Any]) -> ExecutionPage:
        if self._session is None:
            raise RuntimeError("BlinkClient is not open (use 'async with')")
        await self.limiter.acquire()
        url = f"{self.config.base_url.rstrip('/')}/workspace/{quote(workspace_id, safe='')}"
        try:
            async with self._session.get(
                url + "/executions",
                params={"q": json.dumps(query, separators=(",", ":"))},
                headers=self._key_header,
                allow_redirects=False,
                **self._proxy_args,
            ) as resp:
                status = resp.status
                body = await self._read_capped(resp)
                content_type = resp.headers.get("content-type", "").lower()
                retry_after = resp.headers.get("retry-after")
        except TimeoutError:
            raise TransientApiError(
                f"no answer within {self.config.request_timeout_s:g}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise TransientApiError(self._scrub(connection_error_text(exc, self.proxy))) from None
        if status != 200:
            if status == 429:
                self.limiter.slow_down(parse_retry_after(retry_after))
            self._raise_for(status, body, content_type, retry_after)
        self.limiter.recover()
        return ExecutionPage.from_body(body)
