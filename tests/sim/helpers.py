"""What the simulator's tests share: a key, scripts in one line, and GET/POST helpers."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from watcher.sim import TERMINAL_STATES, Simulator

KEY = "sim-test-key"
WS = "ws-main"

# Every property of models.PlaybookExecutionWithSubflowNames in Blink's
# OpenAPI description, with its schema type. Written out here, not imported, so a
# field dropped or mistyped in watcher/sim/bodies.py fails the test.
SCHEMA: dict[str, type] = {
    "app_id": str,
    "async_parent_execution_id": str,
    "cancel_reason": str,
    "created_at": int,
    "created_by": str,
    "ctrl_id": str,
    "display_name": str,
    "draft_execution_number": int,
    "duration": int,
    "engine_v2_compile_error": str,
    "engine_version": str,
    "error_details": dict,
    "event": dict,
    "execution_depth": int,
    "execution_number": int,
    "finished_at": int,
    "id": str,
    "input_values_origin_exec_id": str,
    "inputs": dict,
    "last_playbook_name": str,
    "name": str,
    "net_runtime_ms": int,
    "pack_id": str,
    "parent_execution_id": str,
    "playbook": str,
    "playbook_deleted": bool,
    "playbook_id": str,
    "playbook_name": str,
    "runner_cluster_version": str,
    "runner_group_id": str,
    "runner_id": str,
    "runner_version": str,
    "scheduled_trigger_timezone": str,
    "started_at": int,
    "state": str,
    "state_ui": str,
    "step_results": dict,
    "subflows_reference_to_name_mapping": dict,
    "tenant_id": str,
    "test_session_id": str,
    "timeout": int,
    "top_execution_id": str,
    "top_execution_started_at": int,
    "trigger_type": str,
    "type": str,
    "updated_at": int,
    "updated_by": str,
    "version": str,
    "with_concurrency_limit": bool,
    "workspace_id": str,
}
ERROR_WRAPPER_KEYS = {"data", "details", "identifier", "message", "status", "user_error"}


def one(steps: list[str], execution_id: str = "ex-1", **extra: Any) -> dict[str, Any]:
    return {"workspace_id": WS, "execution_id": execution_id, "steps": steps, **extra}


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


async def get(
    session: aiohttp.ClientSession,
    sim: Simulator,
    execution_id: str = "ex-1",
    workspace_id: str = WS,
    **kwargs: Any,
) -> Reply:
    url = f"{sim.base_url}/workspace/{workspace_id}/executions/{execution_id}"
    async with session.get(url, **kwargs) as resp:
        return Reply(resp.status, dict(resp.headers), await resp.read())


async def states(session: aiohttp.ClientSession, sim: Simulator, n: int) -> list[str]:
    return [(await get(session, sim)).json()["state_ui"] for _ in range(n)]


async def poll_until(
    session: aiohttp.ClientSession, sim: Simulator, execution_id: str, workspace_id: str = WS
) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        body: dict[str, Any] = (await get(session, sim, execution_id, workspace_id)).json()
        if body["state"].casefold() in TERMINAL_STATES or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.01)


async def post_hook(
    session: aiohttp.ClientSession, sim: Simulator, name: str, event: dict[str, Any], **kw: Any
) -> Reply:
    headers = {"webhook-id": event["event_id"], "Content-Type": "application/json"}
    async with session.post(sim.hook_url(name), data=json.dumps(event), headers=headers, **kw) as r:
        return Reply(r.status, dict(r.headers), await r.read())
