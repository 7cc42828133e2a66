"""A real PostgreSQL server for the tests: the system's initdb and pg_ctl, a temp dir, loopback.

One server per test run (``pg_server``, session-scoped); each test gets a
fresh database of its own (``pg_url``). Where PostgreSQL is not installed the
tests that need it skip with the install command, except in CI (``CI`` set),
where they fail: a CI machine without PostgreSQL must not pass by skipping.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL = "apt-get install postgresql"


@dataclass(frozen=True)
class PgServer:
    """A running test cluster: where it listens and how to make a database on it."""

    host: str
    port: int
    user: str
    bindir: Path
    data: Path
    options: str

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]),
            capture_output=True,
            check=True,
        )

    def stop(self) -> None:
        """Stop the server (the database "restarting" or unreachable)."""
        self._ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        self._ctl("-o", self.options, "-l", str(self.data.parent / "log"), "-w", "start")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        psql = str(self.bindir / "psql")
        done = subprocess.run(
            [psql, "-XAt", "-v", "ON_ERROR_STOP=1", "-d", self.url(dbname), "-c", sql],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def create_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        self.psql(f"CREATE DATABASE {name}")
        return name


def bindir() -> Path | None:
    """Where initdb and pg_ctl are (``pg_config --bindir``), or None without PostgreSQL."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
    path = Path(out.stdout.strip())
    return path if (path / "initdb").exists() and (path / "pg_ctl").exists() else None


def unavailable(reason: str) -> None:
    """Skip with the install command; in CI, fail instead."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the PostgreSQL tests: {INSTALL})")
    pytest.skip(f"{reason}: {INSTALL}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_owner(argv: list[str]) -> list[str]:
    """initdb refuses root: run as the ``postgres`` system user then, directly otherwise."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@contextlib.contextmanager
def running_server() -> Iterator[PgServer]:
    """Start a throwaway cluster; stop it and remove its directory whatever happens."""
    bins = bindir()
    if bins is None:
        unavailable("PostgreSQL is not installed (no pg_config with initdb and pg_ctl)")
        raise AssertionError("unreachable")
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root needs the 'postgres' system user")
            raise AssertionError("unreachable") from None
    root = Path(tempfile.mkdtemp(prefix="bw-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = free_port()
    pg_ctl = str(bins / "pg_ctl")
    started = False
    try:
        subprocess.run(
            _as_owner([str(bins / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]),
            capture_output=True,
            check=True,
        )
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        log = str(root / "log")
        subprocess.run(
            _as_owner([pg_ctl, "-D", str(data), "-o", options, "-l", log, "-w", "start"]),
            capture_output=True,
            check=True,
        )
        started = True
        yield PgServer("127.0.0.1", port, "postgres", bins, data, options)
    finally:
        if started:
            subprocess.run(
                _as_owner([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]),
                capture_output=True,
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    with running_server() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty database on the session's server."""
    return pg_server.url(pg_server.create_database())
