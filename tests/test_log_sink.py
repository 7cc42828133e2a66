"""The log sink: one event per line, on standard output, appended to a file, or in the journal."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import structlog

import watcher.logs as wlogging
from tests.fakejournal import FakeJournal, fake_journal, no_journal
from watcher.config import LogSinkConfig
from watcher.errors import DeliveryError
from watcher.sinks import build_sink
from watcher.sinks.log import LogSink

__all__ = ["fake_journal", "no_journal"]  # fixtures

FIRST = b'{"event":"execution.finished","event_id":"evt_1","state":"Completed"}'
SECOND = '{"event":"execution.not_found","event_id":"evt_2","note":"caf\u00e9"}'.encode()


@pytest.fixture
async def make_sink() -> AsyncIterator[Callable[[Path | None], LogSink]]:
    sinks: list[LogSink] = []

    def factory(path: Path | None) -> LogSink:
        sink = LogSink(LogSinkConfig(name="log", path=path))
        sinks.append(sink)
        return sink

    yield factory
    for sink in sinks:
        await sink.close()


async def test_each_event_is_one_line_on_standard_output_and_nothing_else(
    make_sink: Callable[[Path | None], LogSink], capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    sink = make_sink(None)

    await sink.deliver("evt_1", FIRST)
    await sink.deliver("evt_2", SECOND)

    out, err = capfdbinary.readouterr()
    assert out == FIRST + b"\n" + SECOND + b"\n"
    assert err == b""
    assert [json.loads(line)["event_id"] for line in out.splitlines()] == ["evt_1", "evt_2"]


async def test_each_line_reaches_the_file_before_deliver_returns(
    make_sink: Callable[[Path | None], LogSink], tmp_path: Path
) -> None:
    path = tmp_path / "results.jsonl"
    sink = make_sink(path)

    await sink.deliver("evt_1", FIRST)
    # Flushed, not sitting in a buffer: a `tail -f` reader sees it now.
    assert path.read_bytes() == FIRST + b"\n"

    await sink.deliver("evt_2", SECOND)
    assert path.read_bytes() == FIRST + b"\n" + SECOND + b"\n"


async def test_the_file_is_appended_to_not_truncated(
    make_sink: Callable[[Path | None], LogSink], tmp_path: Path
) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"earlier":true}\n')

    first = make_sink(path)
    await first.deliver("evt_1", FIRST)
    await first.close()
    second = make_sink(path)
    await second.deliver("evt_2", SECOND)

    assert path.read_bytes().splitlines() == [b'{"earlier":true}', FIRST, SECOND]


async def test_missing_parent_directories_are_created(
    make_sink: Callable[[Path | None], LogSink], tmp_path: Path
) -> None:
    path = tmp_path / "var" / "log" / "blink-watcher" / "results.jsonl"

    await make_sink(path).deliver("evt_1", FIRST)

    assert path.read_bytes() == FIRST + b"\n"


async def test_writing_to_a_file_leaves_standard_output_alone(
    make_sink: Callable[[Path | None], LogSink],
    tmp_path: Path,
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    await make_sink(tmp_path / "results.jsonl").deliver("evt_1", FIRST)

    assert capfdbinary.readouterr() == (b"", b"")


async def test_an_unwritable_path_is_a_retryable_delivery_error(
    make_sink: Callable[[Path | None], LogSink], tmp_path: Path
) -> None:
    (tmp_path / "afile").write_text("a regular file, not a directory")
    sink = make_sink(tmp_path / "afile" / "results.jsonl")

    with pytest.raises(DeliveryError) as info:
        await sink.deliver("evt_1", FIRST)

    # The disk may be fixed while the daemon runs: worth trying again.
    assert info.value.retryable is True
    assert "cannot write" in str(info.value)


async def test_closing_twice_is_harmless_and_a_later_event_reopens_the_file(
    make_sink: Callable[[Path | None], LogSink], tmp_path: Path
) -> None:
    path = tmp_path / "results.jsonl"
    sink = make_sink(path)
    await sink.deliver("evt_1", FIRST)
    await sink.close()
    await sink.close()

    await sink.deliver("evt_2", SECOND)

    assert path.read_bytes().splitlines() == [FIRST, SECOND]


def test_build_sink_makes_a_log_sink_for_a_log_config() -> None:
    sink = build_sink(LogSinkConfig(name="log:stdout"))

    assert isinstance(sink, LogSink)
    assert sink.name == "log:stdout"


# --- the journal ---------------------------------------------------------------------------


async def test_in_the_journal_each_event_is_an_entry_whose_message_is_the_line(
    fake_journal: FakeJournal, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    sink = LogSink(LogSinkConfig(name="log", journal="on"))
    try:
        await sink.deliver("evt_1", FIRST)
        await sink.deliver("evt_2", SECOND)
    finally:
        await sink.close()

    first, second = fake_journal.entries()
    assert first.fields["MESSAGE"] == FIRST
    assert first.text("PRIORITY") == "6"
    assert first.text("STATE") == "Completed"
    assert first.text("BLINK_WATCHER_EVENT") == "execution.finished"
    assert second.fields["MESSAGE"] == SECOND
    assert second.text("PRIORITY") == "4"
    assert capfdbinary.readouterr() == (b"", b"")


async def test_a_300_kb_event_reaches_the_journal_whole(fake_journal: FakeJournal) -> None:
    body = json.dumps(
        {"event": "execution.finished", "state": "Failed", "error_details": {"s": "x" * 300_000}}
    ).encode()
    sink = LogSink(LogSinkConfig(name="log", journal="on"))
    try:
        await sink.deliver("evt_big", body)
    finally:
        await sink.close()

    [entry] = fake_journal.entries()
    assert entry.fields["MESSAGE"] == body


async def test_without_the_journal_events_go_to_standard_output_and_it_says_so_once(
    no_journal: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    out = io.StringIO()
    wlogging.configure("info", "json", stream=out, journal="off")
    sink = LogSink(LogSinkConfig(name="log", journal="on"))
    try:
        await sink.deliver("evt_1", FIRST)
        await sink.deliver("evt_2", SECOND)
    finally:
        await sink.close()
        structlog.reset_defaults()

    # Not lost: the stream took them, so the deliveries are done.
    assert capfdbinary.readouterr().out == FIRST + b"\n" + SECOND + b"\n"
    [notice] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert notice["event"] == "journal.unavailable"
    assert notice["fallback"] == "standard output"
    assert notice["event_id"] == "evt_1"


def stdout_is_the_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Name standard output (pytest's capture of it) in $JOURNAL_STREAM, as systemd does."""
    st = os.fstat(sys.stdout.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")


async def test_auto_uses_the_journal_when_standard_output_is_the_journal(
    fake_journal: FakeJournal,
    monkeypatch: pytest.MonkeyPatch,
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    stdout_is_the_journal(monkeypatch)
    sink = LogSink(LogSinkConfig(name="log"))
    try:
        await sink.deliver("evt_1", FIRST)
    finally:
        await sink.close()

    assert [e.fields["MESSAGE"] for e in fake_journal.entries()] == [FIRST]
    assert capfdbinary.readouterr().out == b""


async def test_journal_off_keeps_lines_on_standard_output_even_under_systemd(
    fake_journal: FakeJournal,
    monkeypatch: pytest.MonkeyPatch,
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    stdout_is_the_journal(monkeypatch)
    sink = LogSink(LogSinkConfig(name="log", journal="off"))
    try:
        await sink.deliver("evt_1", FIRST)
    finally:
        await sink.close()

    assert fake_journal.entries() == []
    assert capfdbinary.readouterr().out == FIRST + b"\n"


async def test_a_sink_writing_to_a_file_never_uses_the_journal(
    fake_journal: FakeJournal, tmp_path: Path
) -> None:
    path = tmp_path / "results.jsonl"
    sink = LogSink(LogSinkConfig(name="log", path=path, journal="on"))
    try:
        await sink.deliver("evt_1", FIRST)
    finally:
        await sink.close()

    assert path.read_bytes() == FIRST + b"\n"
    assert fake_journal.entries() == []
