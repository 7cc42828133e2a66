"""Process plumbing for the benchmark: pinned children, deadlines, rusage, RSS, sd_notify.

Every wait here has a deadline, and every child is registered with a
``Processes`` group that kills whatever is still running when the group
closes, so a failed measurement never leaves a server or daemon behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self


class BenchError(RuntimeError):
    """A measurement could not be taken (a child failed, a deadline passed, ...)."""


@dataclass(frozen=True, slots=True)
class Exited:
    """How a child ended: its exit code, its CPU (from ``os.wait4``) and wall time."""

    returncode: int
    user_s: float
    sys_s: float
    wall_s: float

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def cpus() -> tuple[int, int]:
    """(client CPU, server CPU): two different CPUs when this process may use two."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[0], allowed[1] if len(allowed) > 1 else allowed[0]


def pinned(cmd: Sequence[str], cpu: int) -> list[str]:
    """``cmd`` run on ``cpu`` only; taskset execs, so the child's PID is the command's."""
    taskset = shutil.which("taskset")
    if taskset is None:
        return list(cmd)  # Child.start falls back to sched_setaffinity
    return [taskset, "-c", str(cpu), *cmd]


class Child:
    """One child process, reaped with ``os.wait4`` so its rusage is its own."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        cpu: int,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdout: int | IO[bytes] | None = subprocess.DEVNULL,
        stderr_path: Path | None = None,
    ) -> None:
        self.name = name
        self.cmd = pinned(cmd, cpu)
        self.cpu = cpu
        self.env = env
        self.cwd = cwd
        self.stdout = stdout
        self.stderr_path = stderr_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.exited: Exited | None = None
        self._stderr: IO[bytes] | None = None
        self._out_buf = b""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Self:
        preexec: Callable[[], None] | None = None
        if shutil.which("taskset") is None:
            cpu = self.cpu

            def preexec() -> None:
                os.sched_setaffinity(0, {cpu})

        if self.stderr_path is not None:
            self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in reap
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd,
            env=None if self.env is None else dict(self.env),
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self.stdout,
            stderr=self._stderr if self._stderr is not None else subprocess.DEVNULL,
            preexec_fn=preexec,
        )
        return self

    def poll(self) -> Exited | None:
        """Reap the child if it has exited (non-blocking)."""
        if self.exited is not None or self.proc is None:
            return self.exited
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            return None
        self._reaped(status, usage)
        return self.exited

    def _reaped(self, status: int, usage: Any) -> None:
        assert self.proc is not None
        code = os.waitstatus_to_exitcode(status)
        # Tell Popen it is gone, or it would try to reap the PID again.
        self.proc.returncode = code
        self.exited = Exited(
            code, usage.ru_utime, usage.ru_stime, time.monotonic() - self.started_at
        )
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def wait(self, timeout_s: float) -> Exited:
        """Wait for the child to exit; kill it and raise ``BenchError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            exited = self.poll()
            if exited is not None:
                return exited
            if time.monotonic() >= deadline:
                self.kill()
                raise BenchError(f"{self.name} did not finish within {timeout_s:g}s")
            time.sleep(0.01)

    def expect_ok(self, timeout_s: float) -> Exited:
        """``wait``, and raise ``BenchError`` (with its stderr tail) unless it exited 0."""
        exited = self.wait(timeout_s)
        if exited.returncode != 0:
            raise BenchError(f"{self.name} exited {exited.returncode}{self.stderr_tail()}")
        return exited

    def alive(self) -> bool:
        return self.poll() is None

    def check_alive(self) -> bool:
        """True while the child runs; ``BenchError`` (with its stderr tail) once it exited.

        Meant for ``wait_until`` conditions: ``child.check_alive() and done()``
        fails at once when the child dies instead of waiting out the deadline.
        """
        exited = self.poll()
        if exited is not None:
            raise BenchError(
                f"{self.name} exited early with {exited.returncode}{self.stderr_tail()}"
            )
        return True

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.exited is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGTERM, a short grace, then SIGKILL; always reaps."""
        if self.proc is None or self.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            if self.poll() is not None:
                return
            time.sleep(0.02)
        self.signal(signal.SIGKILL)
        _, status, usage = os.wait4(self.proc.pid, 0)
        self._reaped(status, usage)

    def read_line(self, timeout_s: float) -> str:
        """One line from the child's stdout pipe, within ``timeout_s``."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._out_buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name} printed no line within {timeout_s:g}s")
            ready, _, _ = select.select([fd], [], [], min(left, 0.1))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.wait(5.0)
                    raise BenchError(f"{self.name} closed its output{self.stderr_tail()}")
                self._out_buf += chunk
        line, _, self._out_buf = self._out_buf.partition(b"\n")
        return line.decode()

    def stderr_tail(self, lines: int = 15) -> str:
        if self.stderr_path is None or not self.stderr_path.exists():
            return ""
        text = self.stderr_path.read_text(errors="replace").splitlines()[-lines:]
        return ("; stderr tail:\n    " + "\n    ".join(text)) if text else ""


