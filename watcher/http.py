"""What every outgoing HTTP client shares: user agent, retryable statuses, Retry-After, backoff.

The Blink client (``blink.py``) and the webhook sink (``sinks/webhook.py``)
both use these, so the two agree on what "try again later" means.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Final

from watcher import __version__

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
