"""``python -m bench``: run every scale and speed measurement, print one table, write BENCHMARKS.md.

Repetitions are interleaved (round 1 runs one of everything, then round 2,
...) so a slow spell on the machine spreads over all figures instead of
skewing one, and each figure is the median over the rounds. The 100,000-watch
memory runs take about 25 s each on a 2-core machine and run 3 times (min,
median and max are reported: the figure must be stable, not only low).
``--budget`` keeps the whole run under six minutes on a slow or busy machine
by starting no round that would end past it.

``--quick`` uses tiny sizes and one round (a few seconds; the smoke test).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import history
from bench import scenarios as sc
from bench.harness import BenchError, Processes, cpus, machine
from bench.report import Row, render_markdown, render_table
from watcher.config import PollConfig

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each scenario is. ``FULL`` is what the targets are stated for."""

    cpu_executions: int = 2000
    cpu_polls: int = 10
    naive_executions: int = 200  # sequential: 2,000 polls already take seconds
    memory_watches: int = 100_000
    resume_watches: int = 100_000
    latency_watches: int = 10_000
    latency_finishing: int = 1_000
    latency_interval_s: float = 10.0
    latency_jitter: float = PollConfig().jitter  # the default a user runs with
    writes_executions: int = 2000
    history_reported: int = 1_000_000  # with resume_watches in progress
    history_kept: int = 100_000  # of those, events and deliveries still within keep_reported


FULL = Sizes()
QUICK = Sizes(
    cpu_executions=40,
    cpu_polls=3,
    naive_executions=10,
    memory_watches=300,
    resume_watches=300,
    latency_watches=100,
    latency_finishing=20,
    latency_interval_s=0.5,
    writes_executions=40,
    history_reported=3000,
    history_kept=300,
)


@dataclass
class Results:
    """Every repetition's value per figure, and the raw runs for the notes."""

    values: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def median(self, name: str) -> float | None:
        got = self.values.get(name)
        return statistics.median(got) if got else None


class Clock:
    """Progress lines on stderr with the time since start: a long run is visibly alive."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def step(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, announced and timed on stderr."""
        print(f"[{self.elapsed():6.1f}s] {what} ...", file=sys.stderr, flush=True)
        t = time.monotonic()
        value = fn(*args, **kwargs)
        print(
            f"[{self.elapsed():6.1f}s]   done in {time.monotonic() - t:.1f}s",
            file=sys.stderr,
            flush=True,
        )
        return value


def _cpu_round(b: sc.Bench, sizes: Sizes, res: Results, clock: Clock, r: int, naive: bool) -> None:
    n, p = sizes.cpu_executions, sizes.cpu_polls
    runs: list[tuple[str, Callable[[], sc.Run]]] = [
        ("bare", lambda: sc.bare(b, n, p)),
        ("bare_uv", lambda: sc.bare(b, n, p, loop="uvloop", json_lib="orjson")),
        ("daemon", lambda: sc.daemon(b, n, p)),
        ("plain", lambda: sc.daemon(b, n, p, plain=True)),
        ("bare-1", lambda: sc.bare(b, 1, p)),
        ("bare_uv-1", lambda: sc.bare(b, 1, p, loop="uvloop", json_lib="orjson")),
        ("daemon-1", lambda: sc.daemon(b, 1, p)),
        ("plain-1", lambda: sc.daemon(b, 1, p, plain=True)),
    ]
    if naive:
        runs += [
            ("naive", lambda: sc.naive(b, sizes.naive_executions, p)),
            ("naive-1", lambda: sc.naive(b, 1, p)),
        ]
    # Rotate the order each round: no program always runs first (or after another).
    k = r % len(runs)
    got: dict[str, sc.Run] = {}
    for name, fn in runs[k:] + runs[:k]:
        got[name] = clock.step(f"round {r + 1}: {name}", fn)
    progs = [prog for prog in ("bare", "bare_uv", "daemon", "plain", "naive") if prog in got]
    for prog in progs:
        res.add(f"{prog}.cpu", sc.marginal_cpu_per_request(got[prog], got[f"{prog}-1"]))
        res.add(f"{prog}.wall", got[prog].wall_s)
        res.add(f"{prog}.requests", got[prog].requests)
    # The denominator is the faster bare loop of this round; ratios are taken
    # within a round (the runs were minutes apart at most, under the same
    # load), then the median over rounds.
    fastest = min(res.values["bare.cpu"][-1], res.values["bare_uv.cpu"][-1])
    res.add("fastest.cpu", fastest)
    for prog in progs:
        res.add(f"{prog}.ratio", res.values[f"{prog}.cpu"][-1] / fastest)


