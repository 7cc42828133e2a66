"""The state store: the interface the daemon uses (``base``) and its SQLite backend.

``Store`` is the SQLite backend, the default; ``open_readonly`` and
``query_deliveries`` are the read side for ``status`` and ``deliveries``.
"""

from watcher.store.base import StateStore, WatchTuple
from watcher.store.readonly import open_readonly, query_deliveries, reported_total, unreported
from watcher.store.schema import SCHEMA_VERSION
from watcher.store.sqlite import SQLiteStore

Store = SQLiteStore

__all__ = [
    "SCHEMA_VERSION",
    "SQLiteStore",
    "StateStore",
    "Store",
    "WatchTuple",
    "open_readonly",
    "query_deliveries",
    "reported_total",
    "unreported",
]