class Processes:
    """Starts children and guarantees each is killed and reaped on exit."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self, child: Child) -> Child:
        self._children.append(child)
        return child.start()

    def close(self) -> None:
        for child in reversed(self._children):
            child.kill()
            if child.proc is not None and child.proc.stdout is not None:
                child.proc.stdout.close()
        self._children.clear()


def wait_until(
    what: str, check: Callable[[], bool], timeout_s: float, every_s: float = 0.05
) -> float:
    """Call ``check`` until it is true; the seconds it took. ``BenchError`` past the deadline."""
    started = time.monotonic()
    deadline = started + timeout_s
    while not check():
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(every_s)
    return time.monotonic() - started


# No proxy handler: a proxy set in the environment must never see loopback traffic.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str, timeout_s: float = 10.0) -> Any:
    """GET a loopback JSON endpoint."""
    with _opener.open(url, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def rss_bytes(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in bytes, from ``/proc/PID/status``."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` (all its threads) in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces and parentheses: split after the last ')'.
    rest = stat[stat.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])


def wait_idle(child: Child, quiet_s: float, timeout_s: float) -> None:
    """Wait until ``child`` has used no CPU for ``quiet_s`` (its work is done)."""
    deadline = time.monotonic() + timeout_s
    last = cpu_ticks(child.pid)
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < quiet_s:
        if time.monotonic() >= deadline:
            raise BenchError(f"{child.name} did not go idle within {timeout_s:g}s")
        child.check_alive()
        time.sleep(0.1)
        now = cpu_ticks(child.pid)
        if now != last:
            last, quiet_since = now, time.monotonic()


class NotifySocket:
    """A ``NOTIFY_SOCKET`` to receive a child's sd_notify datagrams."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(str(path))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def wait_for(self, field: bytes, child: Child, timeout_s: float) -> float:
        """Monotonic time at which a datagram containing ``field`` (e.g. ``READY=1``) came."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{child.name} sent no {field.decode()} within {timeout_s:g}s")
            ready, _, _ = select.select([self.sock], [], [], min(left, 0.1))
            if ready:
                data = self.sock.recv(65536)
                if field in data.split(b"\n"):
                    return time.monotonic()
            else:
                child.check_alive()

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import aiohttp

    return {
        "cpu": model,
        "cores": f"{os.cpu_count()} (usable: {len(os.sched_getaffinity(0))})",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "aiohttp": aiohttp.__version__,
        "os": f"{platform.system()} {platform.release()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "pinning": "taskset" if shutil.which("taskset") else "sched_setaffinity",
    }


def python_cmd(*args: str) -> list[str]:
    """This interpreter (the project's venv under ``make bench``) with ``args``."""
    return [sys.executable, *args]
