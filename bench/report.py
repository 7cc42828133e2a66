"""The results table (stdout) and BENCHMARKS.md (the table plus the machine and method)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

HEADER = ("Measurement", "Result (median)", "vs bare loop", "Target", "Verdict", "Runs", "Notes")


@dataclass(frozen=True, slots=True)
class Row:
    """One figure: its median, ratio to the denominator, target and each repetition's value."""

    label: str
    value: str
    ratio: str
    target: str
    verdict: str
    samples: Sequence[float] = field(default_factory=list)
    scale: float = 1.0  # samples are shown times this (e.g. 1e6 for µs)
    detail: str = ""

    def cells(self) -> list[str]:
        runs = ", ".join(_short(v * self.scale) for v in self.samples)
        return [self.label, self.value, self.ratio, self.target, self.verdict, runs, self.detail]


def _short(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_table(rows: Sequence[Row]) -> str:
    """A Markdown table, padded so it also reads well in a terminal."""
    table = [list(HEADER), *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(table[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(cells) for cells in table[1:]]
    return "\n".join(out)


METHOD = """\
## How it is measured

- **Server**: a canned-response HTTP/1.1 server (`bench/server.py`) serving the
  simulator's own Running/Completed bodies (about 1.8 KB of JSON each), pinned
  to one CPU. The client under test is pinned to the other CPU, so server work
  never lands on the measured process.
- **CPU per poll**: `os.wait4` rusage (user + sys) of the whole client process,
  minus the same program doing one execution (start-up, imports, config), divided
  by the difference in requests the server counted. The daemon is the real
  `blink-watcher run --exit-when-done` (`rate_limit = 0`, `max_concurrency = 64`,
  `interval = max_interval = 0.001`, `jitter = 0`, a log sink to a file), every
  execution answering Running 9 times and then Completed. The bare loop does the
  same 10 GETs per execution with 64 in flight on one keep-alive session, in two
  variants: plain asyncio + stdlib `json`, and uvloop + orjson. The denominator
  of every ratio is the faster of the two in the same round. The daemon runs as
  installed (uvloop and orjson, both dependencies), and once more without them
  (`BLINK_WATCHER_EVENT_LOOP=asyncio`, `BLINK_WATCHER_PURE_JSON=1`) for the
  figure a user without them gets. Where the daemon's CPU per poll goes, and
  what stands between it and the target: `docs/performance.md`.
- **Naive baseline**: one `requests.Session`, each execution polled with GET +
  `.json()` until Completed, sequentially (fewer executions: it is slow).
- **Memory**: `VmRSS` of the daemon 2 s after the server answered the first
  poll of the last of 100,000 watches, polled at full speed (`rate_limit = 0`,
  64 in flight; each answers Running and `interval = 3600`, so they then
  sleep), minus the same at 1 watch, over 99,999. Three runs: the verdict
  takes the largest, since the figure must hold from run to run.
- **Store writes**: the daemon's `Service` run in a bench process
  (`bench/inproc.py`), reading `Store.writes` (committed transactions) and
  counting the writes queued per kind.
- **Latency**: `watcher.sim` on the server CPU; 1 in 10 executions follows a
  timeline script that turns Completed at an offset from its first GET spread
  evenly (shuffled) over one interval, the rest answer Running throughout.
  Terminal time is the simulator's `terminal_at`, delivery time its webhook
  receiver's `received_at` (a signed webhook sink, the default `jitter = 0.1`,
  `max_interval = interval`), so the bound is `interval * (1 + jitter)` + 100 ms;
  the daemon's `event.produced` log line splits the
  lag into detecting and delivering. The ideal is uniform over (0, interval):
  p50 = interval / 2, p99 = 0.99 interval. "Polls late" is how far the poll
  that saw the terminal state came after its due time (first GET + interval),
  store commit included (meaningful with jitter 0 only). The interval is 10 s
  rather than 1 s because at 10,000 watches 1 s means 10,000 polls/s, several
  times what one core of a machine like this does even with the bare aiohttp
  loop; the figure only means something where the polling fits in the CPU
  (`--latency-interval`).
- **Resume**: a state file with the watches in progress (rows as the scheduler
  saves them, schema from `watcher.store`), time from `Popen` to `READY=1` on a
  `NOTIFY_SOCKET` the bench binds; the daemon's `service.started` line must say
  every watch was resumed.
- **History**: the same resume, from a state file that also holds 1,000,000
  executions already reported (written straight into the schema's tables in one
  transaction: a compact `reported` row each, and for the newest 100,000 the
  event body and a delivered delivery, as retention leaves them), against the
  same start from a file without them. The config lists only the watches in
  progress. RSS (`VmRSS`, and the peak `VmHWM`) is read the moment `READY=1`
  arrives, before the first polls have changed anything.
"""


def render_markdown(
    rows: Sequence[Row], info: dict[str, str], res: Any, sizes: str, total_s: float
) -> str:
    """BENCHMARKS.md: machine, the table, what was run, and how."""
    lines = [
        "# blink-watcher benchmarks",
        "",
        "Generated by `make bench` (`python -m bench`); each target in its Target column.",
        "",
        "## Machine",
        "",
        *(f"- **{k}**: {v}" for k, v in info.items()),
        "",
        "## Results",
        "",
        render_table(rows),
        "",
        f"Run: {sizes}. Took {total_s:.0f} s.",
        "",
    ]
    busy = res.notes.get("busy")
    if busy:
        lines += [
            f"Other work shared the machine during this run (1-minute load average "
            f"{busy:.2f} at the start): absolute CPU figures vary by a third from round to "
            "round, so compare the ratios within a round (the per-round ratios in the notes) "
            "rather than figures across rows or runs.",
            "",
        ]
    cut = res.notes.get("rounds_cut")
    if cut:
        lines += [f"Only {cut} rounds fitted the time budget.", ""]
    return "\n".join(lines) + "\n" + METHOD
