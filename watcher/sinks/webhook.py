"""The webhook sink: POST the event with Standard Webhooks headers and signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import urlsplit

import aiohttp
import structlog

from watcher.config import WebhookSinkConfig, url_origin
from watcher.errors import DeliveryError
from watcher.http import (
    MAX_SNIPPET,
    USER_AGENT,
    connection_error_text,
    is_retryable_status,
    parse_retry_after,
    proxy_refusal,
    proxy_request_args,
)
from watcher.proxy import proxy_for
from watcher.redact import scrub

log = structlog.get_logger("watcher.sinks.webhook")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value for one attempt."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def url_secrets(url: str) -> tuple[str, ...]:
    """The parts of ``url`` that may be credentials: the path, every query value, the password.

    Chat services' incoming webhooks carry their token in the path.
    """
    parts = urlsplit(url)
    values = [p.split("=", 1)[1] for p in parts.query.split("&") if "=" in p]
    values.append(parts.password or "")
    if parts.path.strip("/"):
        values.append(parts.path)
    # Longest first, so a value that contains another is replaced whole; short
    # values ("1", "on") are not secrets, and replacing them would garble the text.
    return tuple(sorted((v for v in values if len(v) >= 4), key=len, reverse=True))


class WebhookSink:
    """Delivers events to one URL. The outbox decides when to call ``deliver`` again."""

    def __init__(self, config: WebhookSinkConfig) -> None:
        self.config = config
        self._secret = config.secret.reveal() if config.secret is not None else None
        self._session: aiohttp.ClientSession | None = None
        self._where = url_origin(config.url)
        self._url_secrets = url_secrets(config.url)
        # Resolved once, like the Blink client's (watcher/proxy.py says why not trust_env).
        self.proxy = proxy_for(config.url)
        self._proxy_args, self._proxy_headers = proxy_request_args(self.proxy, config.url)

    @property
    def name(self) -> str:
        return self.config.name

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
                connector=aiohttp.TCPConnector(limit=self.config.max_in_flight),
            )
            if self.proxy is not None:
                log.info("webhook.proxy", sink=self.name, proxy=self.proxy.describe())
        return self._session

    def headers(self, event_id: str, body: bytes, now_s: float | None = None) -> dict[str, str]:
        timestamp = int(time.time() if now_s is None else now_s)
        headers = dict(self.config.headers)
        # The standard headers come last so a custom header cannot forge them.
        headers.update(
            {
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                "webhook-id": event_id,
                "webhook-timestamp": str(timestamp),
            }
        )
        if self._secret is not None:
            headers["webhook-signature"] = sign(self._secret, event_id, timestamp, body)
        return headers

    def _scrub(self, text: str) -> str:
        # aiohttp may quote the URL, and a receiver's error page may echo the
        # request: neither may carry a token from the URL into a log line.
        return scrub(text.replace(self.config.url, self._where), self._url_secrets)

    async def deliver(self, event_id: str, body: bytes) -> None:
        try:
            async with self._client().post(
                self.config.url,
                data=body,
                headers=self.headers(event_id, body) | self._proxy_headers,
                allow_redirects=False,
                **self._proxy_args,
            ) as resp:
                if 200 <= resp.status < 300:
                    return
                # Read more than we show: a token straddling the cut must be
                # scrubbed whole before the text is shortened.
                head = (await resp.content.read(4096)).decode("utf-8", "replace")
                retry_after = parse_retry_after(resp.headers.get("retry-after"))
                status = resp.status
        except TimeoutError:
            via = f" via the proxy {self.proxy.describe()}" if self.proxy else ""
            raise DeliveryError(
                f"no answer from {self._where} within {self.config.timeout_s:g}s{via}",
                retryable=True,
            ) from None
        except aiohttp.ClientError as exc:
            raise DeliveryError(
                self._scrub(connection_error_text(exc, self.proxy)), retryable=True
            ) from None
        snippet = self._scrub(head).strip()[:MAX_SNIPPET]
        if status == 407 and self.proxy is not None:
            # Our proxy's login, not the receiver's answer: worth retrying once it is fixed.
            reason = proxy_refusal(self.proxy, status, snippet or "no detail")
            raise DeliveryError(reason, retryable=True, retry_after_s=retry_after)
        reason = f"HTTP {status} from {self._where}" + (f": {snippet}" if snippet else "")
        retryable = is_retryable_status(status)
        raise DeliveryError(reason, retryable=retryable, retry_after_s=retry_after)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
