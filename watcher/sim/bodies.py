"""The JSON the simulated API answers: realistic execution bodies, ErrorWrapper, deliberate junk.

An execution body has every field of Blink's
``models.PlaybookExecutionWithSubflowNames`` with its schema type (tests/sim/helpers.py
lists them); an error body is an ``api_responses.ErrorWrapper``.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any, Final

from watcher.sim.playbooks import PLAYBOOKS, ulid
from watcher.sim.script import TERMINAL_STATES, Group, Step, reported


def dumps(obj: object) -> bytes:
    """``obj`` as JSON bytes."""
    return json.dumps(obj).encode()


class ExecutionBodies:
    """Builds execution bodies; the per-workspace IDs in them are computed once."""

    def __init__(self) -> None:
        self._workspace_ids: dict[str, dict[str, str]] = {}

    def _workspace_consts(self, workspace_id: str) -> dict[str, str]:
        # Computed once per workspace: scripted workspaces are few.
        consts = self._workspace_ids.get(workspace_id)
        if consts is None:
            seed = zlib.crc32(workspace_id.encode())
            consts = {
                "tenant_id": ulid(seed + 1),
                "ctrl_id": ulid(seed + 2),
                "runner_id": ulid(seed + 3),
                "runner_group_id": ulid(seed + 4),
                "app_id": ulid(seed + 5),
            }
            self._workspace_ids[workspace_id] = consts
        return consts

    def execution(
        self, group: Group, index: int, shown: Step, n: int, now: float
    ) -> dict[str, Any]:
        """The 200 body for the ``n``-th GET (from 0) of the execution at ``index``.

        ``shown`` is the state step the body reports; every other value is
        derived from the execution's identity and its recorded times.
        """
        workspace_id = group.workspace_id
        execution_id = group.execution_id_at(index)
        program = group.program
        fields = program.fields
        # Everything "random" derives from the execution's identity, so it is
        # stable across polls without storing anything per execution.
        h = zlib.crc32(f"{workspace_id}/{execution_id}".encode())
        pb = program.playbook or PLAYBOOKS[h % len(PLAYBOOKS)]
        consts = self._workspace_consts(workspace_id)
        number = 1 + (h >> 8) % 9000
        now_ms = int(now * 1000)
        created_ms = int(group.first_at[index] * 1000) - 1500 - (h >> 4) % 3000
        state = reported(shown.state, shown.state_ui) or ""
        folded = state.casefold()
        started_ms = 0 if folded == "pending" else created_ms + 120 + (h >> 12) % 400
        terminal = folded in TERMINAL_STATES
        total = pb.steps_total
        error_details: dict[str, str] = {}
        cancel_reason = ""
        if terminal:
            if program.offsets is not None and program.first_terminal_offset_s is not None:
                finished_s = group.first_at[index] + program.first_terminal_offset_s
            else:
                finished_s = group.served_terminal_at[index] or now
            finished_ms = max(int(finished_s * 1000), started_ms)
            duration_ms = finished_ms - started_ms if started_ms else 0
            # Net runtime excludes time spent waiting (approvals, queues).
            net_runtime_ms = duration_ms * 17 // 20
            done = (h >> 16) % (total - 1)
            if folded == "completed":
                skipped = (h >> 20) % 2
                step_results = {"completed": total - skipped, "failed": 0, "skipped": skipped}
            elif folded == "failed":
                step_results = {"completed": done, "failed": 1, "skipped": total - done - 1}
                error_details = {pb.failing_step: pb.failure}
            elif folded == "timeout":
                step_results = {"completed": done, "failed": 1, "skipped": total - done - 1}
                error_details = {
                    pb.failing_step: "execution exceeded its timeout of 3600000 ms",
                }
            elif folded == "skipped":
                step_results = {"completed": 0, "failed": 0, "skipped": total}
            else:  # cancelled / canceled
                step_results = {"completed": done, "failed": 0, "skipped": total - done}
                cancel_reason = "Cancelled by analyst a.lee@acme.example from the Blink UI"
        else:
            finished_ms = 0
            duration_ms = now_ms - started_ms if started_ms else 0
            net_runtime_ms = 0
            progressed = 0 if not started_ms else min(n, total - 1)
            step_results = {"completed": progressed, "failed": 0, "skipped": 0}
        body: dict[str, Any] = {
            "app_id": consts["app_id"],
            "async_parent_execution_id": "",
            "cancel_reason": cancel_reason,
            "created_at": created_ms,
            "created_by": "svc-automation@acme.example",
            "ctrl_id": consts["ctrl_id"],
            "display_name": f"{pb.name} #{number}",
            "draft_execution_number": 0,
            "duration": duration_ms,
            "engine_v2_compile_error": "",
            "engine_version": "v2",
            "error_details": error_details,
            "event": pb.event,
            "execution_depth": 0,
            "execution_number": number,
            "finished_at": finished_ms,
            "id": execution_id,
            "input_values_origin_exec_id": "",
            "inputs": pb.inputs,
            "last_playbook_name": pb.name,
            "name": pb.name,
            "net_runtime_ms": net_runtime_ms,
            "pack_id": pb.pack_id,
            "parent_execution_id": "",
            "playbook": pb.slug,
            "playbook_deleted": False,
            "playbook_id": pb.playbook_id,
            "playbook_name": pb.name,
            "runner_cluster_version": "1.29.4",
            "runner_group_id": consts["runner_group_id"],
            "runner_id": consts["runner_id"],
            "runner_version": "2.41.0",
            "scheduled_trigger_timezone": pb.timezone,
            "started_at": started_ms,
            "state": shown.state,
            "state_ui": shown.state_ui,
            "step_results": step_results,
            "subflows_reference_to_name_mapping": pb.subflows,
            "tenant_id": consts["tenant_id"],
            "test_session_id": "",
            "timeout": 3600000,
            "top_execution_id": execution_id,
            "top_execution_started_at": started_ms,
            "trigger_type": pb.trigger_type,
            "type": "playbook",
            "updated_at": finished_ms or now_ms,
            "updated_by": "svc-automation@acme.example",
            "version": f"v{3 + h % 9}",
            "with_concurrency_limit": False,
            "workspace_id": workspace_id,
        }
        if fields:
            body.update(fields)
        return body


_ERRORS: Final[Mapping[int, tuple[str, str, str]]] = {
    400: ("invalid_argument", "invalid execution id", "the execution id is missing or malformed"),
    401: ("unauthorized", "unauthorized", "missing or invalid BLINK-API-KEY header"),
    403: ("forbidden", "forbidden", "the API key has no access to this workspace"),
    404: ("not_found", "execution not found", "no execution with this id in the workspace"),
    429: ("rate_limited", "too many requests", "API rate limit exceeded, retry later"),
    500: ("internal", "internal server error", "an unexpected error occurred"),
    502: ("bad_gateway", "bad gateway", "upstream service returned an invalid response"),
    503: ("unavailable", "service unavailable", "the service is temporarily unavailable"),
}


def error_body(status: int) -> dict[str, Any]:
    """The ErrorWrapper body the API answers ``status`` with."""
    identifier, message, details = _ERRORS[status]
    return {
        "data": {},
        "details": details,
        "identifier": identifier,
        "message": message,
        "status": status,
        "user_error": {},
    }


# A load balancer's own error page, as !html serves it.
HTML_502: Final = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>awselb/2.0</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
# JSON content type, not JSON: what !notjson serves.
NOT_JSON: Final = b"{'state': 'Running', 'duration': 1523}  -- upstream debug dump\n"


def wrong_types_body(workspace_id: str, execution_id: str) -> dict[str, Any]:
    """What !wrongtypes serves: valid JSON, wrong types in every field the watcher uses."""
    return {
        "id": execution_id,
        "workspace_id": workspace_id,
        "state": 42,
        "state_ui": ["Running"],
        "duration": "abc",
        "net_runtime_ms": "fast",
        "step_results": [1, 2],
        "error_details": "x",
        "started_at": "yesterday",
        "finished_at": {"ms": 1},
        "execution_number": "12",
        "display_name": 7,
        "playbook_name": None,
        "playbook_id": False,
        "inputs": "none",
        "event": [],
        "subflows_reference_to_name_mapping": 3,
        "created_at": 1.5,
    }
