"""The one text renderer of the terminal side: tables fitted to columns, durations, truncation.

Every command that prints for people (``watch``, ``status``, ``deliveries``,
``demo``) lays its tables out here, so they all align, truncate and colour the
same way. Functions return strings; nothing here writes, and the only thing
asked of a terminal is its width (``terminal_width``).
"""

from __future__ import annotations

import io
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, TextIO

CSI: Final = "\x1b["
RESET: Final = CSI + "0m"

# SGR parameters for Styled cells.
BOLD: Final = "1"
GREEN: Final = "32"
RED: Final = "31"
YELLOW: Final = "33"

# ASCII, not "…": the output stream may not be able to encode an ellipsis.
ELLIPSIS: Final = "..."
COLUMN_GAP: Final = "  "


# --- text ----------------------------------------------------------------------------------


def clean(text: str) -> str:
    """``text`` with every control character turned into a space.

    API and receiver strings reach the terminal: a newline would break the
    layout and an ESC could drive the terminal.
    """
    if text.isprintable():
        return text
    return "".join(" " if unicodedata.category(c)[0] == "C" else c for c in text)


def terminal_width(stream: TextIO) -> int | None:
    """The columns of the terminal ``stream`` writes to; None when it is not one.

    Output to a pipe or a file is never cut: a script reading it wants it whole.
    """
    try:
        if not stream.isatty():
            return None
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        return None
    return columns if columns > 0 else None  # a pty nobody sized (script, some CI)


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``...`` when cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - len(ELLIPSIS), 0)] + ELLIPSIS


# --- durations -----------------------------------------------------------------------------


def format_seconds(seconds: float) -> str:
    """``0.4s``, ``42.0s``, ``3m07s``, ``2h05m``: short enough for a column."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def format_duration_ms(duration_ms: int | None) -> str:
    """An API ``duration`` (ms) for people; ``-`` when the API gave none."""
    if duration_ms is None or duration_ms < 0:
        return "-"
    if duration_ms < 1000:
        return f"{duration_ms}ms"
    return format_seconds(duration_ms / 1000)


def format_ago(epoch_s: float | None, now_s: float) -> str:
    """How long before ``now_s`` a stored time was: ``42s ago``, ``5m ago``, ``3.5h ago``."""
    if epoch_s is None:
        return "-"
    seconds = max(0.0, now_s - epoch_s)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


# --- tables --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: its title, alignment, and how its cells may be shortened.

    ``max_width`` clips cells always; ``shrink`` says in which order columns
    give up width when the table is wider than the terminal (1 first, 0 never:
    execution keys, which people copy, and short numbers).
    """

    title: str
    right: bool = False  # numbers and durations line up on the right
    max_width: int | None = None  # None: never cut
    shrink: int = 0


class Styled(NamedTuple):
    """A cell shown in colour when colour is on: ``sgr`` is an SGR parameter such as ``RED``."""

    text: str
    sgr: str


Cell = str | Styled

# A rendered line is a list of (text, SGR code) segments, so that clipping to
# the terminal width counts only visible characters and colour never breaks.
_Segments = list[tuple[str, str]]

# A shrinking column keeps at least this many characters (or its title's).
_MIN_SHRUNK: Final = 8


def _emit(segments: _Segments, color: bool, width: int | None) -> str:
    out: list[str] = []
    room = width if width is not None else -1
    for text, sgr in segments:
        if room >= 0:
            if room == 0:
                break
            text = text[:room]
            room -= len(text)
        out.append(f"{CSI}{sgr}m{text}{RESET}" if color and sgr and text.strip() else text)
    return "".join(out).rstrip()


def _fit(column: Column, cell: Cell) -> tuple[str, str]:
    text, sgr = (cell.text, cell.sgr) if isinstance(cell, Styled) else (cell, "")
    text = clean(text)
    if column.max_width is not None:
        text = clip(text, column.max_width)
    return text, sgr


def table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    *,
    footer: Sequence[str] = (),
    color: bool = False,
    width: int | None = None,
) -> str:
    """A header, one line per row and the ``footer`` lines, each column as wide as its cells.

    Cells are cleaned of control characters and clipped to their column's
    ``max_width``; columns are two spaces apart, and no line ends in blanks.
    With ``color`` the header is bold and ``Styled`` cells are coloured.
    ``width`` fits the table to that many visible characters: the columns
    marked ``shrink`` give up width first, their cells ending in ``...``, and
    are left out when even that is not enough; what still does not fit is
    cut (a wrapped line would break a redraw in place).
    No trailing newline.
    """
    fitted = [[_fit(c, cell) for c, cell in zip(columns, row, strict=True)] for row in rows]
    widths = [len(c.title) for c in columns]
    for cells in fitted:
        widths = [max(w, len(text)) for w, (text, _) in zip(widths, cells, strict=True)]
    if width is not None:
        fitted_widths = _shrink(columns, widths, width)
        keep = [i for i, w in enumerate(fitted_widths) if w is not None]
        columns = [columns[i] for i in keep]
        widths = [w for w in fitted_widths if w is not None]
        fitted = [
            [(clip(cells[i][0], w), cells[i][1]) for i, w in zip(keep, widths, strict=True)]
            for cells in fitted
        ]

    def line(cells: Sequence[tuple[str, str]]) -> _Segments:
        segments: _Segments = []
        for i, (column, (text, sgr)) in enumerate(zip(columns, cells, strict=True)):
            if column.right:
                text = text.rjust(widths[i])
            elif i < len(columns) - 1:  # the last column is not padded: no blanks inside a colour
                text = text.ljust(widths[i])
            if i:
                segments.append((COLUMN_GAP, ""))
            segments.append((text, sgr))
        return segments

    lines = [line([(c.title, BOLD) for c in columns])]
    lines += [line(cells) for cells in fitted]
    lines += [[(clean(text), "")] for text in footer]
    return "\n".join(_emit(segments, color, width) for segments in lines)


def _shrink(columns: Sequence[Column], natural: list[int], width: int) -> list[int | None]:
    """Column widths that fit ``width``; None for a column left out.

    The ``shrink`` columns narrow in their order down to a floor; if that is
    not enough they are left out in the same order (all but one), and the
    room that frees goes back to those still shown, the most useful first.
    """
    widths: list[int | None] = list(natural)
    order = [i for _, i in sorted((c.shrink, i) for i, c in enumerate(columns) if c.shrink)]

    def excess() -> int:
        shown = [w for w in widths if w is not None]
        return sum(shown) + len(COLUMN_GAP) * (len(shown) - 1) - width

    for i in order:
        floor = max(len(columns[i].title), _MIN_SHRUNK)
        widths[i] = natural[i] - max(0, min(excess(), natural[i] - floor))
    for i in order[:-1]:
        if excess() <= 0:
            break
        widths[i] = None
    for i in reversed(order):
        current = widths[i]
        if current is not None and excess() < 0:
            widths[i] = min(natural[i], current - excess())
    return widths
