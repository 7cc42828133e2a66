"""The webhook sink against a real aiohttp receiver on 127.0.0.1.

Signatures are checked with the reference ``standardwebhooks`` package, not
with our own ``sign``: a receiver uses that library, so that is the contract.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from watcher import __version__
from watcher.config import Secret, WebhookSinkConfig
from watcher.errors import DeliveryError
from watcher.sinks import build_sink
from watcher.sinks.webhook import WebhookSink

SECRET = "whsec_" + base64.b64encode(b"a test key of 32 bytes, exactly!").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"some entirely different key bytes").decode()
EVENT_ID = "evt_0123456789abcdef0123456789abcdef"
BODY = '{"event":"execution.finished","state":"Completed","note":"caf\u00e9"}'.encode()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Receiver:
    """A webhook receiver that records each request and answers as told."""

    base: str = ""
    requests: list[tuple[dict[str, list[str]], bytes, str]] = field(default_factory=list)
    respond: Handler | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        self.requests.append((headers, await request.read(), request.path_qs))
        if self.respond is not None:
            return await self.respond(request)
        return web.Response(status=204)

    @property
    def last(self) -> tuple[dict[str, list[str]], bytes, str]:
        assert self.requests, "the receiver got no request"
        return self.requests[-1]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rec.base = f"http://{host}:{port}"
    yield rec
    rec.release.set()  # let any held handler finish before the server goes
    await runner.cleanup()


@pytest.fixture
async def make_sink() -> AsyncIterator[Callable[..., WebhookSink]]:
    sinks: list[WebhookSink] = []

    def factory(url: str, **options: Any) -> WebhookSink:
        sink = WebhookSink(WebhookSinkConfig(name="hook", url=url, **options))
        sinks.append(sink)
        return sink

    yield factory
    for sink in sinks:
        await sink.close()


def status(code: int, headers: dict[str, str] | None = None, text: str = "") -> Handler:
    async def respond(_request: web.Request) -> web.Response:
        return web.Response(status=code, headers=headers, text=text)

    return respond


def single(headers: dict[str, list[str]]) -> dict[str, str]:
    """Every header as sent, asserting none was sent twice."""
    for name, values in headers.items():
        assert len(values) == 1, f"{name} sent {len(values)} times: {values}"
    return {name: values[0] for name, values in headers.items()}


# --- the request --------------------------------------------------------------------------


async def test_the_post_carries_the_exact_event_bytes_and_standard_headers(
    receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    sink = make_sink(f"{receiver.base}/hook")

    await sink.deliver(EVENT_ID, BODY)

    headers, body, path = receiver.last
    sent = single(headers)
    assert body == BODY
    assert path == "/hook"
    assert sent["content-type"] == "application/json"
    assert sent["user-agent"] == f"blink-watcher/{__version__}"
    assert sent["webhook-id"] == EVENT_ID
    assert abs(int(sent["webhook-timestamp"]) - time.time()) < 300
    assert "webhook-signature" not in sent  # no secret, no signature


async def test_the_signature_verifies_with_the_standard_webhooks_library(
    receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    sink = make_sink(f"{receiver.base}/hook", secret=Secret(SECRET))

    await sink.deliver(EVENT_ID, BODY)

    headers, body, _ = receiver.last
    sent = single(headers)
    assert sent["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(body, sent) is not None
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(body, sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body + b" ", sent)


async def test_every_attempt_is_signed_afresh_with_the_same_id(
    receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    sink = make_sink(f"{receiver.base}/hook", secret=Secret(SECRET))

    await sink.deliver(EVENT_ID, BODY)
    await sink.deliver(EVENT_ID, BODY)

    for headers, body, _ in receiver.requests:
        sent = single(headers)
        assert sent["webhook-id"] == EVENT_ID
        Webhook(SECRET).verify(body, sent)


async def test_custom_headers_are_sent_but_cannot_override_the_standard_ones(
    receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    custom = (
        ("X-Team", "secops"),
        ("Webhook-Id", "forged"),
        ("Content-Type", "text/plain"),
        ("webhook-timestamp", "1"),
        ("User-Agent", "someone-else"),
        ("Webhook-Signature", "v1,forged"),
    )
    sink = make_sink(f"{receiver.base}/hook", secret=Secret(SECRET), headers=custom)

    await sink.deliver(EVENT_ID, BODY)

    headers, body, _ = receiver.last
    sent = single(headers)
    assert sent["x-team"] == "secops"
    assert sent["webhook-id"] == EVENT_ID
    assert sent["content-type"] == "application/json"
    assert sent["user-agent"].startswith("blink-watcher/")
    assert sent["webhook-timestamp"] != "1"
    Webhook(SECRET).verify(body, sent)


async def test_redirects_are_not_followed(
    receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    receiver.respond = status(302, {"Location": "/elsewhere"})
    sink = make_sink(f"{receiver.base}/hook")

    with pytest.raises(DeliveryError) as info:
        await sink.deliver(EVENT_ID, BODY)

    assert info.value.retryable is False
    assert [path for _, _, path in receiver.requests] == ["/hook"]


# --- outcomes -----------------------------------------------------------------------------


@pytest.mark.parametrize("code", [200, 201, 202, 204, 299])
async def test_any_2xx_is_success(
    receiver: Receiver, make_sink: Callable[..., WebhookSink], code: int
) -> None:
    receiver.respond = status(code)
    sink = make_sink(f"{receiver.base}/hook")

    await sink.deliver(EVENT_ID, BODY)

    assert len(receiver.requests) == 1


@pytest.mark.parametrize("code", [408, 425, 429, 500, 502, 503, 504, 599])
async def test_statuses_worth_a_retry_are_retryable(
    receiver: Receiver, make_sink: Callable[..., WebhookSink], code: int
) -> None:
    receiver.respond = status(code, text="busy")
    sink = make_sink(f"{receiver.base}/hook")

    with pytest.raises(DeliveryError) as info:
        await sink.deliver(EVENT_ID, BODY)

    assert info.value.retryable is True
    assert f"HTTP {code}" in str(info.value)
    assert "busy" in str(info.value)


@pytest.mark.parametrize("code", [301, 304, 400, 401, 403, 404, 409, 410, 413, 422])
async def test_other_statuses_are_final(
    receiver: Receiver, make_sink: Callable[..., WebhookSink], code: int
) -> None:
    receiver.respond = status(code)
    sink = make_sink(f"{receiver.base}/hook")

    with pytest.raises(DeliveryError) as info:
        await sink.deliver(EVENT_ID, BODY)

    assert info.value.retryable is False
    assert f"HTTP {code}" in str(info.value)


async def test_a_429_passes_on_its_retry_after(
    receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    receiver.respond = status(429, {"Retry-After": "17"})
    sink = make_sink(f"{receiver.base}/hook")

    with pytest.raises(DeliveryError) as info:
        await sink.deliver(EVENT_ID, BODY)

    assert info.value.retryable is True
    assert info.value.retry_after_s == 17.0


async def test_a_503_without_retry_after_leaves_the_backoff_to_the_outbox(
    receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    receiver.respond = status(503)
    sink = make_sink(f"{receiver.base}/hook")

    with pytest.raises(DeliveryError) as info:
        await sink.deliver(EVENT_ID, BODY)

    assert info.value.retry_after_s is None


def refused_port() -> int:
    """A loopback port with nobody listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_a_refused_connection_is_retryable(make_sink: Callable[..., WebhookSink]) -> None:
    sink = make_sink(f"http://127.0.0.1:{refused_port()}/hook?token=SECRET")

    with pytest.raises(DeliveryError) as info:
        await sink.deliver(EVENT_ID, BODY)

    assert info.value.retryable is True
    assert "SECRET" not in str(info.value)


