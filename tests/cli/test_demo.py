"""`blink-watcher demo` runs the whole product end to end and says where results went."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from watcher.cli.demo import _self_command, demo


def test_demo_reports_every_execution_and_exits_0() -> None:
    out = io.StringIO()
    assert demo(out=out) == 0
    text = out.getvalue()
    assert (
        "12 executions: 6 Completed, 2 Failed, 1 Cancelled, 1 Timeout, 1 invalid ID, 1 not found"
        in text
    )
    assert "webhook chatops   12 signed deliveries" in text
    assert "failed attempt(s) retried" in text
    assert "webhook siem      4 signed deliveries" in text
    # A run that paused for approval, told to the approvals channel once ...
    assert "webhook approvals 1 signed deliveries (runs paused for approval)" in text
    # ... and one that nobody listed, found by the discovery rule.
    assert "discovery         1 found by rule 'isolation'" in text
    assert "ws-demo/01HZZXAD1SC0VEREDBYRULE0A" in text  # in the summary with the others
    # Not a TTY: progress is one line per change, never cursor movement.
    assert "\x1b[" not in text
    # The one lower-case state is explained, not left as a puzzle.
    assert "answered 'completed' in lower case" in text
    assert "counts as Completed" in text


def test_hints_name_a_command_that_works_from_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = tmp_path / ".venv" / "bin" / "blink-watcher"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(program), "demo"])
    monkeypatch.setenv("PATH", "/nonexistent")
    assert _self_command() == ".venv/bin/blink-watcher"  # not on PATH: as after `make demo`
    monkeypatch.setenv("PATH", str(program.parent))
    program.chmod(0o755)
    assert _self_command() == "blink-watcher"  # on PATH: the short name works
