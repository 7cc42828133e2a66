"""The one secret scrubber: every known secret out of any text that leaves the process.

The log processor runs every diagnostic through it, and both HTTP clients run
error text through it before it becomes an exception message, so a library
message or an error page that happens to quote a key cannot leak it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

REDACTED: Final = "<redacted>"
_MIN_SECRET_LEN: Final = 4  # shorter values ("1", "on") would garble text and hide nothing

_secrets: list[str] = []  # longest first, so a secret containing another is replaced whole


def register_secret(value: str | None) -> None:
    """Never let ``value`` appear in a diagnostic, an event or an error message."""
    if value and len(value) >= _MIN_SECRET_LEN and value not in _secrets:
        _secrets.append(value)
        _secrets.sort(key=len, reverse=True)


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every registered secret (and each of ``extra``) replaced."""
    for secret in (*extra, *_secrets):
        if len(secret) >= _MIN_SECRET_LEN and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def scrub_bytes(body: bytes, extra: Iterable[str] = ()) -> bytes:
    """``scrub`` for a raw body, before it is decoded or cut short.

    A secret straddling the place where an error text is cut would otherwise
    leak its first characters.
    """
    for secret in (*extra, *_secrets):
        raw = secret.encode()
        if len(secret) >= _MIN_SECRET_LEN and raw in body:
            body = body.replace(raw, REDACTED.encode())
    return body
