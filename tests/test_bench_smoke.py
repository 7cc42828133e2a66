"""``python -m bench --quick`` runs every measurement end to end and prints the table.

Only that it completes: the quick sizes are far too small for the figures to
mean anything, so nothing here looks at a number.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_quick_bench_completes_and_prints_the_table(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("NOTIFY_SOCKET", None)
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(report)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    for label in (
        "bare aiohttp loop, asyncio + json",
        "bare aiohttp loop, uvloop + orjson",
        "blink-watcher: CPU per poll",
        "blink-watcher without uvloop/orjson",
        "naive requests loop",
        "RSS per watch",
        "store writes on polls that changed nothing",
        "terminal -> webhook delivered",
        "process start -> READY=1",
        "executions reported and",
        "reported vs no history",
    ):
        assert label in table, f"{label!r} missing from:\n{table}"
    text = report.read_text()
    assert "## Machine" in text
    assert "blink-watcher: CPU per poll" in text
