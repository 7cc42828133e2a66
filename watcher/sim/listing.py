"""The simulated list endpoint: ``GET /workspace/{ws}/executions?q=RQL`` over the scripts.

It serves the RQL subset Blink documents (docs/discovery.md): ``filter`` with
equality, ``$eq $neq $gt $gte $lt $lte $like`` and ``$or``; ``sort``;
``limit`` (1 to 1,000) and ``offset``; ``total``. Scripts say when each
execution was created and when it shows in the list (script keys
``created_at``, ``created_every``, ``listed_after``, ``playbook_id``,
``trigger_type``). ``reject_filter`` makes a field's filter a 400, as a
tenant whose endpoint does not take it would answer.
"""

from __future__ import annotations

import json
import math
import operator
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from aiohttp import web

from watcher.sim.bodies import dumps
from watcher.sim.script import Group

MAX_LIMIT: Final = 1000


class QueryError(ValueError):
    """A query the simulated API refuses (400), with the message Blink would send."""


def _bad_request(message: str) -> web.Response:
    body = {
        "data": {},
        "details": message,
        "identifier": "BAD_REQUEST",
        "message": message,
        "status": 400,
        "user_error": {},
    }
    return web.Response(status=400, body=dumps(body), content_type="application/json")


def _like(pattern: str) -> re.Pattern[str]:
    parts = (".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "$eq": operator.eq,
    "$neq": operator.ne,
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}

Check = Callable[[Any], bool]
Predicate = Callable[[dict[str, Any]], bool]


def _check(op: str, operand: Any, field: str) -> Check:
    if op == "$like":
        if not isinstance(operand, str):
            raise QueryError(f"$like on {field!r} needs a string")
        rx = _like(operand)
        return lambda v: isinstance(v, str) and rx.fullmatch(v) is not None
    compare = _COMPARE.get(op)
    if compare is None:
        raise QueryError(f"unsupported operator {op!r} on field {field!r}")
    if op in ("$eq", "$neq"):
        return lambda v: compare(v, operand)

    def ordered(v: Any) -> bool:
        try:
            return v is not None and compare(v, operand)
        except TypeError:
            return False

    return ordered


def _predicate(field: str, cond: Any) -> Predicate:
    if not isinstance(cond, dict):
        return lambda item: bool(item.get(field) == cond)
    checks = [_check(op, operand, field) for op, operand in cond.items()]
    return lambda item: all(check(item.get(field)) for check in checks)


def compile_filter(where: Any, rejected: dict[str, str]) -> Predicate:
    """A predicate for ``where`` (fields ANDed; ``$or`` any of its conditions)."""
    if not isinstance(where, dict):
        raise QueryError("filter must be an object")
    preds: list[Predicate] = []
    for field, cond in where.items():
        if field == "$or":
            if not isinstance(cond, list) or not cond:
                raise QueryError("$or needs a non-empty list of conditions")
            preds.append(_any_of([compile_filter(c, rejected) for c in cond]))
            continue
        if field in rejected:
            raise QueryError(rejected[field])
        preds.append(_predicate(field, cond))
    return lambda item: all(p(item) for p in preds)


def _any_of(alternatives: list[Predicate]) -> Predicate:
    return lambda item: any(a(item) for a in alternatives)


def _sort_key(field: str) -> Callable[[dict[str, Any]], tuple[bool, Any]]:
    return lambda item: (item.get(field) is None, item.get(field))


def _since(where: dict[str, Any]) -> float | None:
    """A ``created_at`` lower bound the filter sets outright (an index hint, no more)."""
    cond = where.get("created_at")
    if isinstance(cond, dict):
        for op in ("$gte", "$gt"):
            bound = cond.get(op)
            if isinstance(bound, int | float) and not isinstance(bound, bool):
                return float(bound)
    return None


class Listing:
    """The list endpoint over the API's scripts."""

    def __init__(self, groups: Callable[[str], Iterable[Group]]) -> None:
        self._groups = groups
        self.rejected: dict[str, str] = {}  # field -> the 400's message
        self.requests = 0

    def items(
        self, workspace_id: str, now: float, since_ms: float | None = None
    ) -> list[dict[str, Any]]:
        """Every execution of the workspace visible at ``now`` (created at ``since_ms`` or later).

        A bulk range's executions are created at regular times, so only the
        index range inside the window is built: a query over the newest
        thousand of 100,000 does not build 100,000 items.
        """
        now_ms = int(now * 1000)
        out = []
        for group in self._groups(workspace_id):
            meta = group.listing
            lo, hi = 0, group.count
            if meta.every_ms > 0:
                visible_until = now_ms - meta.listed_after_ms - meta.created_at_ms
                hi = min(hi, max(0, math.floor(visible_until / meta.every_ms) + 1))
                if since_ms is not None:
                    lo = max(0, math.ceil((since_ms - meta.created_at_ms) / meta.every_ms))
            for index in range(lo, hi):
                created = int(meta.created_at_ms + index * meta.every_ms)
                if now_ms < created + meta.listed_after_ms:
                    continue  # not created yet, or not visible yet (late)
                if since_ms is not None and created < since_ms:
                    continue
                out.append(
                    {
                        "id": group.execution_id_at(index),
                        "workspace_id": workspace_id,
                        "playbook_id": meta.playbook_id,
                        "trigger_type": meta.trigger_type,
                        "created_at": created,
                        "started_at": created,
                        "state": group.listed_state(index, now),
                    }
                )
        return out

    async def handle(self, request: web.Request, workspace_id: str) -> web.Response:
        self.requests += 1
        try:
            query = json.loads(request.query.get("q", "{}"))
            if not isinstance(query, dict):
                raise QueryError("q must be a JSON object")
            page, total, limit, offset = self._run(query, workspace_id)
        except (QueryError, ValueError) as exc:
            return _bad_request(f"invalid query: {exc}")
        body = {"limit": limit, "offset": offset, "total": total, "results": page}
        return web.Response(body=dumps(body), content_type="application/json")

    def _run(
        self, query: dict[str, Any], workspace_id: str
    ) -> tuple[list[dict[str, Any]], int, int, int]:
        limit, offset = query.get("limit", 100), query.get("offset", 0)
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise QueryError(f"limit must be 1 to {MAX_LIMIT}")
        if not isinstance(offset, int) or offset < 0:
            raise QueryError("offset must be 0 or more")
        where = query.get("filter", {})
        keep = compile_filter(where, self.rejected)
        items = [i for i in self.items(workspace_id, time.time(), _since(where)) if keep(i)]
        sort = query.get("sort", [])
        if not isinstance(sort, list):
            raise QueryError("sort must be a list of field names")
        for spec in reversed(sort):  # stable sorts, last key first
            if not isinstance(spec, str) or not spec.lstrip("+-"):
                raise QueryError(f"bad sort field {spec!r}")
            field = spec.lstrip("+-")
            items.sort(key=_sort_key(field), reverse=spec[0] == "-")
        return items[offset : offset + limit], len(items), limit, offset
