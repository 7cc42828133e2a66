"""The live view: a line per change without a TTY, redraws in place on one."""

from __future__ import annotations

import io
import re

import pytest

from tests.cli.samples import ANSI, DONE, LIVE, NOT_ASKED, events, failed_event
from watcher.cli.live import LiveTable
from watcher.cli.rows import Row


def test_without_a_tty_each_state_change_is_one_line() -> None:
    out = io.StringIO()
    table = LiveTable(out, tty=False)
    assert not table.tty
    assert not table.color
    key = ("ws", "ex-1")
    table.update([Row(key)])  # not asked yet: nothing to say
    table.update([Row(key, None, 1, 0.1)])  # a 404 within its grace: no state yet
    table.update([Row(key, "Pending", 2, 0.2)])
    table.update([Row(key, "Pending", 3, 0.5)])  # unchanged: silent
    table.update([Row(key, "Running", 4, 4.2)])
    table.update([Row(key, "Completed", 5, 6.0, event="execution.finished")])
    table.update([Row(key, "Completed", 5, 6.0, event="execution.finished")])
    assert out.getvalue() == (
        "ws/ex-1  Pending  (poll 2, 0.2s)\n"
        "ws/ex-1  Running  (poll 4, 4.2s)\n"
        "ws/ex-1  Completed  (poll 5, 6.0s)\n"
    )


def test_without_a_tty_the_summary_follows_a_blank_line_and_no_escape_codes() -> None:
    out = io.StringIO()
    table = LiveTable(out, tty=False)
    table.update([Row(("ws", "ex-1"), "Failed", 4, 1.0, event="execution.finished")])
    table.finish([failed_event()])
    lines = out.getvalue().split("\n")
    assert lines[:3] == ["ws/ex-1  Failed  (poll 4, 1.0s)", "", lines[2]]
    assert lines[2].startswith("EXECUTION")
    assert out.getvalue().endswith("1 execution: 1 Failed\n")
    assert "\x1b" not in out.getvalue()


def test_on_a_tty_updates_redraw_in_place_and_close_restores_the_cursor() -> None:
    out = io.StringIO()
    table = LiveTable(out, tty=True, color=False, size=(100, 40))
    table.update([LIVE, NOT_ASKED])
    first = out.getvalue()
    assert first.startswith("\x1b[?25l")  # cursor hidden while drawing
    assert first.count("\x1b[2K") == 4  # header, two rows, footer: each line cleared
    assert "\x1b[" + "4A" not in first

    table.update([LIVE, NOT_ASKED])
    second = out.getvalue()[len(first) :]
    assert second.startswith("\x1b[4A\r")  # back to the table's first line
    assert second.count("\x1b[2K") == 4

    table.update([LIVE])  # a shorter frame clears what the taller one left below
    assert out.getvalue().endswith("\x1b[J")

    table.close()
    table.close()  # idempotent
    assert out.getvalue().endswith("\x1b[?25h")
    assert out.getvalue().count("\x1b[?25h") == 1


def test_on_a_tty_a_message_is_printed_above_the_table_which_is_then_redrawn() -> None:
    out, err = io.StringIO(), io.StringIO()
    table = LiveTable(out, tty=True, color=False, size=(100, 40))
    table.update([LIVE])
    before = out.getvalue()
    stream = table.diagnostics_stream(err)
    stream.write("poll.failed reason=timeout")  # print() writes the newline separately
    assert err.getvalue() == ""
    stream.write("\n")
    assert err.getvalue() == "poll.failed reason=timeout\n"
    redraw = out.getvalue()[len(before) :]
    assert redraw.startswith("\x1b[3A\r\x1b[J")  # the table is erased first ...
    assert redraw.count("\x1b[2K") == 3  # ... and drawn again below the message
    assert not stream.isatty()  # colour off: a console log renderer must not colour either


def test_on_a_tty_finish_replaces_the_live_table_with_the_summary() -> None:
    out = io.StringIO()
    table = LiveTable(out, tty=True, color=True, size=(100, 40))
    table.update([DONE])
    table.finish(events())
    tail = out.getvalue().split("\x1b[3A\r\x1b[J", 1)[1]
    assert ANSI.sub("", tail).startswith("EXECUTION")
    assert tail.endswith("\x1b[?25h")
    assert re.search(r"\x1b\[31mFailed *\x1b\[0m", tail)


def test_colour_follows_the_tty_and_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert LiveTable(io.StringIO(), tty=True).color
    assert not LiveTable(io.StringIO(), tty=False).color
    assert not LiveTable(io.StringIO()).tty  # a StringIO is no terminal
    monkeypatch.setenv("NO_COLOR", "1")
    assert not LiveTable(io.StringIO(), tty=True).color


def test_on_an_80_column_tty_the_summary_fits_and_keeps_every_column() -> None:
    out = io.StringIO()
    table = LiveTable(out, tty=True, color=False, size=(80, 40))
    table.update([DONE])
    table.finish(events())
    summary = out.getvalue().split("\x1b[J", 1)[1].replace("\x1b[?25h", "")
    lines = summary.rstrip("\n").split("\n")
    assert all(len(line) < 80 for line in lines)
    assert lines[0].split()[:4] == ["EXECUTION", "PLAYBOOK", "STATE", "DURATION"]
