"""The real daemon against the simulator: one correct event per execution, whatever the API does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.harness import API_KEY, write_config
from watcher.sim import Simulator

WS = "ws-main"
OTHER_WS = "ws-ops"


def script(execution_id: str, *steps: str, ws: str = WS, **fields: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"workspace_id": ws, "execution_id": execution_id, "steps": list(steps)}
    if fields:
        s["fields"] = fields
    return s


# Every fault docs/contract.md ("Retries") names, on the way to a terminal state.
SCRIPTS = [
    script("ok-quick", "Running", "Completed"),
    script("ok-slow", "Pending", "Running", "Running", "Running", "Completed"),
    script(
        "failed",
        "Running",
        "Failed",
        error_details={"Create Jira ticket": "HTTP 401 from jira.example.com"},
    ),
    script("cancelled", "Running", "Cancelled"),
    script("lowercase", "running", "completed"),
    script("ui-only", "ui=Running", "ui=Timeout"),
    script("state-only", "state=Running", "state=Skipped"),
    script("paused", "Running", "Paused", "Paused", "Running", "Completed"),
    script("unknown-state", "Weird-New-State", "Completed"),
    script("other-ws", "Running", "Completed", ws=OTHER_WS),
    script("invalid", "!400"),
    script("flaky-5xx", "Running", "!500", "!502", "!503", "Running", "Completed"),
    script("rate-limited", "Running", "!429:0.05", "Completed"),
    script("reset", "!reset", "Running", "!reset", "Completed"),
    script("slow", "Running", "!slow:3", "Completed"),
    script("html", "!html", "Running", "Completed"),
    script("truncated", "Running", "!truncated", "Completed"),
    script("not-json", "!notjson", "Running", "Completed"),
    script("non-utf8", "!nonutf8", "Running", "Completed"),
    script("wrong-types", "!wrongtypes", "Running", "Completed"),
    script("huge", "!huge", "Running", "Completed"),
    script("empty-500", "!empty", "Completed"),
    script("auth-blip", "!401", "Running", "Completed"),
    script("forbidden-blip", "!403", "Completed"),
    script("flapping-404", "!404", "Running", "Completed"),
]
EXPECTED_STATE = {
    "ok-quick": "Completed",
    "ok-slow": "Completed",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "lowercase": "completed",
    "ui-only": "Timeout",
    "state-only": "Skipped",
    "paused": "Completed",
    "unknown-state": "Completed",
    "other-ws": "Completed",
    "invalid": None,
    "flaky-5xx": "Completed",
    "rate-limited": "Completed",
    "reset": "Completed",
    "slow": "Completed",
    "html": "Completed",
    "truncated": "Completed",
    "not-json": "Completed",
    "non-utf8": "Completed",
    "wrong-types": "Completed",
    "huge": "Completed",
    "empty-500": "Completed",
    "auth-blip": "Completed",
    "forbidden-blip": "Completed",
    "flapping-404": "Completed",
    "missing": None,
}
EVENT_FIELDS = {
    "event", "event_id", "execution_id", "workspace_id", "state", "duration", "error_details",
    "step_results", "playbook_id", "playbook_name", "display_name", "execution_number",
    "started_at", "finished_at", "observed_at", "net_runtime_ms", "polls",
    "discovered_by",
}  # fmt: skip


def _ids() -> list[str]:
    ids = [
        s["execution_id"] if s["workspace_id"] == WS else f"{OTHER_WS}/{s['execution_id']}"
        for s in SCRIPTS
    ]
    return [*ids, "missing"]


async def test_every_execution_gets_exactly_one_correct_event(
    tmp_path: Path, run_daemon: Any
) -> None:
    async with Simulator(api_key=API_KEY, scripts=SCRIPTS) as sim:
        # A short request timeout turns "!slow:3" into a client timeout, retried.
        config = write_config(
            tmp_path / "config.toml",
            sim,
            _ids(),
            blink={"request_timeout": 0.5, "retry_attempts": 3, "max_response_bytes": 1048576},
            poll={"max_interval": 0.05, "not_found_grace": 3},
        )
        run = await run_daemon(config, timeout=60)

        assert run.returncode == 0, run.stderr[-3000:]
        events = run.by_execution()
        assert len(run.events) == len(events) == len(EXPECTED_STATE)
        for name, state in EXPECTED_STATE.items():
            key = f"{OTHER_WS}/{name}" if name == "other-ws" else f"{WS}/{name}"
            event = events[key]
            assert set(event) == EVENT_FIELDS
            assert event["state"] == state, (name, event)
            # Nothing is polled after the terminal answer.
            assert sim.requests_after_terminal(*key.split("/")) == 0, name
        assert events[f"{WS}/invalid"]["event"] == "execution.invalid"
        assert events[f"{WS}/missing"]["event"] == "execution.not_found"
        assert events[f"{WS}/missing"]["polls"] == 3
        failed = events[f"{WS}/failed"]
        assert failed["event"] == "execution.finished"
        assert failed["error_details"] == {"Create Jira ticket": "HTTP 401 from jira.example.com"}
        assert failed["duration"] > 0
        assert failed["step_results"]
        assert events[f"{WS}/ok-slow"]["polls"] == 5
        assert events[f"{WS}/flapping-404"]["event"] == "execution.finished"
        # Only the two scripted auth blips were refused; every other request carried the key.
        assert sim.auth_failures == 0
        run.assert_no_secrets()
        assert run.diag("execution.unknown_state")[0]["state"] == "Weird-New-State"
        assert len(run.diag("execution.unknown_state")) == 1
        assert run.diag("api.auth_failed")
        assert run.diag("api.auth_recovered")
        assert all("execution_id" in d for d in run.diag("poll.failed"))


async def test_restart_after_finishing_polls_and_reports_nothing(
    tmp_path: Path, run_daemon: Any
) -> None:
    async with Simulator(api_key=API_KEY, scripts=[script("a", "Completed")]) as sim:
        config = write_config(tmp_path / "config.toml", sim, ["a"])
        first = await run_daemon(config)
        assert [e["execution_id"] for e in first.events] == ["a"]
        assert sim.requests_for(WS, "a") == 1

        second = await run_daemon(config)
        assert second.returncode == 0
        assert second.events == []
        assert sim.requests_for(WS, "a") == 1


async def test_with_apply_view_is_sent_when_configured(tmp_path: Path, run_daemon: Any) -> None:
    async with Simulator(api_key=API_KEY, scripts=[script("a", "Completed")]) as sim:
        config = write_config(tmp_path / "config.toml", sim, ["a"], blink={"with_apply_view": True})
        run = await run_daemon(config)
        assert run.returncode == 0
        assert sim.apply_view_seen
