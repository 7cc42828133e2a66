"""Rows and events shared by the tests of the progress view (rows and the live table)."""

from __future__ import annotations

import re

from watcher.cli.rows import Row
from watcher.models import Event, Execution

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

LIVE = Row(("ws-demo", "ex-1"), "Running", 3, 4.2, "Enrich phishing IOC")
NOT_ASKED = Row(("ws-demo", "ex-2"))
DONE = Row(("ws-ops", "ex-3"), "Completed", 5, 65.0, "Rotate IAM keys", "execution.finished")
MISSING = Row(("ws-demo", "ex-4"), None, 3, 1.0, None, "execution.not_found")


def failed_event() -> Event:
    execution = Execution(
        state="Failed",
        duration_ms=4200,
        step_results={"completed": 3, "failed": 1, "skipped": 3},
        error_details={
            "Contain host": "CrowdStrike API returned 403: API client lacks the Hosts:Write scope",
            "Notify": "second message, not shown",
        },
        playbook_name="Isolate compromised host",
    )
    return Event("execution.finished", ("ws", "ex-1"), "Failed", execution, 100.0, 4)


def events() -> list[Event]:
    ok = Execution(
        duration_ms=512, step_results={"completed": 5, "failed": 0}, display_name="Restart pod #7"
    )
    return [
        failed_event(),
        Event("execution.not_found", ("ws", "ex-2"), None, None, 100.0, 3),
        Event("execution.finished", ("ws", "ex-3"), "completed", ok, 100.0, 3),
        Event("execution.finished", ("ws", "ex-4"), "Completed", Execution(), 100.0, 1),
    ]
