"""What every test shares: an environment without a developer's own proxy settings."""

from __future__ import annotations

import pytest

# A developer behind a corporate proxy has these set; the clients honour them
# (docs/network.md), and the loopback simulator must not be reached through it.
# tests/test_proxy.py and tests/integration/test_network.py set them on purpose.
PROXY_VARIABLES = tuple(
    name
    for base in ("http_proxy", "https_proxy", "no_proxy", "all_proxy")
    for name in (base, base.upper())
)


@pytest.fixture(autouse=True)
def no_ambient_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
