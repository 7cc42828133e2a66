"""The live view: the progress table redrawn in place on a TTY, a line per change elsewhere.

Shared by ``blink-watcher watch`` and ``blink-watcher demo``. What the table,
the lines and the summary say is built in :mod:`watcher.cli.rows`; only
:class:`LiveTable` writes, and only it knows about terminals.

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
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Final, TextIO, cast

from watcher.cli.render import CSI
from watcher.cli.rows import Row, render_line, render_summary, render_table
from watcher.models import Event, ExecutionKey

_HIDE_CURSOR: Final = CSI + "?25l"
_SHOW_CURSOR: Final = CSI + "?25h"
_CLEAR_LINE: Final = CSI + "2K"
_CLEAR_BELOW: Final = CSI + "J"
_FALLBACK_SIZE: Final = (80, 24)


def _cursor_up(lines: int) -> str:
    # "\r" as well: cursor-up keeps the column, and we redraw from column 0.
    return f"{CSI}{lines}A\r" if lines > 0 else "\r"


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
        width = None
        if self.tty:
            self._erase()
            self._frame = []
            width = max(self._terminal_size()[0] - 1, 10)
        elif self._said:
            self._write("\n")  # a blank line between the progress lines and the summary
        self._write(render_summary(events, color=self.color, width=width) + "\n")
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
