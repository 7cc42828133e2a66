"""The live progress view: pure rendering, line-per-change without a TTY, redraws on one."""

from __future__ import annotations

import io
import re

import pytest

from watcher.models import Event, Execution
from watcher.progress import (
    LiveTable,
    Row,
    format_duration_ms,
    format_seconds,
    render_line,
    render_summary,
    render_table,
)
from watcher.scheduler import Watch

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

LIVE = Row(("ws-demo", "ex-1"), "Running", 3, 4.2, "Enrich phishing IOC")
NOT_ASKED = Row(("ws-demo", "ex-2"))
DONE = Row(("ws-ops", "ex-3"), "Completed", 5, 65.0, "Rotate IAM keys", "execution.finished")
MISSING = Row(("ws-demo", "ex-4"), None, 3, 1.0, None, "execution.not_found")


def failed_event() -> Event:
    execution = Execution(
        state="Failed",
        duration_ms=4200,
        step_results={"completed": 3, "failed": 1, "skipped": 3},
        error_details={
            "Contain host": "CrowdStrike API returned 403: API client lacks the Hosts:Write scope",
            "Notify": "second message, not shown",
        },
        playbook_name="Isolate compromised host",
    )
    return Event("execution.finished", ("ws", "ex-1"), "Failed", execution, 100.0, 4)


def events() -> list[Event]:
    ok = Execution(
        duration_ms=512, step_results={"completed": 5, "failed": 0}, display_name="Restart pod #7"
    )
    return [
        failed_event(),
        Event("execution.not_found", ("ws", "ex-2"), None, None, 100.0, 3),
        Event("execution.finished", ("ws", "ex-3"), "completed", ok, 100.0, 3),
        Event("execution.finished", ("ws", "ex-4"), "Completed", Execution(), 100.0, 1),
    ]


def test_render_table_shows_one_aligned_line_per_execution_and_a_footer() -> None:
    assert render_table([LIVE, NOT_ASKED, DONE, MISSING]) == (
        "EXECUTION     PLAYBOOK             STATE      ELAPSED  POLLS\n"
        "ws-demo/ex-1  Enrich phishing IOC  Running       4.2s      3\n"
        "ws-demo/ex-2  -                    waiting       0.0s      0\n"
        "ws-ops/ex-3   Rotate IAM keys      Completed    1m05s      5\n"
        "ws-demo/ex-4  -                    not found     1.0s      3\n"
        "2 of 4 ended"
    )


def test_render_table_keeps_within_max_rows_preferring_executions_still_watched() -> None:
    text = render_table([DONE, LIVE, MISSING, NOT_ASKED], max_rows=2)
    lines = text.split("\n")
    assert [line.split()[0] for line in lines[1:-1]] == ["ws-demo/ex-1", "ws-demo/ex-2"]
    assert lines[-1] == "2 of 4 ended (2 not shown)"


def test_render_table_clips_to_the_width_counting_only_visible_characters() -> None:
    text = render_table([LIVE, DONE, MISSING], color=True, width=30)
    assert "\x1b[" in text
    for line in text.split("\n"):
        assert len(ANSI.sub("", line)) <= 30
        assert line.count("\x1b[") % 2 == 0  # every colour that starts is reset


def test_colour_marks_how_executions_ended_and_only_when_asked() -> None:
    assert "\x1b" not in render_table([LIVE, DONE, MISSING])
    coloured = render_table([LIVE, DONE, MISSING], color=True)
    assert "\x1b[32mCompleted\x1b[0m" in coloured
    assert "\x1b[31mnot found\x1b[0m" in coloured
    assert "\x1b[33m" not in coloured
    assert "Running" in ANSI.sub("", coloured)
    assert "mRunning" not in coloured


def test_control_characters_from_the_api_never_reach_the_terminal() -> None:
    row = Row(("ws", "ex"), "Run\x1b[2Jning", 1, 0.0, "evil\nname\x07")
    table = render_table([row])
    assert "\x1b" not in table
    assert "\x07" not in table
    assert "evil name" in table
    assert table.count("\n") == 2  # header, one row, footer: the newline did not split it
    assert render_line(row) == "ws/ex  Run [2Jning  (poll 1, 0.0s)"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0s"), (4.25, "4.2s"), (59.9, "59.9s"), (65, "1m05s"), (7500, "2h05m")],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("ms", "text"), [(None, "-"), (-1, "-"), (0, "0ms"), (512, "512ms"), (4200, "4.2s")]
)
def test_format_duration_ms(ms: int | None, text: str) -> None:
    assert format_duration_ms(ms) == text


def test_rows_come_from_a_live_watch_and_from_the_event_that_ended_it() -> None:
    watch = Watch(("ws", "ex-1"), first_seen_at=100.0, state="Paused", polls=2)
    row = Row.from_watch(watch, now_s=103.5, playbook="Offboard")
    assert row == Row(("ws", "ex-1"), "Paused", 2, 3.5, "Offboard")
    assert not row.ended

    ended = Row.from_event(failed_event(), first_seen_at_s=95.0, playbook="ignored")
    assert ended == Row(
        ("ws", "ex-1"), "Failed", 4, 5.0, "Isolate compromised host", "execution.finished"
    )
    missing = Event("execution.not_found", ("ws", "ex-2"), None, None, 100.0, 3)
    assert Row.from_event(missing, playbook="Known from a 200").playbook == "Known from a 200"
    assert Row.from_event(missing).label == "not found"


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


def test_summary_shows_playbook_state_duration_failed_steps_and_the_first_error() -> None:
    text = render_summary(events())
    squeezed = [re.sub(r" {2,}", " | ", line) for line in text.split("\n")]
    assert squeezed == [
        "EXECUTION | PLAYBOOK | STATE | DURATION | FAILED/STEPS | ERROR",
        "ws/ex-1 | Isolate compromised host | Failed | 4.2s | 1/7 | "
        "CrowdStrike API returned 403: API client lacks the Hosts:...",
        "ws/ex-2 | - | not found | - | - | HTTP 404: no such execution in this workspace",
        "ws/ex-3 | Restart pod #7 | completed | 512ms | 0/5",
        "ws/ex-4 | - | Completed | - | -",
        "4 executions: 1 Failed, 1 not found, 2 completed",
    ]
    assert len(squeezed[1].rsplit(" | ", 1)[1]) == 60  # the error is truncated
