"""One page of Blink's execution list, reduced to what discovery needs of each item."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from watcher.errors import TransientApiError


@dataclass(frozen=True, slots=True)
class Listed:
    """An execution as the list shows it: enough to watch it and move the cursor."""

    execution_id: str
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class ExecutionPage:
    """``results`` of one list response, in the order the API sent them."""

    items: tuple[Listed, ...]
    total: int | None  # the API's count; undocumented whether it is exact

    @classmethod
    def from_body(cls, body: bytes) -> ExecutionPage:
        """Parse a 200 body; anything unusable is a transient fault (asked again later)."""
        try:
            obj: Any = json.loads(body)
        except (ValueError, RecursionError):
            raise TransientApiError("list response body is not JSON", status=200) from None
        results = obj.get("results") if isinstance(obj, dict) else None
        if not isinstance(results, list):
            raise TransientApiError("list response has no results list", status=200)
        items = []
        for item in results:
            if not isinstance(item, dict):
                continue
            ex, created = item.get("id"), item.get("created_at")
            # An item without an ID or a time cannot be watched or placed: skip it
            # rather than lose the page.
            if isinstance(created, bool) or not isinstance(created, int | float):
                continue
            if isinstance(ex, str) and ex:
                items.append(Listed(ex, int(created)))
        total = obj.get("total")
        return cls(tuple(items), total if isinstance(total, int) else None)
