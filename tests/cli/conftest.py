"""Fixtures for the terminal side's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _logging_put_back() -> Iterator[None]:
    # Commands configure process-wide logging, as a process's entry point should
    # (`demo` even logs to a file it closes when done). Later tests, wherever
    # they run, must not inherit a stream that is gone.
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
