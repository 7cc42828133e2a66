"""One function per measurement; each starts its processes, measures, and cleans up.

CPU figures are marginal: a run's ``os.wait4`` CPU minus that of the same
program doing (almost) nothing, divided by the difference in requests the
server counted. That takes interpreter start-up, imports and config parsing
out of "CPU per poll" without trusting the process to time itself.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import clients
from bench.harness import (
    BenchError,
    Child,
    NotifySocket,
    Processes,
    get_json,
    python_cmd,
    rss_bytes,
    wait_idle,
    wait_until,
)

API_KEY = clients.API_KEY
# Standard Webhooks secret for the latency run: signing is part of delivering.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"blink-watcher-bench-secret-32byt").decode()


@dataclass(frozen=True, slots=True)
class Run:
    """One measured process: its CPU and wall time, and the requests the server counted."""

    cpu_s: float
    wall_s: float
    requests: int


def marginal_cpu_per_request(big: Run, small: Run) -> float:
    """CPU seconds per request with start-up cost taken out (``small`` does almost nothing)."""
    if big.requests <= small.requests:
        raise BenchError(f"no marginal requests ({big.requests} vs {small.requests})")
    return (big.cpu_s - small.cpu_s) / (big.requests - small.requests)


@dataclass
class Bench:
    """Shared state for one ``python -m bench`` run: temp dir, CPUs, the canned API server."""

    tmp: Path
    procs: Processes
    client_cpu: int
    server_cpu: int
    env: dict[str, str]
    base_url: str = ""
    stats_url: str = ""
    _seq: Iterator[int] = field(default_factory=itertools.count)
    _ids_files: dict[tuple[tuple[str, int], ...], Path] = field(default_factory=dict)

    def tag(self, name: str) -> str:
        """A fresh name: workspaces, state files and logs never collide between runs."""
        return f"{name}{next(self._seq)}"

    def start_server(self) -> None:
        """The canned-response API on the server CPU (see ``bench/server.py``)."""
        server = self.procs.start(
            Child(
                "bench server",
                python_cmd("-m", "bench.server"),
                cpu=self.server_cpu,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr_path=self.tmp / "server.err",
            )
        )
        line = json.loads(server.read_line(30.0))
        self.base_url = line["base_url"]
        self.stats_url = f"http://127.0.0.1:{line['port']}/_bench/stats"

    def served(self, workspace: str) -> int:
        """Execution GETs the canned server answered for ``workspace``."""
        counts: dict[str, int] = get_json(self.stats_url)["workspaces"]
        return counts.get(workspace, 0)

    def ids_file(self, *groups: tuple[str, int]) -> Path:
        """An ``executions_file``: for each (prefix, n), ``{prefix}0`` .. ``{prefix}{n-1}``."""
        path = self._ids_files.get(groups)
        if path is None:
            path = self.tmp / ("ids-" + "-".join(f"{p}{n}" for p, n in groups) + ".txt")
            with path.open("w") as f:
                for prefix, count in groups:
                    f.writelines(f"{prefix}{i}\n" for i in range(count))
            self._ids_files[groups] = path
        return path

    def config(
        self,
        name: str,
        *,
        workspace: str,
        executions: int | Path,
        interval_s: float,
        max_interval_s: float | None = None,
        base_url: str | None = None,
        webhook_url: str | None = None,
        state: Path | None = None,
        jitter: float = 0.0,
    ) -> Path:
        """A daemon config file: unlimited rate, 64 in flight, no jitter, a log sink to a file.

        ``executions`` is a count (``ex-0`` ..) or an ``ids_file``; ``webhook_url``
        replaces the log sink with a signed webhook sink.
        """
        q = json.dumps  # a JSON string is a valid TOML basic string for these values
        ids = executions if isinstance(executions, Path) else self.ids_file(("ex-", executions))
        lines = [
            "[blink]",
            f"base_url = {q(base_url or self.base_url)}",
            f"workspace_id = {q(workspace)}",
            "rate_limit = 0",
            "max_concurrency = 64",
            "[poll]",
            f"interval = {interval_s!r}",
            f"max_interval = {max_interval_s or interval_s!r}",
            f"jitter = {jitter!r}",
            "[watch]",
            f"executions_file = {q(str(ids))}",
            "[state]",
            f"path = {q(str(state or self.tmp / f'{name}.db'))}",
        ]
        if webhook_url is not None:
            lines += [
                "[[sinks]]",
                'type = "webhook"',
                f"url = {q(webhook_url)}",
                'secret_env = "BENCH_WEBHOOK_SECRET"',
            ]
        else:
            lines += ["[[sinks]]", 'type = "log"', f"path = {q(str(self.tmp / f'{name}.jsonl'))}"]
        path = self.tmp / f"{name}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def daemon(self, name: str, config: Path, *, env: dict[str, str] | None = None) -> Child:
        """The real ``blink-watcher run --exit-when-done`` process, on the client CPU."""
        return self.procs.start(
            Child(
                name,
                python_cmd("-m", "watcher", "run", "-c", str(config), "--exit-when-done"),
                cpu=self.client_cpu,
                env=env or self.env,
                stderr_path=self.tmp / f"{name}.err",
            )
        )


def _deadline(requests: int, per_request_s: float = 0.01) -> float:
    # Generous (10x what this machine needs) but bounded: a hang fails, it never stalls.
    return 60.0 + requests * per_request_s


# --------------------------------------------------------------------------- CPU per poll


def bare(
    b: Bench, executions: int, polls: int, *, loop: str = "asyncio", json_lib: str = "json"
) -> Run:
    """The denominator: bare aiohttp GET + ``json.loads``, 64 in flight, same polls."""
    workspace = f"{b.tag('bare')}-d{polls}"
    args = ["-m", "bench.clients", "bare", "--base-url", b.base_url, "--workspace", workspace]
    args += ["--executions", str(executions), "--polls", str(polls), "--concurrency", "64"]
    args += ["--loop", loop, "--json", json_lib]
    child = b.procs.start(
        Child(
            "bare aiohttp loop",
            python_cmd(*args),
            cpu=b.client_cpu,
            env=b.env,
            stderr_path=b.tmp / f"{workspace}.err",
        )
    )
    exited = child.expect_ok(_deadline(executions * polls))
    return Run(exited.cpu_s, exited.wall_s, b.served(workspace))


def naive(b: Bench, executions: int, polls: int) -> Run:
    """Sequential ``requests`` loop, one session, each execution polled until Completed."""
    workspace = f"{b.tag('naive')}-d{polls}"
    child = b.procs.start(
        Child(
            "naive requests loop",
            python_cmd(
                "-m",
                "bench.clients",
                "naive",
                "--base-url",
                b.base_url,
                "--workspace",
                workspace,
                "--executions",
                str(executions),
                "--polls",
                str(polls),
            ),
            cpu=b.client_cpu,
            env=b.env,
            stderr_path=b.tmp / f"{workspace}.err",
        )
    )
    exited = child.expect_ok(_deadline(executions * polls))
    return Run(exited.cpu_s, exited.wall_s, b.served(workspace))


# The daemon as it runs without its optional speed-ups (uvloop, orjson).
PLAIN_ENV = {"BLINK_WATCHER_EVENT_LOOP": "asyncio", "BLINK_WATCHER_PURE_JSON": "1"}


def daemon(b: Bench, executions: int, polls: int, *, plain: bool = False) -> Run:
    """The real daemon watching ``executions`` that each end Completed on poll ``polls``.

    ``plain``: on asyncio's own loop with stdlib json, as where uvloop and
    orjson are not installed.
    """
    name = b.tag("daemon")
    workspace = f"{name}-d{polls}"
    config = b.config(name, workspace=workspace, executions=executions, interval_s=0.001)
    child = b.daemon(name, config, env={**b.env, **PLAIN_ENV} if plain else None)
    exited = child.expect_ok(_deadline(executions * polls))
    results = (b.tmp / f"{name}.jsonl").read_text().splitlines()
    if len(results) != executions:
        raise BenchError(f"{name}: {len(results)} events in the log sink, expected {executions}")
    return Run(exited.cpu_s, exited.wall_s, b.served(workspace))


# ------------------------------------------------------------------------------- memory


@dataclass(frozen=True, slots=True)
class Memory:
    """RSS of a daemon settled after the first poll of every watch."""

    rss: int
    hwm: int
    first_polls_s: float


def memory(b: Bench, watches: int, settle_s: float = 2.0) -> Memory:
    """RSS ``settle_s`` after the server answered the first poll of the last watch.

    Full speed (no rate limit, 64 in flight), as a user's first round runs,
    and read at a fixed moment rather than once the process has gone idle:
    whatever the writer still holds then, or held at its peak and never gave
    back, counts.
    """
    name = b.tag("mem")
    workspace = f"{name}-d0"  # Running forever
    # A long interval: after its first poll every watch sleeps in the queue.
    config = b.config(name, workspace=workspace, executions=watches, interval_s=3600.0)
    child = b.daemon(name, config)
    try:
        took = wait_until(
            f"{watches} first polls",
            lambda: child.check_alive() and b.served(workspace) >= watches,
            _deadline(watches, 0.005),
            every_s=0.05,
        )
        time.sleep(settle_s)
        child.check_alive()
        rss, hwm = rss_bytes(child.pid)
    finally:
        child.signal(signal.SIGTERM)
    child.expect_ok(60.0)
    return Memory(rss, hwm, took)


# ------------------------------------------------------------------------------- resume


def build_resume_state(b: Bench, watches: int, workspace: str, path: Path | None = None) -> Path:
    """A state file holding ``watches`` watches in progress, as the daemon would leave it.

    The schema comes from the daemon's own ``Store`` (so it cannot drift); the
    rows are what ``Scheduler`` saves after a first poll answered Running.
    """
    from watcher.models import Execution
    from watcher.store import Store

    path = path or b.tmp / f"resume-{watches}.db"

    async def create() -> None:
        async with Store(path):
            pass

    asyncio.run(create())
    body = get_json(f"{b.base_url}/workspace/template-d0/executions/ex-0")
    record = json.dumps(Execution.from_api(body).to_record())
    now = time.time()
    rows = ((workspace, f"ex-{i}", "Running", 1, now, now, record) for i in range(watches))
    db = sqlite3.connect(path)
    try:
        with db:
            db.executemany("INSERT INTO watches VALUES (?, ?, ?, ?, ?, ?, ?, 'config')", rows)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return path


@dataclass(frozen=True, slots=True)
class Resume:
    """Start-up to READY from a state file; optionally the RSS once all are polled again."""

    ready_s: float
    resumed: int
    rss: int | None = None
    rss_ready: int = 0  # VmRSS read as READY=1 arrived: what start-up left behind
    hwm_ready: int = 0  # VmHWM then: the start-up peak


def resume(
    b: Bench,
    template: Path,
    watches: int,
    workspace: str,
    *,
    measure_rss: bool = False,
    quiet_s: float = 1.0,
) -> Resume:
    """Seconds from process start to ``READY=1`` with ``watches`` watches in the store.

    With ``measure_rss``, the daemon then runs on until every resumed watch has
    been polled once and it is idle, and its RSS is read: memory after a
    restart, which is where a systemd service spends most of its life.
    """
    name = b.tag("resume")
    state = b.tmp / f"{name}.db"
    shutil.copyfile(template, state)  # each run starts from the same pristine file
    config = b.config(name, workspace=workspace, executions=watches, interval_s=3600.0, state=state)
    served_before = b.served(workspace)
    rss: int | None = None
    with NotifySocket(b.tmp / f"{name}.notify") as notify:
        env = {**b.env, "NOTIFY_SOCKET": str(notify.path)}
        child = b.daemon(name, config, env=env)
        try:
            ready_at = notify.wait_for(b"READY=1", child, 60.0)
            rss_ready, hwm_ready = rss_bytes(child.pid)
            if measure_rss:
                wait_until(
                    f"{watches} polls after resuming",
                    lambda: child.check_alive() and b.served(workspace) - served_before >= watches,
                    _deadline(watches, 0.005),
                    every_s=0.25,
                )
                wait_idle(child, quiet_s=quiet_s, timeout_s=120.0)
                rss = rss_bytes(child.pid)[0]
        finally:
            child.signal(signal.SIGTERM)
        child.expect_ok(60.0)
    started = _started_line(b.tmp / f"{name}.err")
    return Resume(
        ready_at - child.started_at,
        int(started.get("resumed", -1)),
        rss,
        rss_ready,
        hwm_ready,
    )


def _started_line(stderr: Path) -> dict[str, Any]:
    for line in stderr.read_text(errors="replace").splitlines():
        if '"service.started"' in line:
            parsed: dict[str, Any] = json.loads(line)
            return parsed
    raise BenchError(f"no service.started line in {stderr}")


# ------------------------------------------------------------------------------ latency


@dataclass(frozen=True, slots=True)
class Latency:
    """Terminal -> delivered, and its two halves: terminal -> produced -> delivered."""

    p50_s: float
    p99_s: float
    max_s: float
    count: int
    produced_p50_s: float
    produced_p99_s: float
    delivered_p50_s: float
    delivered_p99_s: float
    late_p50_s: float  # the poll that saw it terminal, behind its due time (+ storing)
    late_p99_s: float
    daemon_busy: float  # CPU seconds per wall second over the run
    sim_busy: float


def latency(
    b: Bench, watches: int, finishing: int, interval_s: float, jitter: float = 0.0
) -> Latency:
    """Terminal -> webhook received at ``watches`` watches polled every ``interval_s``.

    Every tenth (``watches // finishing``-th) execution follows a timeline
    script that turns Completed at an offset from its first GET spread evenly
    over (0, 1) intervals, so the moment it becomes terminal falls evenly
    across the gap between its first and second poll: the ideal lag is uniform
    over (0, interval), p99 = 0.99 interval. The others answer Running
    throughout, so the daemon carries the polling load of all ``watches``
    while the sample finishes, and the finishing ones sit all through each
    wave of polls rather than at its start.
    """
    from watcher.models import event_id_for

    name = b.tag("latency")
    workspace = f"ws-{name}"
    fields = {"playbook_name": "Isolate compromised host"}
    step = max(1, watches // finishing)
    sample = [f"ex-{i}" for i in range(0, watches, step)][:finishing]
    # Offsets in shuffled order: where an execution sits in a wave of polls
    # must not predict when it turns terminal, or early-in-wave (least
    # delayed) polls would always get the longest waits and hide the queueing.
    slots = list(range(len(sample)))
    random.Random(8).shuffle(slots)
    scripts: list[dict[str, Any]] = [
        {"workspace_id": workspace, "id_prefix": "ex-", "count": watches, "steps": ["Running"]}
    ]
    scripts[0]["fields"] = fields
    offsets = {
        execution_id: interval_s * (slot + 0.5) / len(sample)
        for slot, execution_id in zip(slots, sample, strict=True)
    }
    scripts += [  # an exact script wins over the bulk range
        {
            "workspace_id": workspace,
            "execution_id": execution_id,
            "timeline": [[0, "Running"], [offset, "Completed"]],
            "fields": fields,
        }
        for execution_id, offset in offsets.items()
    ]
    scripts_path = b.tmp / f"{name}-scripts.json"
    scripts_path.write_text(json.dumps(scripts))
    sim = b.procs.start(
        Child(
            "simulator",
            python_cmd("-m", "watcher.sim", "--scripts", str(scripts_path)),
            cpu=b.server_cpu,
            env=b.env,
            stdout=subprocess.PIPE,
            stderr_path=b.tmp / f"{name}-sim.err",
        )
    )
    stderr = b.tmp / f"{name}.err"
    try:
        line = json.loads(sim.read_line(60.0))
        stats_url = f"http://127.0.0.1:{line['port']}/_sim/stats"
        config = b.config(
            name,
            workspace=workspace,
            executions=watches,
            interval_s=interval_s,
            base_url=line["base_url"],
            webhook_url=f"{line['hooks_base']}/bench",
            jitter=jitter,
        )
        child = b.daemon(name, config)
        try:
            deadline = _deadline(watches, 0.01) + 3 * interval_s
            # The daemon's own log says when the sample's events exist (cheap to
            # read); only then ask the busy simulator for its bulky stats.
            took = wait_until(
                "the sample's events",
                lambda: child.check_alive() and len(_produced_at(stderr)) >= len(sample),
                deadline,
                every_s=0.25,
            )
            wait_until(
                "the sample's deliveries",
                lambda: len(_delivered(get_json(stats_url, 30.0))) >= len(sample),
                deadline - took,
                every_s=0.5,
            )
        finally:
            child.signal(signal.SIGTERM)
        daemon_exit = child.expect_ok(60.0)
        stats = get_json(stats_url, timeout_s=60.0)
    finally:
        sim.kill()
    sim_exit = sim.exited
    received = _delivered(stats)
    produced = _produced_at(stderr)
    lags, to_produce, to_deliver, late = [], [], [], []
    samples = []
    for execution_id in sample:
        terminal = stats["terminal_at"].get(f"{workspace}/{execution_id}")
        got = received.get(event_id_for((workspace, execution_id), "execution.finished"))
        made = produced.get(execution_id)
        if terminal is None or got is None or made is None:
            raise BenchError(f"{name}: {execution_id} has no terminal time, event or delivery")
        lags.append(got - terminal)
        to_produce.append(made - terminal)
        to_deliver.append(got - made)
        # Its first GET was at terminal - offset, so its second poll was due an
        # interval later; offsets are under one interval, so that poll saw it.
        first_at = terminal - offsets[execution_id]
        late.append(made - (first_at + interval_s))
        samples.append([execution_id, first_at, offsets[execution_id], terminal, made, got])
    # Kept beside the run's other files for anyone digging into a result.
    (b.tmp / f"{name}-samples.json").write_text(json.dumps(samples))
    return Latency(
        p50_s=percentile(lags, 50),
        p99_s=percentile(lags, 99),
        max_s=max(lags),
        count=len(lags),
        produced_p50_s=percentile(to_produce, 50),
        produced_p99_s=percentile(to_produce, 99),
        delivered_p50_s=percentile(to_deliver, 50),
        delivered_p99_s=percentile(to_deliver, 99),
        late_p50_s=percentile(late, 50),
        late_p99_s=percentile(late, 99),
        daemon_busy=daemon_exit.cpu_s / daemon_exit.wall_s,
        sim_busy=0.0 if sim_exit is None else sim_exit.cpu_s / sim_exit.wall_s,
    )


def _delivered(stats: dict[str, Any]) -> dict[str, float]:
    """event_id -> when the receiver first got it with a 2xx answer."""
    received: dict[str, float] = {}
    for d in stats["deliveries"]:
        if d["status"] is not None and 200 <= d["status"] < 300 and d["event_id"]:
            received.setdefault(d["event_id"], d["received_at"])
    return received


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 10,000 is the 9,900th value)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def _produced_at(stderr: Path) -> dict[str, float]:
    # The daemon logs event.produced (with an ISO timestamp) right after the
    # event is stored and handed to the outbox: the split between detecting
    # and delivering. Same machine, same wall clock as the simulator.
    out: dict[str, float] = {}
    for line in stderr.read_text(errors="replace").splitlines():
        if '"event.produced"' in line:
            entry = json.loads(line)
            stamp = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
            out[entry["execution_id"]] = stamp.timestamp()
    return out


# ---------------------------------------------------------------------- in-process runs


@dataclass(frozen=True, slots=True)
class InProc:
    """What ``bench/inproc.py`` reports about one in-process daemon run."""

    run: Run
    report: dict[str, Any]


def inproc(
    b: Bench,
    executions: int,
    polls: int,
    *,
    loop: str = "asyncio",
    json_lib: str = "json",
    profile: Path | None = None,
) -> InProc:
    """The daemon's ``Service`` run inside a bench process (counters, experiments, cProfile)."""
    name = b.tag("inproc")
    workspace = f"{name}-d{polls}"
    config = b.config(name, workspace=workspace, executions=executions, interval_s=0.001)
    args = ["-m", "bench.inproc", "-c", str(config), "--loop", loop, "--json", json_lib]
    if profile is not None:
        args += ["--profile", str(profile)]
    child = b.procs.start(
        Child(
            name,
            python_cmd(*args),
            cpu=b.client_cpu,
            env=b.env,
            stdout=subprocess.PIPE,
            stderr_path=b.tmp / f"{name}.err",
        )
    )
    report = json.loads(child.read_line(_deadline(executions * polls)))
    exited = child.expect_ok(30.0)
    return InProc(Run(exited.cpu_s, exited.wall_s, b.served(workspace)), report)
