"""Diagnostics setup (structlog): JSON lines on standard error for machines, console for people.

Standard output belongs to the log sink alone; every diagnostic goes to
standard error with an ``event`` name. A last processor scrubs every known
secret out of every string value, so a library message that happens to quote a
key cannot leak it. Where standard error is the journal (or ``[logging]
journal = "on"``), each line is sent as a native journal entry instead: the
same text as ``MESSAGE``, plus a priority and fields (``watcher/journal.py``).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog

from watcher.config.model import JournalMode
from watcher.journal import Field, JournalSender, diagnostic_fields, wants_journal
from watcher.redact import register_secret, scrub

__all__ = ["configure", "register_secret", "scrub_secrets"]

# One for the process: a reload reconfigures structlog, the socket stays.
_SENDER = JournalSender()


def scrub_secrets(
    _logger: object, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = scrub(value)
    return event_dict


class _JournalRenderer:
    """Renders the line as before and hands it on with the journal fields of its event."""

    def __init__(self, render: Callable[..., Any]) -> None:
        self._render = render

    def __call__(
        self, logger: object, name: str, event_dict: MutableMapping[str, Any]
    ) -> tuple[tuple[()], dict[str, Any]]:
        # Before rendering: the console renderer pops the keys it prints.
        fields = diagnostic_fields(event_dict)
        return (), {"message": self._render(logger, name, event_dict), "fields": fields}


class JournalLogger:
    """structlog's final logger for the journal: one native entry per diagnostic.

    If the journal refuses an entry (its socket missing, or the sandbox
    forbidding it), the line goes to the stream as it would without the
    journal, and the first such fallback says so.
    """

    def __init__(self, stream: TextIO, sender: JournalSender) -> None:
        self._stream = stream
        self._sender = sender
        self._lock = threading.Lock()
        self._fell_back = False

    def msg(self, message: str, fields: list[Field]) -> None:
        try:
            self._sender.send([("MESSAGE", message), *fields])
            return
        except OSError as exc:
            first, self._fell_back = not self._fell_back, True
            if first:
                # Goes through this logger again, and to the stream like this line.
                structlog.get_logger("watcher.logs").warning(
                    "journal.unavailable",
                    what="diagnostics",
                    reason=exc.strerror or str(exc),
                    fallback="standard error",
                )
        with self._lock:
            self._stream.write(message + "\n")
            self._stream.flush()

    debug = info = warning = warn = error = err = critical = fatal = exception = log = msg


def configure(
    level: str = "info",
    fmt: str = "json",
    stream: TextIO | None = None,
    *,
    journal: JournalMode = "auto",
) -> None:
    """Set up structlog for the whole process (idempotent).

    ``journal``: send native journal entries when ``stream`` (standard error
    by default) is the journal ("auto"), always ("on"), or never ("off").
    """
    out = stream or sys.stderr
    renderer: structlog.typing.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    factory: Callable[..., Any]
    if wants_journal(journal, out):
        renderer = _JournalRenderer(renderer)
        journal_logger = JournalLogger(out, _SENDER)
        factory = lambda *_args: journal_logger  # noqa: E731 - one logger, one fallback notice
    else:
        factory = structlog.PrintLoggerFactory(file=out)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrub_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
