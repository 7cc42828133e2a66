"""The demo's executions: a realistic mix of endings and faults, each over in a few polls."""

from __future__ import annotations

from typing import Any, Final

DEMO_MISSING_EXECUTION_ID: Final = "01HZZX0M1SS1NG0000000000NF"
"""An ID :func:`demo_scripts` deliberately does not script: the demo's 404 case."""


def demo_scripts(
    workspace_id: str = "ws-demo", other_workspace_id: str = "ws-ops"
) -> list[dict[str, Any]]:
    """A realistic mix of executions for the product demo, each ending in 2-8 polls.

    Quick successes, a failure with error_details, a cancellation, a timeout,
    transient API faults on the way, a Paused phase, a lowercase terminal
    state, one execution in a second workspace and one that answers 400.
    :data:`DEMO_MISSING_EXECUTION_ID` is deliberately not scripted (404).
    """

    def script(
        execution_id: str, playbook: str, steps: list[str], workspace: str = workspace_id
    ) -> dict[str, Any]:
        # Naming a known playbook gives the body that playbook's inputs and errors.
        return {
            "workspace_id": workspace,
            "execution_id": execution_id,
            "steps": steps,
            "fields": {"playbook_name": playbook},
        }

    return [
        script(
            "01HZZX1ENR1CHPH1SH1NG00001", "Enrich phishing IOC", ["Pending", "Running", "Completed"]
        ),
        # state only, state_ui empty: the watcher must fall back to state.
        script(
            "01HZZX2R0TATE1AMKEYS000002",
            "Rotate IAM keys",
            ["Running", "Running", "state=Running", "state=Completed"],
        ),
        script(
            "01HZZX3S0XATEH0ST000000003",
            "Isolate compromised host",
            ["Pending", "Running", "Running", "Failed"],
        ),
        script(
            "01HZZX4BX0CK1P000000000004",
            "Block malicious IP on firewall",
            ["Running", "Running", "Cancelled"],
        ),
        # Transient faults on the way; each retry consumes a step. Two resets in a
        # row because aiohttp retries a GET once by itself after a disconnect.
        script(
            "01HZZX5GVARDDVTYTR1AGE0005",
            "Triage GuardDuty finding",
            ["Pending", "!503", "Running", "!reset", "!reset", "!429:0.2", "!html", "Completed"],
        ),
        # Blink's own tooling stops on Paused; a daemon must keep watching.
        script(
            "01HZZX60FFB0ARDEMP10YEE006",
            "Offboard departing employee",
            ["Running", "Paused", "Paused", "Running", "Completed"],
        ),
        script(
            "01HZZX7QVARANT1NEEMA1X0007", "Quarantine suspicious email", ["Running", "completed"]
        ),
        script(
            "01HZZX8D1SAB0KTAVSER000008",
            "Disable compromised Okta user",
            ["Running", "Running", "!500", "Timeout"],
        ),
        script(
            "01HZZX9RESTARTP0D000000009",
            "Restart pod",
            ["Pending", "Running", "Completed"],
            workspace=other_workspace_id,
        ),
        {"workspace_id": workspace_id, "execution_id": "not-an-execution-id", "steps": ["!400"]},
    ]
