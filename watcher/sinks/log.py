"""The log sink: one event JSON object per line on standard output or a file, or in the journal."""

from __future__ import annotations

import sys
from typing import BinaryIO

import structlog

from watcher.config import LogSinkConfig
from watcher.errors import DeliveryError
from watcher.journal import JournalSender, event_fields, wants_journal

log = structlog.get_logger("watcher.sinks.log")


class LogSink:
    """Writes each event as one line; nothing else ever goes to that stream.

    On standard output connected to the journal (or with ``[logging] journal
    = "on"``), each event is a native journal entry whose ``MESSAGE`` is the
    line, with its priority and fields. An event the journal does not accept
    is written to standard output instead: delivered means one of them took it.
    """

    def __init__(self, config: LogSinkConfig) -> None:
        self.config = config
        self._file: BinaryIO | None = None
        self._journal: JournalSender | None = None
        if config.path is None and wants_journal(config.journal, sys.stdout):
            self._journal = JournalSender()
        self._fell_back = False

    @property
    def name(self) -> str:
        return self.config.name

    def _stream(self) -> BinaryIO:
        if self.config.path is None:
            return sys.stdout.buffer
        if self._file is None:
            self.config.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.config.path, "ab")  # noqa: SIM115 - kept open across events
        return self._file

    async def deliver(self, event_id: str, body: bytes) -> None:
        # A line is small and the write goes to a pipe, the journal or a local
        # file: doing it inline is cheaper than a thread hop, and flushing per
        # line means `tail -f | jq` sees each result at once.
        if self._journal is not None and self._send_to_journal(event_id, body):
            return
        try:
            stream = self._stream()
            stream.write(body + b"\n")
            stream.flush()
        except OSError as exc:
            raise DeliveryError(f"cannot write: {exc.strerror or exc}", retryable=True) from None

    def _send_to_journal(self, event_id: str, body: bytes) -> bool:
        assert self._journal is not None
        try:
            # Returns once the entry is queued on journald's socket: it is the journal's now.
            self._journal.send(event_fields(body))
            return True
        except OSError as exc:
            if not self._fell_back:
                self._fell_back = True
                log.warning(
                    "journal.unavailable",
                    what="events",
                    sink=self.name,
                    event_id=event_id,
                    reason=exc.strerror or str(exc),
                    fallback="standard output",
                )
            return False

    async def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
        if self._file is not None:
            file, self._file = self._file, None
            file.close()
