"""The structlog setup: every registered secret scrubbed, and native entries in the journal."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

import watcher.logs as wlogging
from tests.fakejournal import FakeJournal, fake_journal, no_journal
from watcher import redact

__all__ = ["fake_journal", "no_journal"]  # fixtures

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


# --- the journal ---------------------------------------------------------------------------


@pytest.fixture
def journal_stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Diagnostics configured for the journal; what falls back to the stream lands here."""
    monkeypatch.setattr(redact, "_secrets", [])
    out = io.StringIO()
    wlogging.configure("debug", "json", stream=out, journal="on")
    yield out
    structlog.reset_defaults()


def test_in_the_journal_a_diagnostic_is_an_entry_with_the_same_json_line(
    fake_journal: FakeJournal, journal_stream: io.StringIO
) -> None:
    structlog.get_logger("test").warning(
        "poll.failed", execution_id="ex-1", workspace_id="ws", status=503
    )

    [entry] = fake_journal.entries()
    line = json.loads(entry.fields["MESSAGE"])
    assert {k: line[k] for k in ("event", "execution_id", "workspace_id", "status", "level")} == {
        "event": "poll.failed",
        "execution_id": "ex-1",
        "workspace_id": "ws",
        "status": 503,
        "level": "warning",
    }
    assert entry.text("PRIORITY") == "4"
    assert entry.text("BLINK_WATCHER_EVENT") == "poll.failed"
    assert entry.text("EXECUTION_ID") == "ex-1"
    assert entry.text("SYSLOG_IDENTIFIER") == "blink-watcher"
    assert journal_stream.getvalue() == ""


def test_in_the_journal_the_line_is_the_one_the_stream_would_get(
    fake_journal: FakeJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same clock both times: only the destination differs.
    monkeypatch.setattr(
        structlog.processors.TimeStamper, "__call__", lambda self, _l, _n, d: d, raising=True
    )
    plain = io.StringIO()
    try:
        wlogging.configure("info", "json", stream=plain, journal="off")
        structlog.get_logger("test").info("service.started", watching=2)
        wlogging.configure("info", "json", stream=io.StringIO(), journal="on")
        structlog.get_logger("test").info("service.started", watching=2)
    finally:
        structlog.reset_defaults()

    [entry] = fake_journal.entries()
    assert entry.fields["MESSAGE"].decode() + "\n" == plain.getvalue()


def test_in_the_journal_an_exception_is_an_error_entry_with_its_traceback(
    fake_journal: FakeJournal, journal_stream: io.StringIO
) -> None:
    wlogging.register_secret(SECRET)
    try:
        raise RuntimeError(f"boom with {SECRET}")
    except RuntimeError:
        structlog.get_logger("test").exception("poll.crashed", execution_id="ex-1")

    [entry] = fake_journal.entries()
    assert entry.text("PRIORITY") == "3"
    assert "RuntimeError: boom with <redacted>" in json.loads(entry.fields["MESSAGE"])["exception"]
    assert SECRET.encode() not in entry.fields["MESSAGE"]


def test_in_the_journal_the_level_still_filters(fake_journal: FakeJournal) -> None:
    wlogging.configure("warning", "json", stream=io.StringIO(), journal="on")
    try:
        structlog.get_logger("test").info("quiet")
        structlog.get_logger("test").error("loud")
    finally:
        structlog.reset_defaults()

    assert [e.text("BLINK_WATCHER_EVENT") for e in fake_journal.entries()] == ["loud"]


def test_console_format_in_the_journal_keeps_the_fields(
    fake_journal: FakeJournal,
) -> None:
    wlogging.configure("info", "console", stream=io.StringIO(), journal="on")
    try:
        structlog.get_logger("test").warning("poll.failed", execution_id="ex-1")
    finally:
        structlog.reset_defaults()

    [entry] = fake_journal.entries()
    assert b"poll.failed" in entry.fields["MESSAGE"]
    assert entry.text("PRIORITY") == "4"
    assert entry.text("EXECUTION_ID") == "ex-1"


def test_without_the_journal_lines_go_to_the_stream_and_it_says_so_once(
    no_journal: Path, journal_stream: io.StringIO
) -> None:
    log = structlog.get_logger("test")
    log.info("first", execution_id="ex-1")
    log.error("second")

    events = [(line["event"], line["level"]) for line in lines(journal_stream)]
    assert events == [
        ("journal.unavailable", "warning"),
        ("first", "info"),
        ("second", "error"),
    ]
    notice = lines(journal_stream)[0]
    assert notice["fallback"] == "standard error"
    assert "No such file" in str(notice["reason"])


def test_auto_uses_the_journal_only_when_the_stream_is_the_journal(
    fake_journal: FakeJournal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(tmp_path / "stderr", "w") as journal_like, open(tmp_path / "other", "w") as other:
        st = os.fstat(journal_like.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        try:
            wlogging.configure("info", "json", stream=other)
            structlog.get_logger("test").info("to.the.stream")
            wlogging.configure("info", "json", stream=journal_like)
            structlog.get_logger("test").info("to.the.journal")
        finally:
            structlog.reset_defaults()

    assert [e.text("BLINK_WATCHER_EVENT") for e in fake_journal.entries()] == ["to.the.journal"]
    assert "to.the.stream" in (tmp_path / "other").read_text()
    assert (tmp_path / "stderr").read_text() == ""
