"""Opening the SQLite state file: created private, WAL, ``synchronous=FULL``, schema current."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from watcher.errors import StoreError
from watcher.store.schema import migrate


def _create_private(path: Path) -> None:
    """Create the file 0600 whatever the umask: it holds execution results."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def connect(path: Path) -> sqlite3.Connection:
    """The writer thread's connection to ``path``, created and migrated if need be."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _create_private(path)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
    except OSError as exc:
        raise StoreError(f"cannot create state file {path}: {exc.strerror or exc}") from None
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open state file {path}: {exc}") from None
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        # Also finds out now, not on the first write, that the file is read-only.
        migrate(conn, path)
        conn.execute("SELECT count(*) FROM deliveries").fetchone()
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"state file {path} is unusable: {exc}") from None
    except StoreError:
        conn.close()
        raise
    return conn
