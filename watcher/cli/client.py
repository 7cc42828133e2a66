"""``blink-watcher add`` and ``remove``: hand executions to the running daemon over its API.

The listen address and the token come from the daemon's config (docs/api.md).
Exit 0 done; 1 the daemon refused or could not be reached (one line saying
which and why); ``add --wait`` exits 0 once every execution ended Completed,
1 when any ended otherwise.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, Final

from watcher.config import Config
from watcher.config.token import read_api_token
from watcher.errors import EX_FAILURE, EX_OK
from watcher.models import ExecutionKey, format_key

TIMEOUT_S: Final = 10.0
WAIT_EVERY_S: Final = 1.0


class Refused(Exception):
    """The daemon answered with an error, or did not answer; ``str()`` says which."""


class DaemonClient:
    """The watch API of the daemon that ``config`` describes."""

    def __init__(self, config: Config) -> None:
        assert config.server is not None  # read_api_token refuses a config without one
        self._token = read_api_token(config).reveal()
        host = config.server.host
        if host in ("0.0.0.0", "::", ""):  # listening everywhere: loopback reaches it
            host = "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        self.base = f"http://{host}:{config.server.port}"

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
                return resp.status, _json(resp.read())
        except urllib.error.HTTPError as exc:
            answer = _json(exc.read())
            reason = answer.get("error") if isinstance(answer, dict) else None
            raise Refused(f"the daemon refused: HTTP {exc.code}: {reason or exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            why = getattr(exc, "reason", exc)
            raise Refused(f"cannot reach the daemon at {self.base}: {why}") from None


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return None


def _path(key: ExecutionKey) -> str:
    return "/v1/watches/" + "/".join(urllib.parse.quote(part, safe="") for part in key)


def _line(view: dict[str, Any]) -> str:
    key = f"{view['workspace_id']}/{view['execution_id']}"
    if view.get("phase") == "reported":
        return f"{key}: reported {view.get('state') or view.get('event')} ({view.get('event_id')})"
    if view.get("status") == "added":
        return f"{key}: added"
    return f"{key}: already watched"


def ended_completed(view: dict[str, Any]) -> bool:
    """Did the reported execution end ``Completed`` (any case)?"""
    return (
        view.get("event") == "execution.finished"
        and str(view.get("state") or "").casefold() == "completed"
    )


def add(
    config: Config,
    keys: list[ExecutionKey],
    *,
    wait: bool,
    as_json: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """``blink-watcher add``: the exit code."""
    try:
        client = DaemonClient(config)
        body = {"executions": [{"workspace_id": ws, "execution_id": ex} for ws, ex in keys]}
        _, answer = client.call("POST", "/v1/watches", body)
    except Refused as exc:
        print(f"blink-watcher: {exc}", file=sys.stderr)
        return EX_FAILURE
    views: list[dict[str, Any]] = answer["executions"]
    if not wait:
        _say(views, as_json)
        return EX_OK
    if not as_json:
        for view in views:
            print(_line(view), flush=True)
    final = _wait(client, views, sleep)
    if as_json:
        print(json.dumps({"executions": final}, indent=2))
    else:
        for view in final:
            print(_line(view))
    return EX_OK if all(ended_completed(v) for v in final) else EX_FAILURE


def _wait(
    client: DaemonClient, views: list[dict[str, Any]], sleep: Callable[[float], None]
) -> list[dict[str, Any]]:
    """Each execution's reported view, polling the daemon until all have one."""
    final = {i: v for i, v in enumerate(views) if v.get("phase") == "reported"}
    said_unreachable = False
    while len(final) < len(views):
        sleep(WAIT_EVERY_S)
        for i, view in enumerate(views):
            if i in final:
                continue
            try:
                _, now = client.call("GET", _path((view["workspace_id"], view["execution_id"])))
            except Refused as exc:
                # The daemon restarting (an upgrade, a crash) does not lose the watch:
                # keep waiting, and say so once.
                if not said_unreachable:
                    print(f"blink-watcher: {exc}; still waiting", file=sys.stderr, flush=True)
                    said_unreachable = True
                break
            if now.get("phase") == "reported":
                final[i] = now
    return [final[i] for i in range(len(views))]


def remove(config: Config, keys: list[ExecutionKey], *, as_json: bool) -> int:
    """``blink-watcher remove``: the exit code (1 if any was refused)."""
    try:
        client = DaemonClient(config)
    except Refused as exc:
        print(f"blink-watcher: {exc}", file=sys.stderr)
        return EX_FAILURE
    code = EX_OK
    results = []
    for key in keys:
        try:
            client.call("DELETE", _path(key))
        except Refused as exc:
            print(f"blink-watcher: {format_key(key)}: {exc}", file=sys.stderr)
            results.append({"workspace_id": key[0], "execution_id": key[1], "removed": False})
            code = EX_FAILURE
            continue
        results.append({"workspace_id": key[0], "execution_id": key[1], "removed": True})
        if not as_json:
            print(f"{format_key(key)}: removed")
    if as_json:
        print(json.dumps({"executions": results}, indent=2))
    return code


def _say(views: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"executions": views}, indent=2))
        return
    for view in views:
        print(_line(view))
