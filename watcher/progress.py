"""Live progress for people: a table redrawn in place on a TTY, a line per change elsewhere.

Shared by ``blink-watcher watch`` and ``blink-watcher demo``. Rendering is pure
(:func:`render_table`, :func:`render_line`, :func:`render_summary` return
strings); only :class:`LiveTable` writes, and only it knows about terminals.

Plain ANSI escapes (cursor up, clear line), no curses: the view has to work in
any terminal, over ssh and in tmux, and turn into plain lines in a pipe or a CI
log, where cursor movement would be garbage. Colour only on a TTY, and never
when ``NO_COLOR`` is set (https://no-color.org).

Typical use, with rows built from ``Scheduler.get(key)`` while an execution is
watched and from its ``Event`` once it ended::

    with LiveTable(sys.stdout) as table:
        ...
        table.update([Row.from_watch(w, time.time()) ...])   # on each change / tick
        ...
        table.finish(events)                                 # the summary
"""

from __future__ import annotations

import contextlib
import io
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Protocol, TextIO, cast

from watcher.models import Event, EventType, Execution, ExecutionKey, format_key

# --- terminal control ----------------------------------------------------------------------

_CSI: Final = "\x1b["
_HIDE_CURSOR: Final = _CSI + "?25l"
_SHOW_CURSOR: Final = _CSI + "?25h"
_CLEAR_LINE: Final = _CSI + "2K"
_CLEAR_BELOW: Final = _CSI + "J"
_RESET: Final = _CSI + "0m"
_BOLD: Final = "1"
_GREEN: Final = "32"
_RED: Final = "31"
_YELLOW: Final = "33"

# Column caps: an execution key is never cut (people copy it), free text is.
_PLAYBOOK_MAX: Final = 32
_STATE_MAX: Final = 24
_ERROR_MAX: Final = 60
_FALLBACK_SIZE: Final = (80, 24)

_OK_STATES: Final = frozenset({"completed"})
# Ended, but neither a success nor a failure of the playbook itself.
_NEUTRAL_STATES: Final = frozenset({"cancelled", "canceled", "skipped"})

_EVENT_LABELS: Final[dict[EventType, str]] = {
    "execution.not_found": "not found",
    "execution.invalid": "invalid ID",
    "execution.watch_timeout": "watch timeout",
}


def _cursor_up(lines: int) -> str:
    # "\r" as well: cursor-up keeps the column, and we redraw from column 0.
    return f"{_CSI}{lines}A\r" if lines > 0 else "\r"


# --- rows ----------------------------------------------------------------------------------


class WatchView(Protocol):
    """What a row needs from a live watch (``scheduler.Watch`` has it)."""

    @property
    def key(self) -> ExecutionKey: ...
    @property
    def state(self) -> str | None: ...
    @property
    def polls(self) -> int: ...
    @property
    def first_seen_at(self) -> float: ...


def playbook_of(execution: Execution | None) -> str | None:
    """The name people know an execution by: ``playbook_name``, else ``display_name``."""
    if execution is None:
        return None
    return execution.playbook_name or execution.display_name or None


@dataclass(frozen=True, slots=True)
class Row:
    """One execution's line in the live table.

    ``event`` is None while the execution is still watched, else how its watch
    ended; ``state`` is the last reported state (the final one once ended).
    """

    key: ExecutionKey
    state: str | None = None
    polls: int = 0
    elapsed_s: float = 0.0
    playbook: str | None = None
    event: EventType | None = None

    @classmethod
    def from_watch(cls, watch: WatchView, now_s: float, playbook: str | None = None) -> Row:
        """A row for an execution still being watched (``Scheduler.get(key)``)."""
        return cls(
            key=watch.key,
            state=watch.state,
            polls=watch.polls,
            elapsed_s=max(0.0, now_s - watch.first_seen_at),
            playbook=playbook,
        )

    @classmethod
    def from_event(
        cls, event: Event, first_seen_at_s: float | None = None, playbook: str | None = None
    ) -> Row:
        """A row for an execution whose watch ended with ``event``.

        ``first_seen_at_s`` (the watch's ``first_seen_at``) gives the elapsed
        time; ``playbook`` is used when the event carries no execution (a 404).
        """
        start = event.observed_at_s if first_seen_at_s is None else first_seen_at_s
        return cls(
            key=event.key,
            state=event.state,
            polls=event.polls,
            elapsed_s=max(0.0, event.observed_at_s - start),
            playbook=playbook_of(event.execution) or playbook,
            event=event.event,
        )

    @property
    def ended(self) -> bool:
        """Has this execution's watch produced its event?"""
        return self.event is not None

    @property
    def label(self) -> str:
        """What the STATE column shows."""
        if self.event is not None and self.event != "execution.finished":
            return _EVENT_LABELS[self.event]
        # No state yet: not asked, a 404 still within its grace, or a 200 without one.
        return self.state or "waiting"