async def test_no_answer_within_the_timeout_is_retryable(
    receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    async def hang(_request: web.Request) -> web.Response:
        await receiver.release.wait()
        return web.Response(status=204)

    receiver.respond = hang
    sink = make_sink(f"{receiver.base}/hook?token=SECRET", timeout_s=0.05)

    with pytest.raises(DeliveryError) as info:
        await sink.deliver(EVENT_ID, BODY)

    assert info.value.retryable is True
    assert "SECRET" not in str(info.value)
    assert str(info.value).startswith(f"no answer from {receiver.base} ")


async def test_an_error_never_shows_the_url_token(
    receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    async def echo(request: web.Request) -> web.Response:
        # Receivers do this: an error page that quotes the request.
        return web.Response(status=500, text=f"cannot handle {request.url}")

    receiver.respond = echo
    sink = make_sink(f"{receiver.base}/hook?token=SECRET&team=ops")

    with pytest.raises(DeliveryError) as info:
        await sink.deliver(EVENT_ID, BODY)

    assert "HTTP 500" in str(info.value)
    assert "SECRET" not in str(info.value)
    assert f"from {receiver.base}:" in str(info.value)  # scheme, host and port only


async def test_a_token_in_the_url_path_never_shows_in_an_error(
    receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    # Slack, Teams, Discord and Google Chat incoming webhooks: the path is the token.
    token_path = "/services/T000/B000/XXXXtoken1234567890"

    async def echo(request: web.Request) -> web.Response:
        return web.Response(status=503, text=f"no route for {request.path}")

    receiver.respond = echo
    sink = make_sink(f"{receiver.base}{token_path}")

    with pytest.raises(DeliveryError) as info:
        await sink.deliver(EVENT_ID, BODY)

    assert "XXXXtoken" not in str(info.value)
    assert "T000" not in str(info.value)
    assert str(info.value).startswith(f"HTTP 503 from {receiver.base}")


async def test_a_token_straddling_the_cut_of_the_error_text_is_scrubbed_whole(
    receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    token = "TOKENTOKENTOKEN1"

    async def echo(_: web.Request) -> web.Response:
        # The token starts just before the 200th character of the error text.
        return web.Response(status=500, text="x" * 190 + f"token={token} and more")

    receiver.respond = echo
    sink = make_sink(f"{receiver.base}/hook?token={token}")

    with pytest.raises(DeliveryError) as info:
        await sink.deliver(EVENT_ID, BODY)

    assert token[:4] not in str(info.value)  # not even the part before the cut


async def test_a_closed_sink_can_be_closed_again_and_reopens_on_use(
    receiver: Receiver, make_sink: Callable[..., WebhookSink]
) -> None:
    sink = make_sink(f"{receiver.base}/hook")
    await sink.deliver(EVENT_ID, BODY)
    await sink.close()
    await sink.close()

    await sink.deliver(EVENT_ID, BODY)

    assert len(receiver.requests) == 2


def test_build_sink_makes_a_webhook_sink_for_a_webhook_config() -> None:
    sink = build_sink(WebhookSinkConfig(name="w", url="https://example.test/"))

    assert isinstance(sink, WebhookSink)
    assert sink.name == "w"
