"""What the progress view says: rows from watches and events, the live table, the summary."""

from __future__ import annotations

import re

from tests.cli.samples import ANSI, DONE, LIVE, MISSING, NOT_ASKED, events, failed_event
from watcher.cli.rows import Row, render_line, render_summary, render_table
from watcher.models import Event
from watcher.watches import Watch


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


def test_summary_shows_playbook_state_duration_failed_steps_and_the_first_error() -> None:
    text = render_summary(events())
    squeezed = [re.sub(r" {2,}", " | ", line) for line in text.split("\n")]
    assert squeezed == [
        "EXECUTION | PLAYBOOK | STATE | DURATION | FAILED | ERROR",
        "ws/ex-1 | Isolate compromised host | Failed | 4.2s | 1/7 | "
        "CrowdStrike API returned 403: API client lacks the Hosts:...",
        "ws/ex-2 | - | not found | - | - | HTTP 404: no such execution in this workspace",
        "ws/ex-3 | Restart pod #7 | completed | 512ms | 0/5",
        "ws/ex-4 | - | Completed | - | -",
        "4 executions: 1 Failed, 1 not found, 2 completed",
    ]
    assert len(squeezed[1].rsplit(" | ", 1)[1]) == 60  # the error is truncated


def test_the_summary_fits_80_columns_shortening_the_error_and_not_the_numbers() -> None:
    text = render_summary(events(), width=79)
    lines = text.split("\n")
    assert all(len(line) <= 79 for line in lines)
    assert lines[0].split() == ["EXECUTION", "PLAYBOOK", "STATE", "DURATION", "FAILED", "ERROR"]
    failed = next(line for line in lines if "Failed" in line)
    assert failed.rstrip().endswith("...")
    assert render_summary(events()) == render_summary(events(), width=None)  # a pipe: whole


def test_the_live_table_at_80_columns_keeps_elapsed_and_polls() -> None:
    long_key = Row(("ws-demo", "01HZZX1ENR1CHPH1SH1NG00001"), "Running", 3, 4.2, "P" * 60)
    lines = render_table([long_key, DONE], width=79).split("\n")
    assert all(len(line) <= 79 for line in lines)
    assert lines[0].split()[-2:] == ["ELAPSED", "POLLS"]
    assert lines[1].endswith("4.2s      3")
    assert "01HZZX1ENR1CHPH1SH1NG00001" in lines[1]  # the key, which people copy, is whole
