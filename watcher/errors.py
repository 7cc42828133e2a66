"""The project's one exception tree.

    WatcherError
    ├── ConfigError            bad configuration: exit 78, one line naming file and key
    │   └── ProxyError         (proxy.py) an unusable HTTPS_PROXY/HTTP_PROXY value
    ├── StoreError             the state file cannot be opened, migrated or written
    ├── DeliveryError          a sink did not take an event (retryable or not)
    └── ApiError               a Blink API call did not give us an execution
        ├── TransientApiError  worth retrying: network, timeout, 429, 5xx, unreadable body
        ├── AuthError          401/403: the key is wrong or lacks rights; retrying soon won't help
        └── PermanentApiError  400 (invalid ID) or 404 (not found): an answer about the execution

aiohttp and JSON errors are translated into these in ``blink.py``; nothing above
that module needs to know aiohttp's exception types.
"""

from __future__ import annotations


class WatcherError(Exception):
    """Base of every error blink-watcher raises on purpose."""


class ConfigError(WatcherError):
    """The configuration is unusable. ``str()`` is the one line an operator sees."""

    def __init__(self, file: str, key: str | None, message: str) -> None:
        self.file = file
        self.key = key
        self.message = message
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {message}")


class StoreError(WatcherError):
    """The state store cannot be used."""


class LeaseLostError(StoreError):
    """Another replica took this watch over: this one must drop it, not commit its outcome."""


class NewerSchemaError(StoreError):
    """The shared database was upgraded by a newer release: restarting cannot help (exit 78)."""


class ApiError(WatcherError):
    """A poll of the Blink API did not produce an execution object."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientApiError(ApiError):
    """Retry later: the failure says nothing about the execution itself."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after_s = retry_after_s


class AuthError(ApiError):
    """401/403: the API key is missing, wrong or lacks access to the workspace."""


class PermanentApiError(ApiError):
    """400 or 404: the API answered definitively about this execution."""


class DeliveryError(WatcherError):
    """A sink refused or failed to take an event."""

    def __init__(
        self, message: str, *, retryable: bool, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


# Process exit codes, defined once (docs/contract.md, "Command line").
EX_OK = 0
EX_FAILURE = 1  # a runtime failure; also `watch` when a run did not end Completed
EX_USAGE = 2  # argparse's own code for a bad command line
EX_CONFIG = 78  # EX_CONFIG from sysexits.h; systemd's RestartPreventExitStatus=78 keys on it
EX_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
