"""The structlog setup scrubs every registered secret out of every diagnostic."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

import watcher.logs as wlogging
from watcher import redact

SECRET = "blink-key-9f8e7d6c5b4a"


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Diagnostics captured as JSON lines; the secret registry and structlog reset after."""
    monkeypatch.setattr(redact, "_secrets", [])
    out = io.StringIO()
    wlogging.configure("debug", "json", stream=out)
    yield out
    structlog.reset_defaults()


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_registered_secret_is_scrubbed_from_every_string_value(stream: io.StringIO) -> None:
    wlogging.register_secret(SECRET)
    log = structlog.get_logger("test")

    log.warning(
        f"api.failed for {SECRET}",
        reason=f"server said: bad key {SECRET}!",
        header=SECRET,
        execution_id="ex-1",
        attempt=2,
    )

    assert SECRET not in stream.getvalue()
    [line] = lines(stream)
    assert line["event"] == "api.failed for <redacted>"
    assert line["reason"] == "server said: bad key <redacted>!"
    assert line["header"] == "<redacted>"
    assert line["execution_id"] == "ex-1"
    assert line["attempt"] == 2
    assert line["level"] == "warning"


def test_secret_in_an_exception_traceback_is_scrubbed(stream: io.StringIO) -> None:
    wlogging.register_secret(SECRET)
    log = structlog.get_logger("test")

    try:
        raise RuntimeError(f"request with key {SECRET} failed")
    except RuntimeError:
        log.exception("poll.crashed", execution_id="ex-1")

    assert SECRET not in stream.getvalue()
    [line] = lines(stream)
    assert "RuntimeError: request with key <redacted> failed" in str(line["exception"])


def test_every_registered_secret_is_scrubbed(stream: io.StringIO) -> None:
    other = "whsec_c2VjcmV0LXNlY3JldA=="
    wlogging.register_secret(SECRET)
    wlogging.register_secret(other)

    structlog.get_logger("test").info("x", reason=f"{SECRET} and {other}")

    assert lines(stream)[0]["reason"] == "<redacted> and <redacted>"


def test_console_format_is_scrubbed_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redact, "_secrets", [])
    out = io.StringIO()
    wlogging.configure("info", "console", stream=out)
    try:
        wlogging.register_secret(SECRET)
        structlog.get_logger("test").info("api.retry", reason=f"key {SECRET}")
    finally:
        structlog.reset_defaults()

    assert "api.retry" in out.getvalue()
    assert SECRET not in out.getvalue()


@pytest.mark.parametrize("value", [None, "", "abc"])
def test_empty_or_tiny_values_are_not_registered(stream: io.StringIO, value: str | None) -> None:
    # A one-letter "secret" would redact every word containing that letter.
    wlogging.register_secret(value)

    structlog.get_logger("test").info("a", reason="abc abc")

    assert lines(stream)[0]["reason"] == "abc abc"


def test_level_filters_diagnostics() -> None:
    out = io.StringIO()
    wlogging.configure("warning", "json", stream=out)
    try:
        log = structlog.get_logger("test")
        log.info("quiet")
        log.error("loud")
    finally:
        structlog.reset_defaults()

    assert [line["event"] for line in lines(out)] == ["loud"]
