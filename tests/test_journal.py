"""Journal entries: the field mapping, the native serialization, the sender and stream detection."""

from __future__ import annotations

import errno
import io
import json
import os
import socket
import struct
from pathlib import Path

import pytest

from tests.fakejournal import ALL_SEALS, FakeJournal, decode, fake_journal, no_journal
from watcher.journal import (
    JournalSender,
    diagnostic_fields,
    encode,
    event_fields,
    event_priority,
    is_journal_stream,
    wants_journal,
)
from watcher.models import Event, Execution

__all__ = ["fake_journal", "no_journal"]  # fixtures


def fields_of(pairs: list[tuple[str, str | bytes]]) -> dict[str, str | bytes]:
    as_dict = dict(pairs)
    assert len(as_dict) == len(pairs), f"a field is repeated: {pairs}"
    return as_dict


# --- priorities and fields -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "priority"),
    [("debug", "7"), ("info", "6"), ("warning", "4"), ("error", "3"), ("critical", "2")],
)
def test_a_diagnostic_has_the_priority_of_its_level(level: str, priority: str) -> None:
    fields = fields_of(diagnostic_fields({"event": "poll.failed", "level": level}))

    assert fields["PRIORITY"] == priority


def test_a_diagnostic_carries_its_name_execution_and_state() -> None:
    fields = fields_of(
        diagnostic_fields(
            {
                "event": "execution.unknown_state",
                "level": "warning",
                "execution_id": "ex-1",
                "workspace_id": "ws",
                "state": "Paused",
                "hint": "still polling",
            }
        )
    )

    assert fields == {
        "PRIORITY": "4",
        "SYSLOG_IDENTIFIER": "blink-watcher",
        "BLINK_WATCHER_EVENT": "execution.unknown_state",
        "EXECUTION_ID": "ex-1",
        "WORKSPACE_ID": "ws",
        "STATE": "Paused",
    }


def test_a_diagnostic_without_an_execution_has_no_execution_fields() -> None:
    fields = fields_of(diagnostic_fields({"event": "service.started", "level": "info"}))

    assert set(fields) == {"PRIORITY", "SYSLOG_IDENTIFIER", "BLINK_WATCHER_EVENT"}


def test_a_diagnostic_with_odd_values_still_has_a_priority() -> None:
    # Not strings: a state of None (never seen) or a number is no field; an
    # unknown level is filed as info rather than lost.
    fields = fields_of(diagnostic_fields({"event": "x", "level": "verbose", "state": None}))

    assert fields["PRIORITY"] == "6"
    assert "STATE" not in fields


def ending(event: str, state: str | None) -> bytes:
    """An event's exact bytes, as the log sink receives them."""
    body = json.loads(
        Event("execution.finished", ("ws", "ex-1"), state, Execution(), 1.0, 3).to_json()
    )
    # The opt-in state change has the same shape under its own name.
    return json.dumps({**body, "event": event}, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("event", "state", "priority"),
    [
        ("execution.finished", "Completed", 6),
        ("execution.finished", "completed", 6),
        ("execution.finished", "Failed", 4),
        ("execution.finished", "Cancelled", 4),
        ("execution.finished", "Timeout", 4),
        ("execution.finished", "Skipped", 4),
        ("execution.not_found", None, 4),
        ("execution.invalid", "Running", 4),
        ("execution.watch_timeout", "Running", 4),
        ("execution.state_changed", "Paused", 6),
        ("execution.state_changed", "Failed", 6),
    ],
)
def test_an_event_is_info_when_it_completed_or_changed_state_and_warning_otherwise(
    event: str, state: str | None, priority: int
) -> None:
    assert event_priority(event, state) == priority
    assert fields_of(event_fields(ending(event, state)))["PRIORITY"] == str(priority)


def test_an_event_entry_has_the_exact_line_as_message_and_its_fields() -> None:
    body = ending("execution.finished", "Failed")

    fields = fields_of(event_fields(body))

    assert fields == {
        "MESSAGE": body,
        "PRIORITY": "4",
        "SYSLOG_IDENTIFIER": "blink-watcher",
        "BLINK_WATCHER_EVENT": "execution.finished",
        "EXECUTION_ID": "ex-1",
        "WORKSPACE_ID": "ws",
        "STATE": "Failed",
    }


