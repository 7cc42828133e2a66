"""systemd-journald inside the test's namespace, with its own storage, and reading what it kept.

The distribution's journald units are copied into the namespace's unit
directory with what would touch the host taken out: no ``/dev/log`` symlink
(``/dev`` is the host's), no audit socket, no kernel log, journald's own log
in a file. Storage is persistent, so the journal lands in the scratch
directory bound over ``/var/log`` and can be read from outside with
``journalctl -D``.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.systemd.harness import BOOT_TARGET, SystemdNamespace
from tests.waiting import wait_for

DISTRIBUTION_UNITS = Path("/lib/systemd/system")
JOURNALD_UNITS = (
    "systemd-journald.service",
    "systemd-journald.socket",
    "systemd-journal-flush.service",
)
JOURNALD_CONF = """\
[Journal]
Storage=persistent
ReadKMsg=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
"""
JOURNALD_DROP_IN = """\
[Service]
# Not the host's /dev/kmsg: journald's own messages go to a file.
Environment=SYSTEMD_LOG_TARGET=console
StandardOutput=append:/var/log/journald-test/journald.log
StandardError=inherit
"""


def journald_missing() -> str | None:
    """Why journald cannot run in the namespace here, or None."""
    for name in JOURNALD_UNITS:
        if not (DISTRIBUTION_UNITS / name).exists():
            return f"{DISTRIBUTION_UNITS / name} is not installed"
    return None


def install_journald(ns: SystemdNamespace) -> None:
    """Make the namespace's boot start journald; call before ``ns.boot()``."""
    for name in JOURNALD_UNITS:
        text = (DISTRIBUTION_UNITS / name).read_text()
        if name == "systemd-journald.service":
            # The /dev/log and audit sockets are left out (they would reach the host).
            text = re.sub(r"(?m)^Sockets=.*$", "Sockets=systemd-journald.socket", text)
        (ns.units / name).write_text(text)
    drop_in = ns.units / "systemd-journald.service.d"
    drop_in.mkdir()
    (drop_in / "test.conf").write_text(JOURNALD_DROP_IN)
    (ns.var_log / "journald-test").mkdir()
    boot = ns.units / f"{BOOT_TARGET}.d"
    boot.mkdir(exist_ok=True)
    (boot / "journald.conf").write_text(
        "[Unit]\nWants=systemd-journald.socket systemd-journald.service "
        "systemd-journal-flush.service\n"
    )
    conf = ns.scratch / "run" / "systemd" / "journald.conf.d"
    conf.mkdir(parents=True)
    (conf / "test.conf").write_text(JOURNALD_CONF)


def log_to_journal(ns: SystemdNamespace) -> None:
    """PID 1 logs to the journal, as on a real host, once journald writes to /var/log."""
    wait_for(
        lambda: any((ns.var_log / "journal").glob("*/system.journal")),
        timeout_s=30,
        what="journald to write its journal under /var/log/journal",
        diagnostics=ns.diagnostics,
    )
    ns.systemctl("log-target", "journal")


def entries(ns: SystemdNamespace, *matches: str) -> list[dict[str, object]]:
    """Every entry matching ``matches``, read from outside with ``journalctl -D``."""
    result = subprocess.run(
        # --all: fields over 4 KB are shown, not replaced by null.
        ["journalctl", "-D", str(ns.var_log / "journal"), "-o", "json", "--all", *matches],
        capture_output=True,
        check=False,
        timeout=60,
    )
    if result.returncode not in (0, 1):  # 1: nothing matched on older journalctl
        raise AssertionError(f"journalctl -D failed: {result.stderr.decode(errors='replace')}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def text_of(value: object) -> str:
    """A field of ``journalctl -o json``: a string, or a list of bytes when not valid text."""
    if isinstance(value, list):
        return bytes(value).decode()
    return str(value)


class FollowedCommand:
    """A shell command run in the namespace with a pty as its standard output, as in a terminal.

    For ``journalctl -f ... | jq``: jq writes each line at once to a terminal,
    where into a pipe it would keep them until it exits.
    """

    def __init__(self, ns: SystemdNamespace, command: str) -> None:
        assert ns.pid1 is not None
        self._master, slave = os.openpty()
        self._buffer = b""
        try:
            self._process = subprocess.Popen(
                ["nsenter", "-t", str(ns.pid1), "-m", "-p", "sh", "-c", command],
                stdin=subprocess.DEVNULL,
                stdout=slave,
                stderr=subprocess.PIPE,
                # Its own process group: stopping it stops journalctl and jq too.
                start_new_session=True,
            )
        finally:
            os.close(slave)

    def lines(self) -> Iterator[str]:
        """Complete lines so far, without blocking."""
        while select.select([self._master], [], [], 0)[0]:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: the command ended
                break
            if not chunk:
                break
            self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\n")
        for line in complete:
            yield line.rstrip(b"\r").decode(errors="replace")

    def stop(self) -> str:
        """End the command (its whole process group); what it wrote on standard error."""
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
        try:
            _, err = self._process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            _, err = self._process.communicate()
        os.close(self._master)
        return err.decode(errors="replace")


def wait_for_lines(
    command: FollowedCommand, count: int, predicate: Callable[[str], bool], *, timeout_s: float = 30
) -> list[str]:
    """Collect the command's lines until ``count`` of them satisfy ``predicate``."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while sum(1 for line in seen if predicate(line)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {count} lines; got:\n" + "\n".join(seen))
        seen += list(command.lines())
        time.sleep(0.1)
    return seen
