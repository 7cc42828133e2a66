"""What the progress view says about each execution: its row, the live table, the end summary.

Pure: every function returns a string laid out by :mod:`watcher.cli.render`;
:class:`watcher.cli.live.LiveTable` decides when and where to write them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from watcher.cli.render import (
    GREEN,
    RED,
    YELLOW,
    Column,
    Styled,
    clean,
    clip,
    format_duration_ms,
    format_seconds,
    table,
)
from watcher.models import Event, EventType, Execution, ExecutionKey, format_key

# Column caps: an execution key is never cut (people copy it), free text is.
_PLAYBOOK_MAX: Final = 32
_STATE_MAX: Final = 24
_ERROR_MAX: Final = 60

_OK_STATES: Final = frozenset({"completed"})
# Ended, but neither a success nor a failure of the playbook itself.
_NEUTRAL_STATES: Final = frozenset({"cancelled", "canceled", "skipped"})

_EVENT_LABELS: Final[dict[EventType, str]] = {
    "execution.not_found": "not found",
    "execution.invalid": "invalid ID",
    "execution.watch_timeout": "watch timeout",
}

_LIVE_COLUMNS: Final = (
    Column("EXECUTION"),
    Column("PLAYBOOK", max_width=_PLAYBOOK_MAX, shrink=1),
    Column("STATE", max_width=_STATE_MAX, shrink=2),
    Column("ELAPSED", right=True),
    Column("POLLS", right=True),
)
_SUMMARY_COLUMNS: Final = (
    Column("EXECUTION"),
    Column("PLAYBOOK", max_width=_PLAYBOOK_MAX, shrink=2),
    Column("STATE", max_width=_STATE_MAX),
    Column("DURATION", right=True),
    Column("FAILED", right=True),  # failed steps of all: 1/7
    Column("ERROR", max_width=_ERROR_MAX, shrink=1),
)


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
        return GREEN
    if event == "execution.finished" and folded in _NEUTRAL_STATES:
        return YELLOW
    return RED


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
    cells = [
        (
            format_key(r.key),
            r.playbook or "-",
            Styled(r.label, _tone(r.event, r.state)),
            format_seconds(r.elapsed_s),
            str(r.polls),
        )
        for r in (rows[i] for i in shown)
    ]
    footer = f"{sum(1 for r in rows if r.ended)} of {len(rows)} ended"
    if len(shown) < len(rows):
        footer += f" ({len(rows) - len(shown)} not shown)"
    return table(_LIVE_COLUMNS, cells, footer=[footer], color=color, width=width)


def render_line(row: Row) -> str:
    """One line for a state change, e.g. ``ws/ex-1  Running  (poll 3, 4.2s)``."""
    return (
        f"{clean(format_key(row.key))}  {clean(row.label)}  "
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
    # The first message only (the ERROR column clips it): the rest is in the
    # event and the Blink UI.
    first = next(iter(details.values()), "")
    return clean(first).strip()


def _steps_text(execution: Execution | None) -> str:
    results = execution.step_results if execution else {}
    if not results:
        return "-"
    return f"{results.get('failed', 0)}/{sum(results.values())}"


def render_summary(
    events: Sequence[Event], *, color: bool = False, width: int | None = None
) -> str:
    """How each watch ended, one line each, and a totals line. No trailing newline.

    Columns: execution, playbook, state, API duration, failed/total steps (from
    ``step_results``), and the first ``error_details`` message, truncated; with
    ``width``, fitted to it (the error shortens first, then the playbook).
    """
    rows = [Row.from_event(e) for e in events]
    cells = [
        (
            format_key(e.key),
            r.playbook or "-",
            Styled(r.label, _tone(e.event, e.state)),
            format_duration_ms(e.execution.duration_ms if e.execution else None),
            _steps_text(e.execution),
            _error_text(e),
        )
        for e, r in zip(events, rows, strict=True)
    ]
    # Counted case-insensitively (the API may say "completed"), named as first seen.
    counts: dict[str, tuple[str, int]] = {}
    for r in rows:
        label = clip(clean(r.label), _STATE_MAX)
        shown, n = counts.get(label.casefold(), (label, 0))
        counts[label.casefold()] = (shown, n + 1)
    noun = "execution" if len(events) == 1 else "executions"
    totals = ", ".join(f"{n} {label}" for label, n in counts.values())
    footer = f"{len(events)} {noun}" + (f": {totals}" if totals else "")
    # Printed once, not redrawn: the totals wrap rather than lose their end.
    footers = textwrap.wrap(footer, width, subsequent_indent="  ") if width else [footer]
    return table(_SUMMARY_COLUMNS, cells, footer=footers, color=color, width=width)
