"""A small HTTP forward proxy on 127.0.0.1 that records what passes through it.

It tunnels ``CONNECT host:port`` and forwards absolute-form requests
(``GET http://host:port/path``), one request per forwarded connection. What it
saw in clear (every request head, the bytes of forwarded requests) is kept,
so a test can check that a secret never reached it unencrypted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit


@dataclass
class ForwardProxy:
    """Use as an async context manager; ``url`` is what HTTP(S)_PROXY should say."""

    # (user, password) the proxy demands as Basic Proxy-Authorization, or None.
    credentials: tuple[str, str] | None = None
    connects: list[str] = field(default_factory=list)  # CONNECT targets, host:port
    forwards: list[str] = field(default_factory=list)  # absolute-form request targets
    refused: int = 0  # requests answered 407
    clear: bytearray = field(default_factory=bytearray)  # every byte seen unencrypted
    tunnelled_bytes: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def __aenter__(self) -> ForwardProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, user: str | None = None, password: str | None = None) -> str:
        login = f"{user}:{password}@" if user is not None else ""
        return f"http://{login}127.0.0.1:{self.port}"

    @property
    def requests(self) -> int:
        """Requests that passed through: tunnels opened plus requests forwarded."""
        return len(self.connects) + len(self.forwards)

    def forwarded_to(self, path_part: str) -> int:
        return sum(1 for target in self.forwards if path_part in urlsplit(target).path)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)  # type: ignore[arg-type]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.clear += head
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers = [tuple(line.split(":", 1)) for line in lines if ":" in line]
        if self.credentials is not None:
            expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
            given = [v.strip() for k, v in headers if k.strip().lower() == "proxy-authorization"]
            if given != [expected]:
                self.refused += 1
                writer.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\n'
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                await writer.drain()
                return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
            self.connects.append(target)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await self._splice(reader, writer, up_reader, up_writer, clear=False)
            return
        url = urlsplit(target)
        assert url.scheme == "http", target
        assert url.hostname, target
        assert url.port, target
        up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port)
        self.forwards.append(target)
        origin_form = url.path + (f"?{url.query}" if url.query else "")
        kept = [
            f"{k}:{v}"
            for k, v in headers
            if k.strip().lower() not in ("proxy-authorization", "proxy-connection", "connection")
        ]
        # One request per connection keeps this proxy simple: the client sees
        # "Connection: close" in the answer and opens a new one for the next.
        rewritten = "\r\n".join([f"{method} {origin_form} HTTP/1.1", *kept, "Connection: close"])
        up_writer.write(rewritten.encode("latin-1") + b"\r\n\r\n")
        await self._splice(reader, writer, up_reader, up_writer, clear=True)

    async def _splice(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        *,
        clear: bool,
    ) -> None:
        self._writers.add(up_writer)

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, outbound: bool
        ) -> None:
            try:
                while data := await src.read(65536):
                    if outbound and clear:
                        self.clear += data
                    self.tunnelled_bytes += 0 if clear else len(data)
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        finally:
            up_writer.close()
            self._writers.discard(up_writer)


@contextlib.contextmanager
def dead_proxy_port() -> Iterator[int]:
    """A loopback port that refuses connections, held so nothing else takes it meanwhile.

    A socket bound but never listening answers every SYN with a reset: the
    "proxy is down" case, without a timeout to wait out.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
