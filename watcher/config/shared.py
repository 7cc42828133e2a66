"""The ``[state]`` keys for a shared PostgreSQL database: url, password, lease timings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from watcher.config.model import Secret
from watcher.config.table import Table, read_secret

LEASE_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class SharedState:
    """Where replicas share their state, and how long a claim lasts (docs/replicas.md)."""

    url: str  # never holds a password: that comes from password_file / password_env
    password: Secret | None = None
    password_source: str | None = None
    lease_s: float = LEASE_S
    renew_s: float = LEASE_S / 3
    claim_batch: int = 1000


def parse_shared(t: Table, config_dir: Path, resolve: bool) -> SharedState | None:
    """The shared-database keys of ``[state]``, or None for the SQLite file."""
    url = t.text("url")
    if url is None:
        for key in ("password_file", "password_env", "lease", "renew", "claim_batch"):
            if key in t.data:
                raise t.error(key, "applies only with state.url (a PostgreSQL database)")
        return None
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None or any(
            name.strip().lower() == "password" for name, _ in parse_qsl(parts.query)
        )
    except ValueError:
        raise t.error("url", "is not a valid URL") from None
    if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
        raise t.error("url", "must be postgresql://USER@HOST[:PORT]/DATABASE")
    if has_password:
        raise t.error("url", "must not contain a password; use state.password_file")
    password, source = read_secret(t, config_dir, resolve, None, prefix="password")
    lease = t.number("lease", LEASE_S, above=0)
    if lease < 1:
        raise t.error("lease", f"must be 1 second or more, got {lease}")
    renew = t.number("renew", lease / 3, above=0)
    if renew > lease / 2:
        raise t.error("renew", f"must be at most half the lease ({lease / 2}), got {renew}")
    batch = int(t.number("claim_batch", 1000, above=0))
    return SharedState(url, password, source, lease, renew, batch)
