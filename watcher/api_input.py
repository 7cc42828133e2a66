"""What the watch API accepts: one execution or up to 1,000, checked whole before any change."""

from __future__ import annotations

from typing import Any, Final

from watcher.config.ids import ID_CHAR
from watcher.models import ExecutionKey

MAX_EXECUTIONS: Final = 1000
MAX_ID_BYTES: Final = 256
_ITEM_FIELDS: Final = frozenset({"execution_id", "workspace_id"})


class InputError(ValueError):
    """A request the API refuses (400), saying what is wrong with it."""


def _id(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{field} must be a string, not {type(value).__name__}")
    if not value:
        raise InputError(f"{field} is empty")
    if len(value.encode()) > MAX_ID_BYTES:
        raise InputError(f"{field} is over {MAX_ID_BYTES} bytes")
    bad = sorted({c for c in value if not ID_CHAR.fullmatch(c)})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        raise InputError(f"{field} {value!r}: {shown} cannot be in an ID")
    return value


def parse_key(workspace_id: str, execution_id: str) -> ExecutionKey:
    """The key named by a URL's ``{ws}/{id}``."""
    return _id(workspace_id, "workspace_id"), _id(execution_id, "execution_id")


def _item(item: object, default_ws: str | None, where: str) -> ExecutionKey:
    if not isinstance(item, dict):
        raise InputError(f"{where} must be an object with execution_id")
    unknown = sorted(set(item) - _ITEM_FIELDS)
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")
    if "execution_id" not in item:
        raise InputError(f"{where}: execution_id is missing")
    execution_id = _id(item["execution_id"], f"{where}.execution_id")
    workspace = item.get("workspace_id", default_ws)
    if workspace is None:
        raise InputError(f"{where}: workspace_id is missing and blink.workspace_id is not set")
    return _id(workspace, f"{where}.workspace_id"), execution_id


def parse_watches(data: Any, default_ws: str | None) -> tuple[list[ExecutionKey], bool]:
    """The keys a ``POST /v1/watches`` body names, each once, and whether it named one.

    ``{"execution_id": ..., "workspace_id": ...}`` or ``{"executions": [...]}``
    (1 to 1,000 such objects); ``workspace_id`` defaults to the config's.
    """
    if not isinstance(data, dict):
        raise InputError("the body must be a JSON object")
    if "executions" not in data:
        return [_item(data, default_ws, "the body")], True
    unknown = sorted(set(data) - {"executions"})
    if unknown:
        raise InputError(f"unknown field(s) {', '.join(map(repr, unknown))}")
    items = data["executions"]
    if not isinstance(items, list):
        raise InputError("executions must be a list")
    if not items:
        raise InputError("executions is empty")
    if len(items) > MAX_EXECUTIONS:
        raise InputError(f"executions has {len(items)} items; at most {MAX_EXECUTIONS}")
    keys = [_item(item, default_ws, f"executions[{i}]") for i, item in enumerate(items)]
    return list(dict.fromkeys(keys)), False
