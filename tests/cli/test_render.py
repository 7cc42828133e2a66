"""The one renderer: tables fitted to their columns, durations, truncation with an ellipsis."""

from __future__ import annotations

import pytest

from watcher.cli.render import (
    GREEN,
    Column,
    Styled,
    clean,
    clip,
    format_ago,
    format_duration_ms,
    format_seconds,
    table,
)


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


@pytest.mark.parametrize(
    ("before_s", "text"),
    [
        (0.0, "0s ago"),
        (42.4, "42s ago"),
        (119.0, "119s ago"),
        (300.0, "5m ago"),
        (12600, "3.5h ago"),
    ],
)
def test_format_ago(before_s: float, text: str) -> None:
    assert format_ago(1000.0 - before_s, 1000.0) == text


def test_format_ago_without_a_time_or_with_one_in_the_future() -> None:
    assert format_ago(None, 1000.0) == "-"
    assert format_ago(1005.0, 1000.0) == "0s ago"  # a clock step back is not "-5s ago"


def test_clip_marks_a_cut_with_an_ellipsis_within_the_limit() -> None:
    assert clip("Rotate IAM keys", 15) == "Rotate IAM keys"
    assert clip("Rotate IAM keys", 10) == "Rotate ..."
    assert len(clip("x" * 100, 10)) == 10
    assert clip("abcdef", 2) == "..."  # never less than the marker itself


def test_clean_turns_every_control_character_into_a_space() -> None:
    assert clean("plain text") == "plain text"
    assert clean("evil\nname\x07\x1b[2J") == "evil name  [2J"


COLUMNS = (Column("KEY"), Column("NAME", max_width=8), Column("N", right=True), Column("NOTE"))


def test_table_fits_each_column_to_its_widest_cell_and_never_ends_a_line_in_blanks() -> None:
    text = table(
        COLUMNS,
        [["ws/ex-1", "Restart pod now", "3", ""], ["ws/a", "Enrich", "12", "retried"]],
        footer=["2 rows"],
    )
    assert text == (
        "KEY      NAME       N  NOTE\nws/ex-1  Resta...   3\nws/a     Enrich    12  retried\n2 rows"
    )


def test_table_with_no_rows_is_its_header() -> None:
    assert table(COLUMNS, []) == "KEY  NAME  N  NOTE"


def test_table_cells_never_carry_control_characters_to_the_terminal() -> None:
    text = table(COLUMNS, [["ws/\x1bex", "a\nb", "1", "bell\x07"]], footer=["end\r"])
    assert "\x1b" not in text
    assert "\x07" not in text
    assert text.split("\n") == ["KEY     NAME  N  NOTE", "ws/ ex  a b   1  bell", "end"]


def test_table_colours_only_when_asked_and_cuts_lines_to_the_width() -> None:
    rows = [["ws/ex-1", Styled("Done", GREEN), "1", "a long note that will not fit"]]
    assert "\x1b" not in table(COLUMNS, rows)
    coloured = table(COLUMNS, rows, color=True)
    assert "\x1b[1mNOTE\x1b[0m" in coloured  # a bold header
    assert "\x1b[32mDone\x1b[0m" in coloured
    narrow = table(COLUMNS, rows, footer=["a footer longer than twenty"], width=20)
    assert narrow.split("\n") == [
        "KEY      NAME  N  NO",
        "ws/ex-1  Done  1  a",
        "a footer longer than",
    ]


def test_a_table_too_wide_shortens_the_least_useful_column_first_with_an_ellipsis() -> None:
    columns = [
        Column("KEY"),
        Column("NAME", shrink=2),
        Column("N", right=True),
        Column("NOTE", shrink=1),
    ]
    rows = [["ws/ex-1", "Quarantine suspicious email", "12", "a long note that will not fit"]]
    full = table(columns, rows).split("\n")
    assert len(full[1]) == 7 + 2 + 27 + 2 + 2 + 2 + 29

    # 20 characters too wide: NOTE gives them all up and says it was cut.
    lines = table(columns, rows, width=len(full[1]) - 20).split("\n")
    assert lines[1] == "ws/ex-1  Quarantine suspicious email  12  a long..."
    # Narrower still: NOTE stops at its floor, then NAME gives up width too;
    # the key and the number, which people read whole, are never cut.
    lines = table(columns, rows, width=40).split("\n")
    assert lines[1] == "ws/ex-1  Quarantine sus...  12  a lon..."
    assert all(len(line) <= 40 for line in lines)
    assert lines[0].split() == ["KEY", "NAME", "N", "NOTE"]


def test_a_table_that_fits_is_not_shortened() -> None:
    columns = [Column("KEY"), Column("NOTE", shrink=1)]
    rows = [["ws/ex-1", "short"]]
    assert table(columns, rows, width=80) == table(columns, rows)


def test_when_shortening_is_not_enough_the_least_useful_column_is_left_out() -> None:
    columns = [Column("KEY"), Column("NAME", shrink=2), Column("NOTE", shrink=1)]
    rows = [["ws/0123456789abcdef", "Quarantine suspicious email", "a long note"]]
    # At their floors (8) both would need 39 columns: NOTE goes, and the room
    # it frees goes back to NAME.
    lines = table(columns, rows, width=32).split("\n")
    assert lines == ["KEY                  NAME", "ws/0123456789abcdef  Quaranti..."]