def test_an_event_never_seen_in_a_state_has_no_state_field() -> None:
    fields = fields_of(event_fields(ending("execution.not_found", None)))

    assert "STATE" not in fields
    assert json.loads(fields["MESSAGE"])["state"] is None


def test_a_body_that_is_not_json_still_reaches_the_journal() -> None:
    fields = fields_of(event_fields(b"not json"))

    assert fields["MESSAGE"] == b"not json"
    assert fields["PRIORITY"] == "4"


# --- serialization -------------------------------------------------------------------------


def test_plain_values_are_name_equals_value_lines() -> None:
    assert encode([("PRIORITY", "6"), ("MESSAGE", "caf\u00e9")]) == (
        b"PRIORITY=6\nMESSAGE=caf\xc3\xa9\n"
    )


def test_a_value_with_a_newline_is_length_prefixed_little_endian() -> None:
    value = b"Traceback:\n  line 1\n"

    data = encode([("MESSAGE", value), ("PRIORITY", "3")])

    assert data == b"MESSAGE\n" + struct.pack("<Q", len(value)) + value + b"\nPRIORITY=3\n"
    assert decode(data) == {"MESSAGE": value, "PRIORITY": b"3"}


def test_a_lone_surrogate_is_written_as_its_escape() -> None:
    assert encode([("STATE", "\ud800")]) == b"STATE=\\ud800\n"


# --- sending -------------------------------------------------------------------------------


def test_a_small_entry_is_one_datagram(fake_journal: FakeJournal) -> None:
    sender = JournalSender()
    try:
        sender.send([("MESSAGE", "hello"), ("PRIORITY", "6")])
    finally:
        sender.close()

    [entry] = fake_journal.entries()
    assert not entry.via_memfd
    assert entry.fields == {"MESSAGE": b"hello", "PRIORITY": b"6"}


def test_an_entry_too_big_for_a_datagram_arrives_whole_in_a_sealed_memfd(
    fake_journal: FakeJournal,
) -> None:
    # Past the send buffer whatever this machine's default is (about 200 KB).
    default_buffer = int(Path("/proc/sys/net/core/wmem_default").read_text())
    message = b'{"error_details":"' + b"x" * max(300_000, 2 * default_buffer) + b'"}'
    sender = JournalSender()
    try:
        sender.send([("MESSAGE", message), ("PRIORITY", "6")])
    finally:
        sender.close()

    [entry] = fake_journal.entries()
    assert entry.via_memfd
    assert entry.seals == ALL_SEALS
    assert entry.fields["MESSAGE"] == message


def test_a_missing_journal_socket_is_an_error_for_the_caller(no_journal: Path) -> None:
    sender = JournalSender()
    try:
        with pytest.raises(OSError, match="No such file") as info:
            sender.send([("MESSAGE", "hello")])
    finally:
        sender.close()
    assert info.value.errno == errno.ENOENT


def test_a_socket_nobody_listens_on_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nothing reads it
    sender = JournalSender(str(path))
    try:
        with pytest.raises(ConnectionRefusedError):
            sender.send([("MESSAGE", "hello")])
    finally:
        sender.close()


# --- is the stream the journal? ------------------------------------------------------------


def stream_id(stream: io.IOBase) -> str:
    st = os.fstat(stream.fileno())
    return f"{st.st_dev}:{st.st_ino}"


def test_a_stream_is_the_journal_when_journal_stream_names_it(tmp_path: Path) -> None:
    with open(tmp_path / "a", "w") as a, open(tmp_path / "b", "w") as b:
        assert is_journal_stream(a, stream_id(a))
        # Inherited by something that redirected its output (say to jq): not the journal.
        assert not is_journal_stream(b, stream_id(a))


@pytest.mark.parametrize("value", ["", "garbage", "1:x", ":"])
def test_an_unset_or_garbled_journal_stream_is_no_journal(tmp_path: Path, value: str) -> None:
    with open(tmp_path / "a", "w") as a:
        assert not is_journal_stream(a, value)


def test_a_stream_without_a_descriptor_is_no_journal() -> None:
    assert not is_journal_stream(io.StringIO(), "1:2")


def test_journal_mode_on_and_off_ignore_the_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(tmp_path / "a", "w") as a:
        monkeypatch.setenv("JOURNAL_STREAM", stream_id(a))
        assert wants_journal("auto", a)
        assert not wants_journal("off", a)
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not wants_journal("auto", a)
        assert wants_journal("on", a)