def _tone(event: EventType | None, state: str | None) -> str:
    """The SGR colour of a state cell: only ended executions get one."""
    if event is None:
        return ""
    folded = (state or "").casefold()
    if event == "execution.finished" and folded in _OK_STATES:
        return _GREEN
    if event == "execution.finished" and folded in _NEUTRAL_STATES:
        return _YELLOW
    return _RED


# --- formatting ----------------------------------------------------------------------------


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


def _clean(text: str) -> str:
    # API strings reach the terminal: a newline would break the layout and an
    # ESC could drive the terminal, so every control character becomes a space.
    if text.isprintable():
        return text
    return "".join(" " if unicodedata.category(c)[0] == "C" else c for c in text)


def _clip(text: str, limit: int) -> str:
    # ASCII "...": the stream may not be able to encode an ellipsis.
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


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
        out.append(f"{_CSI}{sgr}m{text}{_RESET}" if color and sgr and text.strip() else text)
    return "".join(out).rstrip()


def _grid(
    header: Sequence[str],
    cells: Sequence[Sequence[str]],
    tones: Sequence[str],
    tone_col: int,
    right: frozenset[int],
) -> list[_Segments]:
    widths = [len(h) for h in header]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(values: Sequence[str], tone: str, head: bool) -> _Segments:
        segments: _Segments = []
        for i, value in enumerate(values):
            if i in right:
                text = value.rjust(widths[i])
            else:  # the last column is not padded: no trailing blanks inside a colour
                text = value.ljust(widths[i]) if i < len(values) - 1 else value
            sgr = _BOLD if head else (tone if i == tone_col else "")
            if i:
                segments.append(("  ", ""))
            segments.append((text, sgr))
        return segments

    return [line(header, "", True)] + [
        line(row, tone, False) for row, tone in zip(cells, tones, strict=True)
    ]


def render_table(
    rows: Sequence[Row],
    *,
    color: bool = False,
    width: int | None = None,
    max_rows: int | None = None,
) -> str:
    """The live table: a header, one line per row, and an ``N of M ended`` footer.

    ``width`` clips every line (a wrapped line would break redrawing in place);
    ``max_rows`` keeps the table within the screen, preferring rows still being
    watched. No trailing newline.
    """
    shown = list(range(len(rows)))
    if max_rows is not None and len(rows) > max_rows:
        live = [i for i, r in enumerate(rows) if not r.ended]
        ended = [i for i, r in enumerate(rows) if r.ended]
        shown = sorted((live + ended)[: max(max_rows, 0)])
    header = ("EXECUTION", "PLAYBOOK", "STATE", "ELAPSED", "POLLS")
    cells = [
        (
            _clean(format_key(r.key)),
            _clip(_clean(r.playbook or "-"), _PLAYBOOK_MAX),
            _clip(_clean(r.label), _STATE_MAX),
            format_seconds(r.elapsed_s),
            str(r.polls),
        )
        for r in (rows[i] for i in shown)
    ]
    tones = [_tone(rows[i].event, rows[i].state) for i in shown]
    lines = _grid(header, cells, tones, tone_col=2, right=frozenset({3, 4}))
    footer = f"{sum(1 for r in rows if r.ended)} of {len(rows)} ended"
    if len(shown) < len(rows):
        footer += f" ({len(rows) - len(shown)} not shown)"
    lines.append([(footer, "")])
    return "\n".join(_emit(line, color, width) for line in lines)


