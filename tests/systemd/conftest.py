"""Fixtures for the real-systemd tests; the machinery is in harness.py."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.systemd.harness import (
    SIM_SCRIPTS,
    UNIT,
    SimulatedBlink,
    SystemdNamespace,
    WatcherService,
    ensure_daemon_venv,
    free_port,
    install_service,
    missing_prerequisite,
    run_simulator,
)


@pytest.fixture(scope="session")
def systemd_host() -> None:
    """Skip unless this machine can run systemd as PID 1 of private namespaces."""
    reason = missing_prerequisite()
    if reason:
        pytest.skip(f"real-systemd tests: {reason}")


@pytest.fixture(scope="session")
def daemon_venv(systemd_host: None) -> Path:
    """The checkout under test, installed where a real installation would be (/opt)."""
    return ensure_daemon_venv()


@pytest.fixture
def blink_api(tmp_path: Path) -> Iterator[SimulatedBlink]:
    scripts = tmp_path / "sim-scripts.json"
    scripts.write_text(json.dumps(SIM_SCRIPTS))
    with run_simulator(scripts) as blink:
        yield blink


@pytest.fixture
def systemd_ns(systemd_host: None) -> Iterator[SystemdNamespace]:
    """An empty, not yet booted namespace; the test writes units and config, then boots it."""
    scratch = Path(tempfile.mkdtemp(prefix="blink-watcher-systemd-"))
    try:
        namespace = SystemdNamespace(scratch)
        try:
            yield namespace
        finally:
            namespace.shutdown()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _booted_service(
    ns: SystemdNamespace,
    venv: Path,
    blink: SimulatedBlink,
    *,
    unit_file: str,
    unit: str,
    state_directory: str,
) -> WatcherService:
    install_service(ns, venv, unit_file, unit)
    service = WatcherService(
        ns,
        blink,
        executions=["ex-1", "ex-2"],
        server_port=free_port(),
        unit=unit,
        state_directory=state_directory,
    )
    service.write_config()
    ns.boot()
    return service


@pytest.fixture
def watcher_service(
    systemd_ns: SystemdNamespace, daemon_venv: Path, blink_api: SimulatedBlink
) -> WatcherService:
    """systemd booted with blink-watcher.service installed and configured; not started yet."""
    return _booted_service(
        systemd_ns,
        daemon_venv,
        blink_api,
        unit_file=UNIT,
        unit=UNIT,
        state_directory="blink-watcher",
    )


@pytest.fixture
def watcher_instance(
    systemd_ns: SystemdNamespace, daemon_venv: Path, blink_api: SimulatedBlink
) -> WatcherService:
    """The same with the template, as blink-watcher@demo.service."""
    return _booted_service(
        systemd_ns,
        daemon_venv,
        blink_api,
        unit_file="blink-watcher@.service",
        unit="blink-watcher@demo.service",
        state_directory="blink-watcher-demo",
    )