def _resume_round(
    b: sc.Bench,
    sizes: Sizes,
    res: Results,
    clock: Clock,
    r: int,
    templates: tuple[Path, Path] | None,
    measure_rss: bool,
    quick: bool,
) -> None:
    assert templates is not None  # planned only when resume is not skipped
    n = sizes.resume_watches
    what = f"round {r + 1}: resume {n:,}" + (
        ", then RSS once all are polled" if measure_rss else ""
    )
    big = clock.step(
        what,
        sc.resume,
        b,
        templates[0],
        n,
        RESUME_WORKSPACE,
        measure_rss=measure_rss,
        quiet_s=0.3 if quick else 1.0,
    )
    if big.resumed != n:
        raise BenchError(f"resumed {big.resumed} watches, expected {n}")
    res.add("resume.ready", big.ready_s)
    if big.rss is not None:
        res.add("memory.rss_resumed", big.rss)
    one = clock.step(
        f"round {r + 1}: resume 1 (start-up floor)",
        sc.resume,
        b,
        templates[1],
        1,
        RESUME_WORKSPACE,
    )
    res.add("resume1.ready", one.ready_s)


def _latency_round(b: sc.Bench, sizes: Sizes, res: Results, clock: Clock, r: int) -> None:
    lat = clock.step(
        f"round {r + 1}: latency at {sizes.latency_watches:,} watches, "
        f"interval {sizes.latency_interval_s:g}s",
        sc.latency,
        b,
        sizes.latency_watches,
        sizes.latency_finishing,
        sizes.latency_interval_s,
        sizes.latency_jitter,
    )
    for attr in sc.Latency.__slots__:
        res.add(f"latency.{attr}", getattr(lat, attr))


def _writes(b: sc.Bench, sizes: Sizes, res: Results, clock: Clock) -> None:
    got = clock.step(
        f"store writes over {sizes.writes_executions:,} executions (in-process)",
        sc.inproc,
        b,
        sizes.writes_executions,
        sizes.cpu_polls,
    )
    res.notes["writes"] = got.report | {"requests": got.run.requests}


def _memory_round(
    b: sc.Bench, sizes: Sizes, res: Results, clock: Clock, r: int, quick: bool
) -> None:
    # RSS is read this long after the last first poll was answered.
    quiet = 0.3 if quick else 2.0
    n = sizes.memory_watches
    big = clock.step(f"round {r + 1}: memory at {n:,} watches", sc.memory, b, n, quiet)
    small = clock.step(f"round {r + 1}: memory at 1 watch", sc.memory, b, 1, quiet)
    res.add("memory.per_watch", (big.rss - small.rss) / (n - 1))
    res.add("memory.rss_big", big.rss)
    res.add("memory.rss_small", small.rss)
    res.add("memory.first_polls", big.first_polls_s)


RESUME_WORKSPACE = history.WORKSPACE  # Running forever on the canned server
KINDS = ("cpu", "naive", "memory", "resume", "latency", "writes", "history")