def render_line(row: Row) -> str:
    """One line for a state change, e.g. ``ws/ex-1  Running  (poll 3, 4.2s)``."""
    return (
        f"{_clean(format_key(row.key))}  {_clean(row.label)}  "
        f"(poll {row.polls}, {format_seconds(row.elapsed_s)})"
    )


def _error_text(event: Event) -> str:
    if event.event == "execution.not_found":
        return "HTTP 404: no such execution in this workspace"
    if event.event == "execution.invalid":
        return "HTTP 400: the API rejected the execution ID"
    if event.event == "execution.watch_timeout":
        return f"still {event.state or 'unknown'} when poll.max_watch ran out"
    details = event.execution.error_details if event.execution else {}
    # The first message only: the rest is in the event and the Blink UI.
    first = next(iter(details.values()), "")
    return _clip(_clean(first).strip(), _ERROR_MAX)


def _steps_text(execution: Execution | None) -> str:
    results = execution.step_results if execution else {}
    if not results:
        return "-"
    return f"{results.get('failed', 0)}/{sum(results.values())}"


def render_summary(events: Sequence[Event], *, color: bool = False) -> str:
    """How each watch ended, one line each, and a totals line. No trailing newline.

    Columns: execution, playbook, state, API duration, failed/total steps (from
    ``step_results``), and the first ``error_details`` message, truncated.
    """
    header = ("EXECUTION", "PLAYBOOK", "STATE", "DURATION", "FAILED/STEPS", "ERROR")
    rows = [Row.from_event(e) for e in events]
    cells = [
        (
            _clean(format_key(e.key)),
            _clip(_clean(r.playbook or "-"), _PLAYBOOK_MAX),
            _clip(_clean(r.label), _STATE_MAX),
            format_duration_ms(e.execution.duration_ms if e.execution else None),
            _steps_text(e.execution),
            _error_text(e),
        )
        for e, r in zip(events, rows, strict=True)
    ]
    tones = [_tone(e.event, e.state) for e in events]
    lines = _grid(header, cells, tones, tone_col=2, right=frozenset({3, 4}))
    # Counted case-insensitively (the API may say "completed"), named as first seen.
    counts: dict[str, tuple[str, int]] = {}
    for r in rows:
        label = _clip(_clean(r.label), _STATE_MAX)
        shown, n = counts.get(label.casefold(), (label, 0))
        counts[label.casefold()] = (shown, n + 1)
    noun = "execution" if len(events) == 1 else "executions"
    totals = ", ".join(f"{n} {label}" for label, n in counts.values())
    lines.append([(f"{len(events)} {noun}" + (f": {totals}" if totals else ""), "")])
    return "\n".join(_emit(line, color, None) for line in lines)


# --- the view ------------------------------------------------------------------------------


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or a closed stream
        return False


def color_allowed(tty: bool) -> bool:
    """Colour on a TTY unless ``NO_COLOR`` is set to something (no-color.org)."""
    return tty and not os.environ.get("NO_COLOR")


