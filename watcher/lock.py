"""One daemon per state file: an OS lock beside it, held for the daemon's life.

Two daemons on one state file would both poll and both deliver every event.
The lock is ``flock`` on ``<state file>.lock``: the kernel releases it when the
process dies, ``kill -9`` included, so a crash never leaves a stale lock. The
holder writes its PID into the file, so the refusal can name it. Readers
(``status``, ``deliveries``) take no lock: they open the state read-only.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Self

from watcher.errors import StoreError


class StateInUseError(StoreError):
    """Another process holds the state file's lock."""


class StateLock:
    """Exclusive lock for one state file. A context manager; the state file is never opened."""

    def __init__(self, state_path: Path) -> None:
        self.state_path = state_path
        self.path = state_path.with_name(state_path.name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> Self:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot create lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise StateInUseError(
                f"state file {self.state_path} is in use by {who} (another blink-watcher "
                "run?); stop it, or give this daemon its own [state] path"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # releases the lock; the file stays, harmless and reused


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def holder(state_path: Path) -> int | None:
    """The PID of the daemon holding ``state_path``'s lock, or None when none runs.

    For readers: probes with a shared, non-blocking lock and lets go at once.
    """
    path = state_path.with_name(state_path.name + ".lock")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or 0
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
