"""``[[discover]]`` rules: which executions the daemon finds through the list endpoint."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from watcher.config.model import DiscoverRule
from watcher.config.table import Table
from watcher.errors import ConfigError

_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float | None:
    """``"now"`` -> 0, ``"90s"``, ``"15m"``, ``"1h"``, ``"2d"`` -> seconds; None if malformed."""
    if text == "now":
        return 0.0
    match = _DURATION.fullmatch(text)
    return None if match is None else float(match[1]) * _UNIT_S[match[2]]


def _rule(t: Table, default_ws: str | None, names: set[str]) -> DiscoverRule:
    name = t.text("name", required=True)
    if not _NAME.fullmatch(name):
        raise t.error("name", "must be 1 to 64 of a-z, 0-9, '_' and '-', starting alphanumeric")
    if name in names:
        raise t.error("name", f"{name!r} is the name of another rule (it keys the rule's cursor)")
    names.add(name)
    workspace_id = t.text("workspace_id", default_ws)
    if workspace_id is None:
        raise t.error("workspace_id", "not set, and blink.workspace_id is not set either")
    start = t.text("start", "now")
    start_back_s = parse_duration(start)
    if start_back_s is None:
        raise t.error(
            "start", f'must be "now" or a duration such as "90s", "15m", "1h", "2d"; got {start!r}'
        )
    rule = DiscoverRule(
        name=name,
        workspace_id=workspace_id,
        playbook_ids=tuple(t.str_list("playbook_ids") or ()),
        trigger_types=tuple(t.str_list("trigger_types") or ()),
        start_back_s=start_back_s,
        interval_s=t.number("interval", 30.0, above=0),
        overlap_s=t.number("overlap", 120.0, minimum=0),
    )
    t.finish()
    return rule


def parse_rules(
    data: Mapping[str, Any], file: str, default_ws: str | None
) -> tuple[DiscoverRule, ...]:
    """Every ``[[discover]]`` table of the document; ConfigError naming the key."""
    raw = data.get("discover", [])
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise ConfigError(file, "discover", "must be an array of tables ([[discover]])")
    names: set[str] = set()
    return tuple(
        _rule(Table(file, f"discover[{i}]", r), default_ws, names) for i, r in enumerate(raw)
    )
