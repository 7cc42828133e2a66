"""What every outgoing HTTP client shares: user agent, retries, backoff, connection failures.

The Blink client (``blink.py``) and the webhook sink (``sinks/webhook.py``)
both use these, so the two agree on what "try again later" means.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from watcher import __version__
from watcher.proxy import Proxy

USER_AGENT: Final = f"blink-watcher/{__version__}"

# Statuses that say "not now" rather than "no" (docs/contract.md, "Retries");
# every 5xx is retryable too.
RETRY_STATUSES: Final = frozenset({408, 425, 429})

# A server asking for an hour gets 5 minutes: the poll or delivery schedule takes over.
MAX_RETRY_AFTER_S: Final = 300.0

MAX_SNIPPET: Final = 200  # characters of an error body shown in a diagnostic

# A uniform draw in [a, b]; injectable so that backoff can be tested without patching.
Uniform = Callable[[float, float], float]


def is_retryable_status(status: int) -> bool:
    """Whether a non-2xx answer means "try again later"."""
    return status in RETRY_STATUSES or status >= 500


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds (fractions tolerated) or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now_s is None else now_s)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def backoff_delay(
    attempt: int,
    base_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    uniform: Uniform = random.uniform,
) -> float:
    """Full-jitter exponential backoff after failed try ``attempt`` (1-based).

    Retry-After, when the server sent one, is a floor: we never come back sooner.
    """
    delay = uniform(0, min(max_s, base_s * 2 ** (attempt - 1)))
    return max(delay, retry_after_s) if retry_after_s is not None else delay


def error_snippet(body: bytes, content_type: str = "") -> str:
    """A short, printable reason from an error body (JSON ErrorWrapper, HTML or text).

    Scrub the body (``redact.scrub_bytes``) before calling this: the snippet is cut short.
    """
    if not body.strip():
        return ""
    if "json" in content_type:
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            obj = None
        if isinstance(obj, dict):
            parts = [obj.get("message"), obj.get("details")]
            text = ": ".join(p for p in parts if isinstance(p, str) and p)
            if text:
                return text[:MAX_SNIPPET]
    if "html" in content_type or body.lstrip()[:1] == b"<":
        return "HTML error page"
    return body[:MAX_SNIPPET].decode("utf-8", "replace").strip() or "unreadable body"


def connection_error_text(exc: aiohttp.ClientError, proxy: Proxy | None) -> str:
    """What a failed connection says in a diagnostic; scrub it before it leaves the process.

    aiohttp's own text for a dead proxy or an untrusted certificate names
    neither the proxy nor the cure, and these are the two failures an operator
    behind a corporate network meets first (docs/network.md).
    """
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        why = getattr(cert_error, "verify_message", None) or str(cert_error)
        return (
            f"TLS certificate of {exc.host}:{exc.port} not trusted: {why} "
            "(signed by a private CA? point SSL_CERT_FILE at a bundle that holds it)"
        )
    if proxy is not None:
        # A proxy whose name does not resolve fails as a plain connector error;
        # a TLS failure inside the tunnel is about the target, not the proxy.
        if isinstance(exc, aiohttp.ClientProxyConnectionError) or (
            isinstance(exc, aiohttp.ClientConnectorError)
            and not isinstance(exc, aiohttp.ClientSSLError)
            and exc.host == proxy.host
        ):
            reason = exc.os_error.strerror or str(exc.os_error) or type(exc.os_error).__name__
            return f"cannot connect to the proxy {proxy.describe()}: {reason}"
        if isinstance(exc, aiohttp.ClientHttpProxyError):
            return proxy_refusal(proxy, exc.status, f"refused the tunnel ({exc.message})")
    return f"{type(exc).__name__}: {exc}"


def proxy_refusal(proxy: Proxy, status: int, detail: str) -> str:
    """The text for a proxy that answered instead of passing the request on."""
    hint = f" (check the user and password in {proxy.source})" if status == 407 else ""
    return f"HTTP {status} from the proxy {proxy.describe()}: {detail}{hint}"


def proxy_request_args(proxy: Proxy | None, url: str) -> tuple[dict[str, Any], dict[str, str]]:
    """How to send aiohttp requests for ``url`` through ``proxy``: (keyword arguments, headers).

    Both are empty without a proxy. The proxy's login goes as Proxy-Authorization
    on the CONNECT for an https target, never inside the tunnel; for a plain
    http target the request itself is addressed to the proxy, so it goes there.
    (aiohttp's ``proxy_auth`` would do the same, but 3.14 deprecates its BasicAuth.)
    """
    if proxy is None:
        return {}, {}
    args: dict[str, Any] = {"proxy": proxy.url}
    if proxy.username is None:
        return args, {}
    login = f"{proxy.username}:{proxy.password or ''}".encode()
    header = {"Proxy-Authorization": "Basic " + base64.b64encode(login).decode()}
    if urlsplit(url).scheme == "https":
        args["proxy_headers"] = header
        return args, {}
    return args, header
