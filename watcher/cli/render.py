"""The one text renderer of the terminal side: tables fitted to columns, durations, truncation.

Every command that prints for people (``watch``, ``status``, ``deliveries``,
``demo``) lays its tables out here, so they all align, truncate and colour the
same way. Functions return strings; nothing here writes or knows about terminals
beyond the SGR colour codes a caller may ask for.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

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
    """A table column: its title, alignment, and the width past which cells are clipped."""

    title: str
    right: bool = False  # numbers and durations line up on the right
    max_width: int | None = None  # None: never cut (execution keys, which people copy)


class Styled(NamedTuple):
    """A cell shown in colour when colour is on: ``sgr`` is an SGR parameter such as ``RED``."""

    text: str
    sgr: str


Cell = str | Styled

# A rendered line is a list of (text, SGR code) segments, so that clipping to
# the terminal width counts only visible characters and colour never breaks.
_Segments = list[tuple[str, str]]


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
    With ``color`` the header is bold and ``Styled`` cells are coloured;
    ``width`` cuts every line to that many visible characters (a wrapped line
    would break a redraw in place). No trailing newline.
    """
    fitted = [[_fit(c, cell) for c, cell in zip(columns, row, strict=True)] for row in rows]
    widths = [len(c.title) for c in columns]
    for cells in fitted:
        widths = [max(w, len(text)) for w, (text, _) in zip(widths, cells, strict=True)]

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
