"""Execution IDs in the config: ``EXEC_ID`` or ``WS_ID/EXEC_ID``, inline or from a file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from watcher.config.model import WHITESPACE
from watcher.config.table import Table
from watcher.models import ExecutionKey

# What Blink's IDs are made of (ULIDs, UUIDs, slugs): anything else in an ID is a
# typo or a pasted URL fragment ("01J9?x=1", "a#b").
ID_CHAR: Final = re.compile(r"[A-Za-z0-9._:~-]")
# The same, for a whole WS_ID/EXEC_ID at once: 100,000 IDs in executions_file are
# checked in milliseconds, and only a bad one is looked at character by character.
_ID_TEXT: Final = re.compile(r"[A-Za-z0-9._:~/-]+")


def split_execution(raw: str, default_ws: str | None) -> ExecutionKey:
    """``EXEC_ID`` (in ``default_ws``) or ``WS_ID/EXEC_ID``; ValueError saying what is wrong."""
    text = raw.strip()
    if _ID_TEXT.fullmatch(text):
        pass  # the usual case: nothing below can object to a character
    elif WHITESPACE.search(text):
        raise ValueError(f"{raw!r} contains white space")
    elif bad := sorted({c for c in text if c != "/" and not ID_CHAR.fullmatch(c)}):
        # They would end as 404s (or worse, change the URL): say so now.
        shown = " ".join(repr(c) for c in bad)
        raise ValueError(f"{raw!r}: {shown} cannot be in a workspace or execution ID")
    parts = text.split("/")
    if len(parts) == 2 and parts[0] and parts[1]:
        return parts[0], parts[1]
    if len(parts) == 1 and text:
        if default_ws is None:
            raise ValueError(
                f"{text!r} has no workspace and blink.workspace_id is not set (use WS/ID)"
            )
        return default_ws, text
    raise ValueError(f"{raw!r} is not EXEC_ID or WS_ID/EXEC_ID")


def executions_of(t: Table, default_ws: str | None, config_dir: Path) -> tuple[ExecutionKey, ...]:
    keys: dict[ExecutionKey, None] = {}  # insertion-ordered set: duplicates watched once
    for i, raw in enumerate(t.str_list("executions") or []):
        try:
            keys[split_execution(raw, default_ws)] = None
        except ValueError as exc:
            raise t.error(f"executions[{i}]", str(exc)) from None
    file_raw = t.text("executions_file")
    if file_raw is not None:
        path = config_dir / Path(file_raw).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8"
            raise t.error("executions_file", f"cannot read {path}: {reason}") from None
        # 100,000 lines here is normal: nothing per line beyond the parse itself.
        for lineno, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if text:
                try:
                    keys[split_execution(text, default_ws)] = None
                except ValueError as exc:
                    where = f"executions_file ({path}:{lineno})"
                    raise t.error(where, str(exc)) from None
    return tuple(keys)
