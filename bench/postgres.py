"""The SPEC section 8 figures that apply with the PostgreSQL store, beside SQLite in the same run.

``python -m bench.postgres`` (``make bench`` runs it after ``python -m bench``)
starts a throwaway PostgreSQL server from the system's binaries, as the tests
do, and measures the real daemon against the canned API server:

- CPU per poll and polls per second of one replica on PostgreSQL against the
  same daemon on SQLite (marginal: a 1-execution run takes start-up out), and
  the database server's own CPU per poll;
- rows written to ``watches`` while every watch is polled and nothing changes
  (none may be), with the lease renewed every second meanwhile;
- resume of 100,000 watches from the database to READY, and RSS per watch
  once all of them were polled again;
- the database's size per watch in progress and per execution reported.

It writes its section of BENCHMARKS.md (or ``--output``), in place of an
earlier run's.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import scenarios as sc
from bench.harness import (
    BenchError,
    NotifySocket,
    Processes,
    cpu_ticks,
    rss_bytes,
    wait_idle,
    wait_until,
)
from tests.pg import PgServer, bindir, running_server
from watcher.replica import LISTED, list_digest

REPO = Path(__file__).resolve().parent.parent
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
RUNNING = "pgbench-d0"  # Running forever on the canned server
SECTION = "## PostgreSQL store"


@dataclass
class Pg:
    """The bench run's database server and the canned API's bench state."""

    server: PgServer
    b: sc.Bench

    def psql(self, sql: str, db: str) -> str:
        return self.server.psql(sql, db)

    def fresh(self, template: str | None = None) -> str:
        """A new database (a copy of ``template``, made in one statement)."""
        name = self.b.tag("bench_")
        extra = f" TEMPLATE {template}" if template else ""
        self.server.psql(f"CREATE DATABASE {name}{extra}")
        return name

    def on(self, config: Path, db: str, lease_s: float = 30.0) -> Path:
        """``config`` moved from its SQLite file to database ``db``."""
        lines = config.read_text().splitlines()
        at = lines.index("[state]") + 1
        lines[at] = f'url = "{self.server.url(db)}"\nlease = {lease_s!r}'
        config.write_text("\n".join(lines) + "\n")
        return config

    def server_ticks(self) -> int:
        """CPU ticks the PostgreSQL server has used so far, ended backends included.

        A backend lives as long as its connection: when it exits, the
        postmaster reaps it and its CPU moves to the postmaster's cutime and
        cstime, so live processes plus those two count everything.
        """
        postmaster = int((self.server.data / "postmaster.pid").read_text().split()[0])
        stat = Path(f"/proc/{postmaster}/stat").read_text()
        rest = stat[stat.rindex(")") + 2 :].split()
        total = int(rest[13]) + int(rest[14])  # cutime, cstime: reaped backends
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    total += cpu_ticks(int(entry.name))
            except (OSError, ValueError):
                continue
        return total


def daemon_run(pg: Pg, executions: int, polls: int, db: str | None) -> tuple[sc.Run, float]:
    """``sc.daemon`` on SQLite (``db`` None) or on database ``db``; with the server's CPU."""
    b = pg.b
    name = b.tag("pgcpu")
    workspace = f"{name}-d{polls}"
    config = b.config(name, workspace=workspace, executions=executions, interval_s=0.001)
    if db is not None:
        pg.on(config, db)
    ticks = pg.server_ticks()
    exited = b.daemon(name, config).expect_ok(60.0 + executions * polls * 0.01)
    server_s = (pg.server_ticks() - ticks) * TICK_S
    results = (b.tmp / f"{name}.jsonl").read_text().splitlines()
    if len(results) != executions:
        raise BenchError(f"{name}: {len(results)} events, expected {executions}")
    return sc.Run(exited.cpu_s, exited.wall_s, b.served(workspace)), server_s


def cpu(pg: Pg, executions: int, polls: int, rounds: int) -> tuple[dict[str, list[float]], str]:
    """Per-poll figures of each round; and a database the big runs left behind."""
    out: dict[str, list[float]] = {}
    big_db = ""
    for r in range(rounds):
        big_db = pg.fresh()
        runs: list[tuple[str, Callable[[], tuple[sc.Run, float]]]] = [
            ("sqlite", lambda: daemon_run(pg, executions, polls, None)),
            ("sqlite-1", lambda: daemon_run(pg, 1, polls, None)),
            ("pg", lambda db=big_db: daemon_run(pg, executions, polls, db)),
            ("pg-1", lambda: daemon_run(pg, 1, polls, pg.fresh())),
        ]
        k = r % len(runs)
        got = {name: fn() for name, fn in runs[k:] + runs[:k]}
        for prog in ("sqlite", "pg"):
            big, small = got[prog][0], got[f"{prog}-1"][0]
            add(out, f"{prog}.cpu", sc.marginal_cpu_per_request(big, small))
            add(out, f"{prog}.rate", big.requests / big.wall_s)
            add(out, f"{prog}.server", got[prog][1] / big.requests)
        out.setdefault("ratio", []).append(out["pg.cpu"][-1] / out["sqlite.cpu"][-1])
        log(f"cpu round {r + 1}: sqlite {out['sqlite.cpu'][-1] * 1e6:.0f} us, "
            f"pg {out['pg.cpu'][-1] * 1e6:.0f} us per poll")  # fmt: skip
    return out, big_db


