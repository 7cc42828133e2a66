"""The history measurement: start-up with a million executions already reported vs none.

History must not slow the daemon down: deciding whether an execution was
already reported is an indexed lookup, so start to ``READY=1`` and the RSS
then should be those of the same start with an empty history.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from bench import scenarios as sc
from bench.harness import BenchError, get_json
from bench.report import Row

WORKSPACE = "resume-d0"  # Running forever on the canned server (as for resume)
SINK = "log:stdout"


class Results(Protocol):
    values: dict[str, list[float]]
    notes: dict[str, Any]

    def add(self, name: str, value: float) -> None: ...

    def median(self, name: str) -> float | None: ...


def _reported_ids(watches: int, reported: int) -> list[str]:
    # Ten (say) per watch, named after it: the lookups for the watches in
    # progress land all over the reported table's B-tree, not at one end.
    return sorted(f"ex-{i % watches}-r{i // watches}" for i in range(reported))


def build_state(b: sc.Bench, watches: int, reported: int, kept: int) -> Path:
    """A state file with ``watches`` in progress and ``reported`` executions reported.

    Written straight into the daemon's own schema, in one transaction: every
    reported execution has its compact ``reported`` row; the newest ``kept``
    also still have their event body and a delivered delivery (within
    keep_reported), the rest were pruned. Takes seconds, not a daemon run.
    """
    from watcher.models import Event, Execution, event_id_for

    path = sc.build_resume_state(b, watches, WORKSPACE, b.tmp / f"history-{reported}.db")
    if not reported:
        return path
    api_body = get_json(f"{b.base_url}/workspace/template-d0/executions/ex-0")
    execution = Execution.from_api({**api_body, "state": "Completed", "state_ui": "Completed"})
    now = time.time()
    ids = _reported_ids(watches, reported)

    def reported_at(n: int) -> float:
        return now - (reported - n)  # one a second, the last one just now

    def reported_rows() -> Iterator[tuple[Any, ...]]:
        for n, execution_id in enumerate(ids):
            key = (WORKSPACE, execution_id)
            event_id = event_id_for(key, "execution.finished")
            yield (*key, event_id, "execution.finished", "Completed", reported_at(n))

    def event_rows() -> Iterator[tuple[Any, ...]]:
        for n in range(reported - kept, reported):
            key = (WORKSPACE, ids[n])
            event = Event("execution.finished", key, "Completed", execution, reported_at(n), 3)
            body = event.to_json()
            yield (event.event_id, *key, event.event, event.state, body, reported_at(n))

    db = sqlite3.connect(path)
    try:
        with db:
            db.executemany("INSERT INTO reported VALUES (?, ?, ?, ?, ?, ?)", reported_rows())
            db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", event_rows())
            db.execute(
                "INSERT INTO deliveries SELECT event_id, ?, 'delivered', 1, created_at, NULL, "
                "created_at FROM events",
                (SINK,),
            )
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return path


def run_round(
    b: sc.Bench,
    res: Results,
    step: Callable[..., Any],
    r: int,
    templates: tuple[Path, Path],
    watches: int,
    reported: int,
) -> None:
    """One start with the history and one without, in alternating order."""
    runs = [("history", templates[0]), ("history0", templates[1])]
    if r % 2:
        runs.reverse()
    for name, template in runs:
        what = f"{reported:,} reported" if name == "history" else "no history"
        got: sc.Resume = step(
            f"round {r + 1}: start with {watches:,} in progress, {what}",
            sc.resume,
            b,
            template,
            watches,
            WORKSPACE,
        )
        if got.resumed != watches:
            raise BenchError(f"{name}: resumed {got.resumed} watches, expected {watches}")
        res.add(f"{name}.ready", got.ready_s)
        res.add(f"{name}.rss", got.rss_ready)
        res.add(f"{name}.hwm", got.hwm_ready)
    # Within the round, like the CPU ratios: both starts ran under the same load.
    res.add("history.rss_ratio", res.values["history.rss"][-1] / res.values["history0.rss"][-1])
    res.notes["history_file_mib"] = templates[0].stat().st_size / 2**20


def rows(
    res: Results, watches: int, reported: int, kept: int, verdict: Callable[[bool], str]
) -> list[Row]:
    """Two rows: start -> READY with the history, and RSS then against no history."""
    med = res.median
    ready, ready0 = med("history.ready"), med("history0.ready")
    if ready is None or ready0 is None:
        return []
    mib = 2**20
    rss, rss0 = med("history.rss") or 0, med("history0.rss") or 1
    hwm, hwm0 = med("history.hwm") or 0, med("history0.hwm") or 0
    ratio = med("history.rss_ratio") or 0
    size = res.notes.get("history_file_mib", 0.0)
    return [
        Row(
            f"start -> READY=1 with {reported:,} executions reported and {watches:,} in progress",
            f"{ready:.2f} s",
            "",
            "< 2 s",
            verdict(ready < 2.0),
            res.values["history.ready"],
            detail=(
                f"same start with no history: {ready0:.2f} s; state file {size:.0f} MiB "
                f"({kept:,} events still within keep_reported)"
            ),
        ),
        Row(
            f"RSS at READY=1, {reported:,} reported vs no history",
            f"{rss / mib:.1f} vs {rss0 / mib:.1f} MiB",
            f"{ratio:.2f}x",
            "<= 1.10x",
            verdict(ratio <= 1.10),
            res.values["history.rss_ratio"],
            detail=f"peak (VmHWM) {hwm / mib:.1f} vs {hwm0 / mib:.1f} MiB",
        ),
    ]