class LiveTable:
    """Shows progress on ``stream``; ``tty=None`` asks the stream (and ``$TERM``).

    On a TTY, :meth:`update` redraws the whole table in place; elsewhere it
    prints one :func:`render_line` per execution whose state label changed.
    :meth:`finish` prints the summary; :meth:`close` (or leaving the ``with``
    block, also on Ctrl-C) puts the cursor back. ``size`` is (columns, lines),
    read from the terminal on each redraw when None.
    """

    REFRESH_S: Final = 0.2
    """How often a caller should call ``update`` on a TTY to keep times ticking."""

    def __init__(
        self,
        stream: TextIO,
        tty: bool | None = None,
        *,
        color: bool | None = None,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.stream = stream
        if tty is None:
            # A dumb terminal cannot move the cursor: treat it like a pipe.
            tty = _isatty(stream) and os.environ.get("TERM") != "dumb"
        self.tty = tty
        self.color = color_allowed(tty) if color is None else color
        self._size = size
        self._frame: list[str] = []  # the lines of the table now on screen (TTY)
        self._drawn = 0
        self._cursor_hidden = False
        self._said: dict[ExecutionKey, str] = {}  # last label printed per execution (no TTY)
        self._closed = False

    def __enter__(self) -> LiveTable:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _terminal_size(self) -> tuple[int, int]:
        if self._size is not None:
            return self._size
        try:
            size = os.get_terminal_size(self.stream.fileno())
        except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
            return _FALLBACK_SIZE
        if size.columns <= 0 or size.lines <= 0:  # a pty nobody sized (script, some CI)
            return _FALLBACK_SIZE
        return size.columns, size.lines

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def update(self, rows: Sequence[Row]) -> None:
        """Show ``rows`` (every watched execution, in a stable order)."""
        if self._closed:
            return
        if not self.tty:
            out = []
            for row in rows:
                if row.state is None and not row.ended:
                    continue  # no state yet: nothing to say
                label = row.label
                if self._said.get(row.key) != label:
                    self._said[row.key] = label
                    out.append(render_line(row) + "\n")
            if out:
                self._write("".join(out))
            return
        columns, lines = self._terminal_size()
        # One column spare: writing the last column makes some terminals wrap.
        # Header, footer and a spare line: the frame must fit on the screen or
        # cursor-up cannot reach its top.
        text = render_table(
            rows, color=self.color, width=max(columns - 1, 10), max_rows=max(lines - 3, 1)
        )
        self._draw(text.split("\n"))

    def _draw(self, frame: list[str]) -> None:
        out = []
        if not self._cursor_hidden:
            out.append(_HIDE_CURSOR)  # no cursor flickering across the table
            self._cursor_hidden = True
        if self._drawn:
            out.append(_cursor_up(self._drawn))
        out += [_CLEAR_LINE + line + "\n" for line in frame]
        if len(frame) < self._drawn:
            out.append(_CLEAR_BELOW)  # a shorter frame must not leave old lines behind
        self._frame = frame
        self._drawn = len(frame)
        self._write("".join(out))

    def _erase(self) -> None:
        if self._drawn:
            self._write(_cursor_up(self._drawn) + _CLEAR_BELOW)
            self._drawn = 0

    def message(self, text: str, stream: TextIO | None = None) -> None:
        """Print a line (e.g. a diagnostic) above the table without garbling it."""
        target = self.stream if stream is None else stream
        if not self.tty or not self._drawn or self._closed:
            target.write(text.rstrip("\n") + "\n")
            target.flush()
            return
        frame = self._frame
        self._erase()
        target.write(text.rstrip("\n") + "\n")
        target.flush()
        self._draw(frame)

    def diagnostics_stream(self, target: TextIO) -> TextIO:
        """A text stream whose lines go to ``target`` through :meth:`message`.

        Give it to ``watcher.logs.configure`` so warnings show above the
        table instead of tearing it apart. Its ``isatty()`` answers whether
        colour is allowed, so a console renderer honours ``NO_COLOR`` too.
        """
        # The adapter is a TextIOBase, which typeshed does not count as a TextIO.
        return cast(TextIO, _MessageStream(self, target))

    def finish(self, events: Iterable[Event]) -> None:
        """Replace the live view with the summary of how each watch ended."""
        events = list(events)
        if self._closed:
            return
        if self.tty:
            self._erase()
            self._frame = []
        elif self._said:
            self._write("\n")  # a blank line between the progress lines and the summary
        self._write(render_summary(events, color=self.color) + "\n")
        self.close()

    def close(self) -> None:
        """Give the cursor back; the table stays as last drawn. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._cursor_hidden:
            self._cursor_hidden = False
            # The terminal may have gone away: then there is nothing to restore.
            with contextlib.suppress(OSError, ValueError):
                self._write(_SHOW_CURSOR)


class _MessageStream(io.TextIOBase):
    """Collects writes into lines and hands each to ``LiveTable.message``."""

    def __init__(self, table: LiveTable, target: TextIO) -> None:
        super().__init__()
        self._table = table
        self._target = target
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        # print() writes the text and the newline separately: wait for whole lines.
        self._pending += s
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            self._table.message(line, self._target)
        return len(s)

    def flush(self) -> None:
        pass  # whole lines are written through at once; a partial line waits for its end

    def isatty(self) -> bool:
        return self._table.color