def add(into: dict[str, list[float]], key: str, value: float) -> None:
    into.setdefault(key, []).append(value)


def unchanged_writes(pg: Pg, watches: int, window_s: float) -> dict[str, float]:
    """Rows written to ``watches`` while all are polled again and again, nothing changing."""
    b = pg.b
    db = pg.fresh()
    name = b.tag("pgwrites")
    config = b.config(name, workspace=RUNNING, executions=watches, interval_s=0.05)
    pg.on(config, db, lease_s=3.0)  # renewed every second: the renewals are in the window
    served = b.served(RUNNING)
    child = b.daemon(name, config)
    try:
        wait_until(
            "every watch polled once",
            lambda: child.check_alive() and b.served(RUNNING) - served >= watches,
            120.0,
        )
        time.sleep(1.0)  # the first answers' state changes are stored
        mark = int(pg.psql("SELECT txid_current()", db))
        renewed = pg.psql("SELECT renewed_at FROM replicas", db)
        before = b.served(RUNNING)
        time.sleep(window_s)
        polls = b.served(RUNNING) - before
        written = int(
            pg.psql(f"SELECT count(*) FROM watches WHERE xmin::text::bigint > {mark}", db)
        )
        renewed_after = pg.psql("SELECT renewed_at FROM replicas", db)
    finally:
        child.signal(signal.SIGTERM)
    child.expect_ok(60.0)
    return {
        "polls": polls,
        "watch_rows_written": written,
        "renewed": float(renewed_after != renewed),
        "window_s": window_s,
    }


def resume_template(pg: Pg, watches: int) -> str:
    """A database holding ``watches`` watches in progress, as a replica leaves them."""
    from watcher.models import Execution

    db = pg.fresh()
    store_schema(pg, db)
    body = sc.get_json(f"{pg.b.base_url}/workspace/template-d0/executions/ex-0")
    record = sc.json.dumps(Execution.from_api(body).to_record()).replace("'", "''")
    now = time.time()
    pg.psql(
        "INSERT INTO watches (workspace_id, execution_id, state, polls, first_seen_at, "
        f"changed_at, last_response) SELECT '{RUNNING}', 'ex-' || i, 'Running', 1, {now}, "
        f"{now}, '{record}' FROM generate_series(0, {watches - 1}) AS i",
        db,
    )
    # As a replica leaves it: the digest of the execution list it stored.
    ids = [(RUNNING, f"ex-{i}") for i in range(watches)]
    pg.psql(f"INSERT INTO settings VALUES ('{LISTED}', '{list_digest(ids)}')", db)
    pg.psql("VACUUM ANALYZE watches", db)
    return db


def store_schema(pg: Pg, db: str) -> None:
    """The daemon's own schema (so it cannot drift), made by its store."""
    import asyncio

    from watcher.store.postgres import PostgresStore

    async def create() -> None:
        async with PostgresStore(pg.server.url(db)):
            pass

    asyncio.run(create())


def resume(pg: Pg, template: str, watches: int, *, measure_rss: bool) -> dict[str, float]:
    b = pg.b
    db = pg.fresh(template)
    name = b.tag("pgresume")
    config = b.config(name, workspace=RUNNING, executions=watches, interval_s=3600.0)
    pg.on(config, db)
    served = b.served(RUNNING)
    out: dict[str, float] = {}
    with NotifySocket(b.tmp / f"{name}.notify") as notify:
        child = b.daemon(name, config, env={**b.env, "NOTIFY_SOCKET": str(notify.path)})
        try:
            out["ready_s"] = notify.wait_for(b"READY=1", child, 120.0) - child.started_at
            wait_until(
                f"{watches} polls after resuming",
                lambda: child.check_alive() and b.served(RUNNING) - served >= watches,
                120.0,
                every_s=0.05,
            )
            out["all_polled_s"] = time.monotonic() - child.started_at
            if measure_rss:
                wait_idle(child, quiet_s=2.0, timeout_s=120.0)
                out["rss"] = rss_bytes(child.pid)[0]
        finally:
            child.signal(signal.SIGTERM)
        try:
            child.expect_ok(60.0)
        except BenchError:
            tail = (b.tmp / f"{name}.err").read_text(errors="replace")[-3000:]
            raise BenchError(f"{name} did not stop; its last diagnostics:\n{tail}") from None
    return out


def sizes(pg: Pg, template: str, watches: int, reported_db: str) -> dict[str, float]:
    in_progress = int(pg.psql("SELECT pg_total_relation_size('watches')", template))
    reported = int(pg.psql("SELECT count(*) FROM reported", reported_db))
    history = int(
        pg.psql(
            "SELECT pg_total_relation_size('events') + pg_total_relation_size('reported') "
            "+ pg_total_relation_size('deliveries')",
            reported_db,
        )
    )
    return {"per_watch": in_progress / watches, "per_reported": history / max(reported, 1)}


