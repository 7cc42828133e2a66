"""The log sink: one event JSON object per line on standard output or a file."""

from __future__ import annotations

import sys
from typing import BinaryIO

from watcher.config import LogSinkConfig
from watcher.errors import DeliveryError


class LogSink:
    """Writes each event as one line; nothing else ever goes to that stream."""

    def __init__(self, config: LogSinkConfig) -> None:
        self.config = config
        self._file: BinaryIO | None = None

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
        try:
            stream = self._stream()
            stream.write(body + b"\n")
            stream.flush()
        except OSError as exc:
            raise DeliveryError(f"cannot write: {exc.strerror or exc}", retryable=True) from None

    async def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()
