"""A stand-in for journald's native socket: receives datagrams (and memfds) and decodes entries."""

from __future__ import annotations

import array
import fcntl
import os
import shutil
import socket
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import watcher.journal

ALL_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def decode(data: bytes) -> dict[str, bytes]:
    """One entry in the native protocol's serialization, read independently of the sender."""
    fields: dict[str, bytes] = {}
    at = 0
    while at < len(data):
        end = data.index(b"\n", at)
        line = data[at:end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            at = end + 1
        else:
            name = line
            (size,) = struct.unpack("<Q", data[end + 1 : end + 9])
            value = data[end + 9 : end + 9 + size]
            assert data[end + 9 + size : end + 10 + size] == b"\n", "value not ended by a newline"
            at = end + 10 + size
        fields[name.decode("ascii")] = value
    return fields


@dataclass
class Received:
    fields: dict[str, bytes]
    via_memfd: bool
    seals: int | None = None

    def text(self, name: str) -> str:
        return self.fields[name].decode()


class FakeJournal:
    """Bound where the sender looks; ``entries()`` takes what arrived so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self._socket.setblocking(False)

    def entries(self) -> list[Received]:
        received = []
        while True:
            try:
                data, ancillary, _, _ = self._socket.recvmsg(1 << 20, socket.CMSG_SPACE(4))
            except BlockingIOError:
                return received
            fds = array.array("i")
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            if not fds:
                received.append(Received(decode(data), via_memfd=False))
                continue
            assert data == b"", "a datagram carrying a memfd must have no payload"
            assert len(fds) == 1, "exactly one descriptor per datagram"
            fd = fds[0]
            try:
                seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
                with os.fdopen(os.dup(fd), "rb") as memfd:
                    memfd.seek(0)
                    content = memfd.read()
            finally:
                os.close(fd)
            received.append(Received(decode(content), via_memfd=True, seals=seals))

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def fake_journal(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeJournal]:
    """journald's socket, faked and pointed at for every sender in the process."""
    # Not in tmp_path: a socket path must fit in 108 bytes, a long test name does not.
    directory = tempfile.mkdtemp(prefix="fakejournal-")
    journal = FakeJournal(Path(directory) / "socket")
    monkeypatch.setattr(watcher.journal, "SOCKET_PATH", str(journal.path))
    try:
        yield journal
    finally:
        journal.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def no_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The journal's socket path with nothing there."""
    path = tmp_path / "missing" / "journal.socket"
    monkeypatch.setattr(watcher.journal, "SOCKET_PATH", str(path))
    return path