def run(args: argparse.Namespace) -> int:
    """Every measurement, the table on stdout, BENCHMARKS.md (or ``--output``)."""
    sizes = QUICK if args.quick else FULL
    if args.latency_interval is not None:
        sizes = replace(sizes, latency_interval_s=args.latency_interval)
    if args.latency_jitter is not None:
        sizes = replace(sizes, latency_jitter=args.latency_jitter)
    reps = args.reps or (1 if args.quick else 3)
    # The CPU runs are cheap next to the rest and the figure the CPU ratio
    # hangs on: --cpu-reps gives them extra rounds against a noisy machine.
    cpu_reps = max(reps, args.cpu_reps or (reps if args.quick else 5))
    memory_reps = args.memory_reps or (1 if args.quick else 3)
    skip = set(args.skip)
    if args.only:
        skip = set(KINDS) - {args.only} - ({"naive"} if args.only == "cpu" else set())
    quick: bool = args.quick
    clock = Clock()
    res = Results()
    info = machine()
    load_before = os.getloadavg()
    client_cpu, server_cpu = cpus()
    env = {
        **os.environ,
        "BLINK_API_KEY": sc.API_KEY,
        "BENCH_WEBHOOK_SECRET": sc.WEBHOOK_SECRET,
        # The children must import this checkout's bench package (the daemon is installed).
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.pop("NOTIFY_SOCKET", None)  # only the resume runs get one, their own
    with (
        tempfile.TemporaryDirectory(prefix="blink-bench-") as tmp,
        Processes() as procs,
    ):
        b = sc.Bench(Path(tmp), procs, client_cpu, server_cpu, env)
        clock.step("start the canned API server", b.start_server)
        templates: tuple[Path, Path] | None = None  # None: resume skipped, never planned
        if "resume" not in skip:
            templates = clock.step(
                f"build state files with {sizes.resume_watches:,} and 1 watches",
                lambda: (
                    sc.build_resume_state(b, sizes.resume_watches, RESUME_WORKSPACE),
                    sc.build_resume_state(b, 1, RESUME_WORKSPACE),
                ),
            )
        history_templates: tuple[Path, Path] | None = None
        if "history" not in skip:
            n, h, k = sizes.resume_watches, sizes.history_reported, sizes.history_kept
            history_templates = clock.step(
                f"build state files with {n:,} watches, with and without {h:,} reported",
                lambda: (history.build_state(b, n, h, k), history.build_state(b, n, 0, 0)),
            )

        def history_round(r: int) -> None:
            assert history_templates is not None
            n, h = sizes.resume_watches, sizes.history_reported
            history.run_round(b, res, clock.step, r, history_templates, n, h)

        steps: dict[str, Callable[[int], None]] = {
            # The naive loop is context, not a target: one round of it is enough.
            "cpu": lambda r: _cpu_round(b, sizes, res, clock, r, r == 0 and "naive" not in skip),
            "resume": lambda r: _resume_round(b, sizes, res, clock, r, templates, False, quick),
            "resume+rss": lambda r: _resume_round(b, sizes, res, clock, r, templates, True, quick),
            "latency": lambda r: _latency_round(b, sizes, res, clock, r),
            "writes": lambda r: _writes(b, sizes, res, clock),
            "memory": lambda r: _memory_round(b, sizes, res, clock, r, quick),
            "history": history_round,
        }
        took: dict[str, float] = {}
        for r in range(max(cpu_reps, reps, memory_reps)):
            planned = [
                kind
                for kind, wanted in (
                    ("cpu", r < cpu_reps and "cpu" not in skip),
                    # The first round's resume also measures RSS after the restart.
                    (
                        "resume+rss" if r == 0 and "memory" not in skip else "resume",
                        r < reps and "resume" not in skip,
                    ),
                    ("latency", r < reps and "latency" not in skip),
                    ("writes", r == 0 and "writes" not in skip),
                    ("memory", r < memory_reps and "memory" not in skip),
                    ("history", r < reps and "history" not in skip),
                )
                if wanted
            ]
            # Each kind is assumed to take what it took last time.
            needed = sum(took.get(kind, 0.0) for kind in planned)
            if r > 0 and clock.elapsed() + needed > args.budget:
                print(
                    f"[{clock.elapsed():6.1f}s] stopping after {r} rounds: round {r + 1} "
                    f"would pass the {args.budget:g}s budget",
                    file=sys.stderr,
                )
                res.notes["rounds_cut"] = r
                break
            for kind in planned:
                started = time.monotonic()
                steps[kind](r)
                took[kind] = time.monotonic() - started
        if args.experiments:
            _experiments(b, sizes, res, clock, reps)
    info["load average"] = f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after (1-minute)"
    if load_before[0] > 0.5:  # something else was running: say so beside the figures
        res.notes["busy"] = load_before[0]
    rows = build_rows(res, sizes, quick=args.quick)
    if args.quick:
        print("quick mode: sizes far too small for these figures to mean anything\n")
    print(render_table(rows))
    total = clock.elapsed()
    output: Path | None = args.output
    if output is None and not args.quick and not args.only:
        output = REPO / "BENCHMARKS.md"  # never a partial table (--only) in its place
    if output is not None:
        text = sizes_text(sizes, reps, cpu_reps, memory_reps)
        output.write_text(render_markdown(rows, info, res, text, total))
        print(f"\nwrote {output} ({total:.0f}s)", file=sys.stderr)
    return 0


def _experiments(b: sc.Bench, sizes: Sizes, res: Results, clock: Clock, reps: int) -> None:
    """uvloop / orjson: the daemon in-process and the bare loop, each with the same swap."""
    n, p = sizes.cpu_executions, sizes.cpu_polls
    variants = [
        ("asyncio", "json"),
        ("uvloop", "json"),
        ("asyncio", "orjson"),
        ("uvloop", "orjson"),
    ]
    for r in range(reps):
        for loop, js in variants:
            tag = f"{loop}+{js}"
            swap = {"loop": loop, "json_lib": js}
            big = clock.step(f"experiment {r + 1}: daemon {tag}", sc.inproc, b, n, p, **swap)
            small = clock.step(f"experiment {r + 1}: daemon-1 {tag}", sc.inproc, b, 1, p, **swap)
            res.add(f"exp.daemon.{tag}", sc.marginal_cpu_per_request(big.run, small.run))
            bare_big = clock.step(f"experiment {r + 1}: bare {tag}", sc.bare, b, n, p, **swap)
            bare_small = clock.step(f"experiment {r + 1}: bare-1 {tag}", sc.bare, b, 1, p, **swap)
            res.add(f"exp.bare.{tag}", sc.marginal_cpu_per_request(bare_big, bare_small))


def sizes_text(sizes: Sizes, reps: int, cpu_reps: int, memory_reps: int) -> str:
    """One line saying what was run, for the report."""
    return (
        f"interleaved rounds: {cpu_reps} of the CPU runs, {reps} of resume and latency, "
        f"{memory_reps} of memory; CPU: {sizes.cpu_executions:,} executions x "
        f"{sizes.cpu_polls} polls (naive: {sizes.naive_executions:,} x {sizes.cpu_polls}); "
        f"memory: {sizes.memory_watches:,} watches; resume: {sizes.resume_watches:,}; "
        f"latency: {sizes.latency_watches:,} watches ({sizes.latency_finishing:,} finishing), "
        f"interval {sizes.latency_interval_s:g}s, jitter {sizes.latency_jitter:g}; "
        f"history: {sizes.history_reported:,} reported ({sizes.history_kept:,} within "
        f"keep_reported) and {sizes.resume_watches:,} in progress"
    )


def build_rows(res: Results, sizes: Sizes, *, quick: bool = False) -> list[Row]:
    """The table: one row per figure, with its ratio to the bare loop where that means something."""
    rows: list[Row] = []
    med = res.median
    vals = res.values

    def verdict(ok: bool) -> str:
        return "(quick)" if quick else ("met" if ok else "MISSED")

    def ratios(prog: str) -> str:
        return "per-round ratios " + ", ".join(f"{x:.2f}" for x in vals[f"{prog}.ratio"])

    bare = med("bare.cpu")
    for prog, label in (
        ("bare", "bare aiohttp loop, asyncio + json: CPU per request"),
        ("bare_uv", "bare aiohttp loop, uvloop + orjson: CPU per request"),
    ):
        cpu = med(f"{prog}.cpu")
        if cpu is not None:
            rows.append(
                Row(
                    label,
                    f"{cpu * 1e6:.0f} µs",
                    f"{med(f'{prog}.ratio') or 0:.2f}x",
                    "",
                    "denominator" if prog == "bare" else "",
                    vals[f"{prog}.cpu"],
                    scale=1e6,
                    detail="the denominator is the faster of the two bare loops in each round",
                )
            )
    daemon = med("daemon.cpu")
    ratio = med("daemon.ratio")
    if daemon is not None and ratio is not None:
        rows.append(
            Row(
                "blink-watcher: CPU per poll",
                f"{daemon * 1e6:.0f} µs",
                f"{ratio:.3f}x",  # three places: 1.204 must not read as a met 1.20
                "<= 1.2x",
                verdict(ratio <= 1.2),
                vals["daemon.cpu"],
                scale=1e6,
                detail=ratios("daemon") + " (uvloop + orjson, as installed)",
            )
        )
    plain = med("plain.cpu")
    if plain is not None:
        rows.append(
            Row(
                "blink-watcher without uvloop/orjson: CPU per poll",
                f"{plain * 1e6:.0f} µs",
                f"{med('plain.ratio') or 0:.2f}x",
                "",
                "context",
                vals["plain.cpu"],
                scale=1e6,
                detail=ratios("plain") + "; the fallback where they are not installed",
            )
        )
    naive = med("naive.cpu")
    naive_ratio = med("naive.ratio")
    if naive is not None and naive_ratio is not None:
        rows.append(
            Row(
                "naive requests loop (sequential): CPU per request",
                f"{naive * 1e6:.0f} µs",
                f"{naive_ratio:.2f}x",
                "",
                "context",
                vals["naive.cpu"],
                scale=1e6,
                detail=ratios("naive"),
            )
        )
    bare_wall, bare_req = med("bare.wall"), med("bare.requests")
    for prog, label in (
        ("bare", "bare aiohttp loop"),
        ("bare_uv", "bare aiohttp loop, uvloop + orjson"),
        ("daemon", "blink-watcher"),
        ("naive", "naive requests loop"),
    ):
        wall, requests = med(f"{prog}.wall"), med(f"{prog}.requests")
        if wall is None or not requests:
            continue
        per_request = wall / requests
        wall_ratio = ""
        if bare_wall and bare_req:
            wall_ratio = f"{per_request / (bare_wall / bare_req):.2f}x"
        rows.append(
            Row(
                f"{label}: wall time, {requests:,.0f} polls (incl. start-up)",
                f"{wall:.1f} s ({per_request * 1e6:.0f} µs/poll)",
                wall_ratio,
                "",
                "context",
                vals[f"{prog}.wall"],
            )
        )
    per_watch = med("memory.per_watch")
    if per_watch is not None:
        rss_big = med("memory.rss_big") or 0
        rss_small = med("memory.rss_small") or 0
        first = med("memory.first_polls") or 0
        per = vals["memory.per_watch"]
        worst = max(per)
        rows.append(
            Row(
                f"RSS per watch at {sizes.memory_watches:,} watches after a full-speed first round",
                f"{per_watch:.0f} B",
                "",
                "<= 400 B",
                verdict(worst <= 400),
                per,
                detail=(
                    f"min/median/max {min(per):.0f}/{per_watch:.0f}/{worst:.0f} B over "
                    f"{len(per)} runs (the verdict takes the max); RSS {rss_big / 2**20:.1f} MiB "
                    f"vs {rss_small / 2**20:.1f} MiB at 1 watch, read 2 s after the last first "
                    f"poll; first polls of all took {first:.0f} s"
                ),
            )
        )
    rss_resumed = med("memory.rss_resumed")
    rss_one = med("memory.rss_small")
    if rss_resumed is not None and rss_one is not None:
        after = (rss_resumed - rss_one) / (sizes.resume_watches - 1)
        rows.append(
            Row(
                f"RSS per watch after a restart (resumed {sizes.resume_watches:,} from the store)",
                f"{after:.0f} B",
                "",
                "<= 400 B",
                verdict(after <= 400),
                [after],
                detail=(
                    f"RSS {rss_resumed / 2**20:.1f} MiB once every resumed watch was polled "
                    "again; same 1-watch baseline"
                ),
            )
        )
    writes = res.notes.get("writes")
    if writes:
        rows.extend(_write_rows(writes, sizes, verdict))
    p99 = med("latency.p99_s")
    if p99 is not None:
        interval = sizes.latency_interval_s
        # The longest wait the schedule allows between two polls.
        longest = interval * (1 + sizes.latency_jitter)

        def ms(name: str) -> str:
            return f"{(med(name) or 0) * 1e3:.0f}"

        # What the polling alone asks of one core at the measured CPU per poll:
        # near 100% the waves of polls leave no room and lateness grows.
        rate = sizes.latency_watches / interval
        load = f"; polling {rate:,.0f}/s" + (
            f" = {rate * daemon:.0%} of a core at the CPU per poll above" if daemon else ""
        )

        rows.append(
            Row(
                f"terminal -> webhook delivered at {sizes.latency_watches:,} watches, "
                f"interval {interval:g}s, jitter {sizes.latency_jitter:g}: p99",
                f"{p99:.2f} s",
                "",
                f"<= {longest + 0.1:.2f} s",
                verdict(p99 <= longest + 0.1),
                vals["latency.p99_s"],
                detail=(
                    f"p50 {med('latency.p50_s') or 0:.2f} s (ideal {interval / 2:.2f}), "
                    f"max {med('latency.max_s') or 0:.2f} s; terminal->event p50/p99 "
                    f"{ms('latency.produced_p50_s')}/{ms('latency.produced_p99_s')} ms (polls "
                    f"late p50/p99 {ms('latency.late_p50_s')}/{ms('latency.late_p99_s')} ms), "
                    f"event->received p50/p99 {ms('latency.delivered_p50_s')}/"
                    f"{ms('latency.delivered_p99_s')} ms; CPU busy: daemon "
                    f"{(med('latency.daemon_busy') or 0) * 100:.0f}%, sim "
                    f"{(med('latency.sim_busy') or 0) * 100:.0f}%" + load
                ),
            )
        )
    ready = med("resume.ready")
    if ready is not None:
        rows.append(
            Row(
                f"resume {sizes.resume_watches:,} watches: process start -> READY=1",
                f"{ready:.2f} s",
                "",
                "< 1 s",
                verdict(ready < 1.0),
                vals["resume.ready"],
                detail=f"1 watch: {med('resume1.ready') or 0:.2f} s (start-up floor)",
            )
        )
    rows += history.rows(
        res, sizes.resume_watches, sizes.history_reported, sizes.history_kept, verdict
    )
    for key in sorted(k for k in vals if k.startswith("exp.daemon.")):
        tag = key.removeprefix("exp.daemon.")
        d, bb = med(key), med(f"exp.bare.{tag}")
        if d is None or bb is None:
            continue
        rows.append(
            Row(
                f"experiment {tag}: daemon (in-process) / bare loop, CPU per poll",
                f"{d * 1e6:.0f} / {bb * 1e6:.0f} µs",
                f"{d / bb:.2f}x",
                "",
                "experiment",
                vals[key],
                scale=1e6,
                detail=f"vs plain asyncio+json bare loop: {d / bare:.2f}x" if bare else "",
            )
        )
    return rows


def _write_rows(w: dict[str, Any], sizes: Sizes, verdict: Callable[[bool], str]) -> list[Row]:
    executions = int(w["executions"])
    polls = int(w["requests"])
    saves = int(w.get("calls_save_watch", 0))
    # Every execution changes state once before its terminal poll (nothing ->
    # Running); the terminal poll writes the event. Every other poll changed nothing.
    unchanged = polls - 2 * executions
    extra_saves = saves - executions
    return [
        Row(
            f"store transactions per execution ({executions:,} x {sizes.cpu_polls} polls)",
            f"{w['store_transactions'] / executions:.2f}",
            "",
            "a handful",
            verdict(w["store_transactions"] / executions <= 5),
            [],
            detail=(
                f"{w['store_transactions']} commits; queued: {saves} watch saves, "
                f"{w.get('calls_record_event', 0)} events, "
                f"{w.get('calls_update_delivery', 0)} delivery updates"
            ),
        ),
        Row(
            "store writes on polls that changed nothing",
            f"{max(0, extra_saves)} of {unchanged:,}",
            "",
            "0",
            verdict(extra_saves <= 0),
            [],
        ),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (smoke)")
    parser.add_argument("--reps", type=int, help="interleaved rounds (default 3; quick 1)")
    parser.add_argument("--cpu-reps", type=int, help="rounds of the CPU runs (default 5)")
    parser.add_argument("--memory-reps", type=int, help="rounds that measure memory (default 3)")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=KINDS,
        help="leave a measurement out (repeatable)",
    )
    parser.add_argument(
        "--only",
        choices=KINDS,
        help="run this measurement alone (writes no BENCHMARKS.md unless --output says where)",
    )
    parser.add_argument("--latency-interval", type=float, help="poll interval of the latency run")
    parser.add_argument(
        "--latency-jitter",
        type=float,
        help="poll jitter of the latency run (default: the daemon's; bound interval*(1+jitter))",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=330.0,
        help="start no round that would end past this many seconds (default 330)",
    )
    parser.add_argument(
        "--experiments",
        action="store_true",
        help="also measure uvloop/orjson variants (needs both installed; minutes)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the report (default BENCHMARKS.md; --quick: nowhere)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench``."""
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every child is killed and the temp dir removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run(args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
