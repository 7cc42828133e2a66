"""The RQL query a rule sends: its filters, a created_at window, ascending, paged by offset.

Every RQL feature used here is listed in docs/discovery.md, so that an
operator can check it against their tenant.
"""

from __future__ import annotations

from itertools import product
from typing import Any, Final

from watcher.config import DiscoverRule

PAGE_SIZE: Final = 1000  # the most the list endpoint returns per request


def build_query(rule: DiscoverRule, since_ms: int, offset: int) -> dict[str, Any]:
    """Executions of ``rule`` created at or after ``since_ms``, oldest first."""
    where: dict[str, Any] = {"created_at": {"$gte": since_ms}}
    choices = [
        [{"playbook_id": p} for p in rule.playbook_ids] or [{}],
        [{"trigger_type": t} for t in rule.trigger_types] or [{}],
    ]
    combos = [{**a, **b} for a, b in product(*choices)]
    if len(combos) == 1:
        where.update(combos[0])  # equality, as Blink's own tooling filters playbook_id
    else:
        where["$or"] = combos
    return {"filter": where, "sort": ["+created_at"], "limit": PAGE_SIZE, "offset": offset}