def log(text: str) -> None:
    print(f"[bench.postgres] {text}", file=sys.stderr, flush=True)


def report(
    cpu_runs: dict[str, list[float]],
    writes: dict[str, float],
    resumes: list[dict[str, float]],
    rss_small: float,
    size: dict[str, float],
    watches: int,
    server_version: str,
) -> str:
    med = statistics.median
    ready = sorted(r["ready_s"] for r in resumes)
    polled = sorted(r["all_polled_s"] for r in resumes)
    rss_big = next(r["rss"] for r in resumes if "rss" in r)
    per_watch_rss = (rss_big - rss_small) / (watches - 1)
    rows = [
        ("CPU per poll, one replica on PostgreSQL",
         f"{med(cpu_runs['pg.cpu']) * 1e6:.0f} µs vs {med(cpu_runs['sqlite.cpu']) * 1e6:.0f} µs "
         f"on SQLite ({med(cpu_runs['ratio']):.2f}x; rounds "
         f"{min(cpu_runs['ratio']):.2f}-{max(cpu_runs['ratio']):.2f})",
         "<= 1.2x the bare loop: see its SQLite row above"),
        ("polls per second, one replica (2,000 executions, 64 in flight)",
         f"{med(cpu_runs['pg.rate']):,.0f}/s vs {med(cpu_runs['sqlite.rate']):,.0f}/s on SQLite",
         "context"),
        ("the database server's CPU per poll",
         f"{med(cpu_runs['pg.server']) * 1e6:.0f} µs", "context"),
        (f"rows written to watches over {writes['polls']:,.0f} unchanged polls",
         f"{writes['watch_rows_written']:.0f}", "0"),
        ("lease renewal cost per watch",
         "0 rows: one replicas row per renewal, whatever a replica holds"
         + (" (renewed during the window)" if writes["renewed"] else ""), "one statement"),
        (f"resume {watches:,} watches from PostgreSQL to READY",
         f"{med(ready):.2f} s ({', '.join(f'{r:.2f}' for r in ready)})", "< 1 s"),
        (f"resume {watches:,}: start to every watch polled again",
         f"{med(polled):.2f} s ({', '.join(f'{r:.2f}' for r in polled)})", "context"),
        (f"RSS per watch after resuming {watches:,}", f"{per_watch_rss:.0f} B", "<= 400 B"),
        ("database size per watch in progress", f"{size['per_watch']:.0f} B", "context"),
        ("database size per execution reported (event, outbox, reported row)",
         f"{size['per_reported']:,.0f} B", "context"),
    ]  # fmt: skip
    lines = [
        "",
        SECTION,
        "",
        f"Generated by `python -m bench.postgres` against {server_version} on this machine "
        "(a throwaway server, fsync off as in the tests: durability costs are the disk's).",
        "",
        "| figure | result | target |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "",
        "p99 terminal -> delivered is not repeated here: the path from a poll to a "
        "delivery is the same code, and the one store transaction per event is the only "
        "difference (about a millisecond on loopback).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.postgres", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke)")
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    if bindir() is None:
        print("bench.postgres: PostgreSQL is not installed: skipped", file=sys.stderr)
        return 0
    watches = 300 if args.quick else 100_000
    executions, polls, rounds = (40, 3, 1) if args.quick else (2000, 10, 3)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = {
        **os.environ,
        "BLINK_API_KEY": sc.API_KEY,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.pop("NOTIFY_SOCKET", None)
    with (
        tempfile.TemporaryDirectory(prefix="blink-bench-pg-") as tmp,
        Processes() as procs,
        running_server() as server,
    ):
        os.chmod(tmp, 0o755)
        from bench.harness import cpus

        client_cpu, server_cpu = cpus()
        b = sc.Bench(Path(tmp), procs, client_cpu, server_cpu, env)
        b.start_server()
        pg = Pg(server, b)
        version = server.psql("SHOW server_version").split()[0]
        log("CPU per poll, PostgreSQL vs SQLite")
        cpu_runs, reported_db = cpu(pg, executions, polls, rounds)
        log("writes on unchanged polls")
        writes = unchanged_writes(pg, min(watches, 2000), 2.0 if args.quick else 5.0)
        log(f"resume {watches:,}")
        template = resume_template(pg, watches)
        small = resume_template(pg, 1)
        resumes = [resume(pg, template, watches, measure_rss=r == 0) for r in range(3)]
        rss_small = resume(pg, small, 1, measure_rss=True)["rss"]
        size = sizes(pg, template, watches, reported_db)
    text = report(cpu_runs, writes, resumes, rss_small, size, watches, f"PostgreSQL {version}")
    print(text)
    if not args.quick:
        # In place of the section an earlier run wrote, else at the end.
        before = args.output.read_text() if args.output.exists() else ""
        kept = before.split(SECTION, 1)[0].rstrip("\n")
        args.output.write_text(kept + "\n" + text)
        log(f"wrote the PostgreSQL section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
