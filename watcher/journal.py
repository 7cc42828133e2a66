"""The systemd journal: which fields each line carries, and sending entries in its native protocol.

Under systemd, standard output and standard error are streams into the
journal, which files every line at one priority with no fields of its own.
Sent as native entries instead, each diagnostic and event keeps its
``PRIORITY`` and carries ``EXECUTION_ID``, ``WORKSPACE_ID``, ``STATE`` and
``BLINK_WATCHER_EVENT``, so ``journalctl -p warning`` and ``journalctl
EXECUTION_ID=...`` work, and ``MESSAGE`` stays the JSON line the stream would
have carried (``journalctl -o cat | jq`` reads the same objects).

The protocol (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/): one datagram per
entry on ``/run/systemd/journal/socket``, fields as ``NAME=value\\n``, or
``NAME\\n`` + 64-bit little-endian length + value + ``\\n`` when the value
holds a newline. An entry too big for a datagram goes in a sealed memfd whose
descriptor is the datagram's only content. It is small and stable enough to
speak here rather than depend on a library for it.
"""

from __future__ import annotations

import array
import errno
import fcntl
import json
import os
import socket
import struct
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeAlias

from watcher.config.model import JournalMode

# Read at each send, not bound at import: the tests point it at a fake journald.
SOCKET_PATH = "/run/systemd/journal/socket"
IDENTIFIER: Final = "blink-watcher"

# syslog(3) priorities, as journalctl -p names them.
CRITICAL: Final = 2
ERROR: Final = 3
WARNING: Final = 4
INFO: Final = 6
DEBUG: Final = 7
PRIORITY_BY_LEVEL: Final = {
    "critical": CRITICAL,
    "error": ERROR,
    "warning": WARNING,
    "info": INFO,
    "debug": DEBUG,
}

Field: TypeAlias = tuple[str, str | bytes]

_SIZE: Final = struct.Struct("<Q")
_SEALS: Final = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


# --- is this stream the journal? ------------------------------------------------------------


def is_journal_stream(stream: Any, journal_stream: str | None = None) -> bool:
    """True when ``stream`` is the one systemd connected to the journal.

    systemd sets ``$JOURNAL_STREAM`` to ``DEVICE:INODE`` of that stream; a
    shell redirect or a pipe to ``jq`` inherits the variable but not the
    stream, hence the comparison rather than the mere presence.
    """
    value = os.environ.get("JOURNAL_STREAM") if journal_stream is None else journal_stream
    device, sep, inode = (value or "").partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return st.st_dev == int(device) and st.st_ino == int(inode)
    except (AttributeError, OSError, ValueError):  # no descriptor (StringIO), closed, garbage
        return False


def wants_journal(mode: JournalMode, stream: Any) -> bool:
    """Whether lines meant for ``stream`` go to the journal natively under this mode."""
    return mode == "on" or (mode == "auto" and is_journal_stream(stream))


# --- which fields ----------------------------------------------------------------------------


def _context(fields: list[Field], values: Mapping[str, Any]) -> list[Field]:
    for name, key in (("EXECUTION_ID", "execution_id"), ("WORKSPACE_ID", "workspace_id")):
        value = values.get(key)
        if isinstance(value, str) and value:
            fields.append((name, value))
    state = values.get("state")
    if isinstance(state, str) and state:
        fields.append(("STATE", state))
    return fields


def diagnostic_fields(event_dict: Mapping[str, Any]) -> list[Field]:
    """The journal fields of one structlog diagnostic (all but ``MESSAGE``)."""
    level = event_dict.get("level")
    priority = PRIORITY_BY_LEVEL.get(level if isinstance(level, str) else "", INFO)
    fields: list[Field] = [("PRIORITY", str(priority)), ("SYSLOG_IDENTIFIER", IDENTIFIER)]
    name = event_dict.get("event")
    if isinstance(name, str) and name:
        fields.append(("BLINK_WATCHER_EVENT", name))
    return _context(fields, event_dict)


def event_priority(event: object, state: object) -> int:
    """Info for a run that completed and for a state change; warning for every other ending.

    A failed, cancelled or timed-out run, an ID that does not exist and a
    watch that gave up all need someone to look: ``-p warning`` shows them.
    """
    if event == "execution.state_changed":
        return INFO
    if event == "execution.finished" and isinstance(state, str) and state.casefold() == "completed":
        return INFO
    return WARNING


def event_fields(body: bytes) -> list[Field]:
    """The journal entry for one log-sink event: ``MESSAGE`` is ``body`` itself."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    values: Mapping[str, Any] = parsed if isinstance(parsed, dict) else {}
    event = values.get("event")
    fields: list[Field] = [
        ("MESSAGE", body),
        ("PRIORITY", str(event_priority(event, values.get("state")))),
        ("SYSLOG_IDENTIFIER", IDENTIFIER),
    ]
    if isinstance(event, str) and event:
        fields.append(("BLINK_WATCHER_EVENT", event))
    return _context(fields, values)


# --- sending ---------------------------------------------------------------------------------


def encode(fields: Iterable[Field]) -> bytes:
    """One entry in the native protocol's serialization."""
    out = bytearray()
    for name, value in fields:
        # A lone surrogate cannot be UTF-8: written as its escape, as the JSON line has it.
        data = value.encode("utf-8", "backslashreplace") if isinstance(value, str) else value
        key = name.encode("ascii")
        if b"\n" in data:
            out += key + b"\n" + _SIZE.pack(len(data)) + data + b"\n"
        else:
            out += key + b"=" + data + b"\n"
    return bytes(out)


class JournalSender:
    """Sends entries to journald; ``send`` raises ``OSError`` when the journal did not take one."""

    def __init__(self, path: str | None = None) -> None:
        self._path = path
        self._socket: socket.socket | None = None
        # The store's writer thread logs too: one socket, however many threads.
        self._lock = threading.Lock()

    @property
    def path(self) -> str:
        return self._path or SOCKET_PATH

    def send(self, fields: Iterable[Field]) -> None:
        data = encode(fields)
        with self._lock:
            if self._socket is None:
                # Unbound and unconnected, addressed on every send (as libsystemd
                # does): a journald restarted meanwhile is reached at the same path.
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            sock = self._socket
        try:
            # One datagram is one entry: concurrent sends never interleave.
            sock.sendto(data, self.path)
        except OSError as exc:
            # Too big for one datagram: EMSGSIZE past the socket's send buffer
            # (about 200 KB by default), ENOBUFS when the kernel has no room for it.
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_in_memfd(sock, data)

    def _send_in_memfd(self, sock: socket.socket, data: bytes) -> None:
        fd = os.memfd_create("blink-watcher-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            # journald only reads a memfd nobody can change any more.
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            rights = array.array("i", [fd])
            sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)], 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()
