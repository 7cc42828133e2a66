"""`blink-watcher demo` runs the whole product end to end and says where results went."""

from __future__ import annotations

import io

from watcher.cli.demo import demo


def test_demo_reports_every_execution_and_exits_0() -> None:
    out = io.StringIO()
    assert demo(out=out) == 0
    text = out.getvalue()
    assert (
        "11 executions: 6 Completed, 1 Failed, 1 Cancelled, 1 Timeout, 1 invalid ID, 1 not found"
        in text
    )
    assert "webhook chatops 11 signed deliveries" in text
    assert "failed attempt(s) retried" in text
    assert "webhook siem    3 signed deliveries" in text
    # Not a TTY: progress is one line per change, never cursor movement.
    assert "\x1b[" not in text
