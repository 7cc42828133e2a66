"""The shipped unit's logs in a real journal: priorities, fields, whole entries, documented recipes.

One systemd with journald, booted once for the module: the daemon watches
executions that end every way there is (and a 300 KB one), then each test
reads the journal. The recipes in README.md and systemd/README.md are run as
written, inside the namespace, where ``journalctl`` reads that journal.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.systemd.harness import (
    CONF_DIR_INSIDE,
    REPO,
    UNIT,
    SimulatedBlink,
    SystemdNamespace,
    WatcherService,
    free_port,
    install_service,
    run_simulator,
)
from tests.systemd.journald import (
    FollowedCommand,
    entries,
    install_journald,
    journald_missing,
    log_to_journal,
    text_of,
    wait_for_lines,
)
from tests.waiting import wait_for

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(240)]

# The execution the docs' one-execution recipe names (systemd/README.md's config example).
DOCUMENTED_ID = "01J9Z8Y7X6W5V4T3S2R1Q0P9N8"
BIG_DETAIL_BYTES = 300_000
SCRIPTS = [
    {"execution_id": DOCUMENTED_ID, "steps": ["Running", "!503", "Failed"]},
    {"execution_id": "ok-1", "steps": ["Running", "Completed"]},
    {"execution_id": "cancel-1", "steps": ["Running", "Cancelled"]},
    {"execution_id": "odd-1", "steps": ["Weird-New-State", "Completed"]},
    {"execution_id": "auth-1", "steps": ["!401", "Completed"]},
    {"execution_id": "invalid-1", "steps": ["!400"]},
    {
        "execution_id": "big-1",
        "steps": ["Running", "Completed"],
        "fields": {"error_details": {"Collect evidence": "x" * BIG_DETAIL_BYTES}},
    },
    # Watched only once the follow test adds it.
    {"execution_id": "late-1", "steps": ["Running", "Completed"]},
]
MISSING_ID = "missing-1"  # not scripted: 404 until not_found_grace
# (execution, ending event, state, PRIORITY)
ENDINGS = {
    DOCUMENTED_ID: ("execution.finished", "Failed", "4"),
    "ok-1": ("execution.finished", "Completed", "6"),
    "cancel-1": ("execution.finished", "Cancelled", "4"),
    "odd-1": ("execution.finished", "Completed", "6"),
    "auth-1": ("execution.finished", "Completed", "6"),
    "invalid-1": ("execution.invalid", None, "4"),
    "big-1": ("execution.finished", "Completed", "6"),
    MISSING_ID: ("execution.not_found", None, "4"),
}
CONFIG_EXTRAS = {
    # Every 503 is a poll.failed warning, not a retry inside one poll.
    "extra_blink_keys": "retry_attempts = 1",
    "extra_tables": '[logging]\nlevel = "debug"\n',
}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class JournalRun:
    ns: SystemdNamespace
    service: WatcherService
    venv: Path

    def bodies(self) -> dict[str, bytes]:
        """Every event the daemon produced, as stored: the exact bytes each sink delivers."""
        path = self.service.state_file
        if not path.exists():
            return {}
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT execution_id, body FROM events").fetchall()
        return {execution_id: bytes(body) for execution_id, body in rows}

    def delivered_to_the_log_sink(self) -> set[str]:
        path = self.service.state_file
        if not path.exists():
            return set()
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT e.execution_id FROM deliveries d JOIN events e USING (event_id)"
                " WHERE d.sink = 'log:stdout' AND d.status = 'delivered'"
            ).fetchall()
        return {execution_id for (execution_id,) in rows}

    def daemon_entries(self) -> list[dict[str, object]]:
        return entries(self.ns, f"_SYSTEMD_UNIT={UNIT}")

    def run(self, command: str) -> str:
        """A shell command inside the namespace, as an operator would type it on the host."""
        return self.ns.run("sh", "-c", command)


@pytest.fixture(scope="module")
def journal_run(
    systemd_host: None, daemon_venv: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JournalRun]:
    reason = journald_missing()
    if reason:
        pytest.skip(f"journald in the namespace: {reason}")
    scripts = tmp_path_factory.mktemp("journal") / "sim-scripts.json"
    scripts.write_text(json.dumps([{"workspace_id": "ws", **s} for s in SCRIPTS]))
    scratch = Path(tempfile.mkdtemp(prefix="blink-watcher-systemd-"))
    try:
        with run_simulator(scripts) as blink:
            ns = SystemdNamespace(scratch)
            try:
                yield _boot(ns, daemon_venv, blink)
            finally:
                ns.shutdown()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _boot(ns: SystemdNamespace, venv: Path, blink: SimulatedBlink) -> JournalRun:
    install_journald(ns)
    install_service(ns, venv, UNIT, UNIT, output="journal")
    service = WatcherService(ns, blink, executions=[*ENDINGS], server_port=free_port())
    service.write_config(**CONFIG_EXTRAS)
    ns.boot()
    log_to_journal(ns)
    service.start()
    run = JournalRun(ns, service, venv)

    def every_ending_in_the_journal() -> bool:
        # The log sink marks a delivery done once the journal took the entry;
        # journald files it a moment later. Exactness is for the tests to check.
        if not set(ENDINGS) <= run.delivered_to_the_log_sink():
            return False
        starts = {text_of(e.get("MESSAGE"))[:200] for e in run.daemon_entries()}
        return all(body.decode()[:200] in starts for body in run.bodies().values())

    wait_for(
        every_ending_in_the_journal,
        timeout_s=60,
        what="every execution's ending event in the journal",
        diagnostics=ns.diagnostics,
    )
    return run


# --- what the journal holds ----------------------------------------------------------------


def test_every_line_is_a_native_entry_with_its_fields(journal_run: JournalRun) -> None:
    daemon = journal_run.daemon_entries()

    assert daemon
    # Native protocol, none through the stdout/stderr stream (nothing fell back).
    assert {e["_TRANSPORT"] for e in daemon} == {"journal"}, [
        e.get("MESSAGE") for e in daemon if e["_TRANSPORT"] != "journal"
    ]
    for entry in daemon:
        line = json.loads(text_of(entry["MESSAGE"]))
        assert entry["SYSLOG_IDENTIFIER"] == "blink-watcher"
        assert entry["BLINK_WATCHER_EVENT"] == line["event"]
        if "execution_id" in line:
            assert entry["EXECUTION_ID"] == line["execution_id"]
            assert entry["WORKSPACE_ID"] == line["workspace_id"]
        if isinstance(line.get("state"), str):
            assert entry["STATE"] == line["state"]


def test_diagnostics_have_the_priority_of_their_level(journal_run: JournalRun) -> None:
    priorities: dict[str, set[str]] = {}
    for entry in journal_run.daemon_entries():
        line = json.loads(text_of(entry["MESSAGE"]))
        if "level" in line:
            priorities.setdefault(str(line["level"]), set()).add(str(entry["PRIORITY"]))

    assert priorities["debug"] == {"7"}
    assert priorities["info"] == {"6"}
    assert priorities["warning"] == {"4"}  # poll.failed, execution.unknown_state, ...
    assert priorities["error"] == {"3"}  # api.auth_failed


def test_events_are_info_when_completed_and_warning_for_every_other_ending(
    journal_run: JournalRun,
) -> None:
    bodies = journal_run.bodies()
    seen = {}
    for entry in journal_run.daemon_entries():
        message = text_of(entry["MESSAGE"]).encode()
        for execution_id, body in bodies.items():
            if message == body:
                seen[execution_id] = (
                    entry["BLINK_WATCHER_EVENT"],
                    entry.get("STATE"),
                    entry["PRIORITY"],
                )

    assert {k: seen[k] for k in ENDINGS} == ENDINGS


def test_a_diagnostic_about_a_state_carries_it(journal_run: JournalRun) -> None:
    [unknown] = entries(
        journal_run.ns, f"_SYSTEMD_UNIT={UNIT}", "BLINK_WATCHER_EVENT=execution.unknown_state"
    )

    assert (unknown["EXECUTION_ID"], unknown["STATE"], unknown["PRIORITY"]) == (
        "odd-1",
        "Weird-New-State",
        "4",
    )


def test_a_300_kb_event_arrives_whole(journal_run: JournalRun) -> None:
    body = journal_run.bodies()["big-1"]
    assert len(body) > BIG_DETAIL_BYTES

    shown = journal_run.run(
        "journalctl -u blink-watcher -o cat"
        " EXECUTION_ID=big-1 BLINK_WATCHER_EVENT=execution.finished"
    )

    # One line, the stored bytes exactly: not cut at journald's stream line limit (48 KB).
    assert shown.encode() == body + b"\n"


def test_plain_unit_matches_also_show_systemd_s_own_lines(journal_run: JournalRun) -> None:
    # Why the recipes filter: -u includes "Starting blink-watcher.service ...",
    # which is not JSON and stops a plain jq.
    lines = journal_run.run("journalctl -u blink-watcher -o cat").splitlines()

    assert any(line.startswith("Starting blink-watcher.service") for line in lines)


# --- the documented recipes, run as written ---------------------------------------------------


def documented_recipes() -> list[str]:
    """Every journalctl command line in the shell blocks of README.md and systemd/README.md."""
    recipes: list[str] = []
    for doc in (REPO / "README.md", REPO / "systemd" / "README.md"):
        for block in re.findall(r"```sh\n(.*?)```", doc.read_text(), flags=re.DOTALL):
            recipes += [line for line in block.splitlines() if line.startswith("journalctl ")]
    return recipes


def json_lines(output: str) -> list[dict[str, object]]:
    parsed = [json.loads(ANSI.sub("", line)) for line in output.splitlines() if line.strip()]
    assert all(isinstance(line, dict) for line in parsed), output
    return parsed


def failures_only(run: JournalRun, recipe: str) -> None:
    output = run.run(recipe)
    print(f"$ {recipe}\n{output}")
    ours = []
    for line in output.splitlines():
        # Short format: "Dec 07 06:13:54 host blink-watcher[30]: {...}"
        match = re.match(r"^.*? (?P<ident>[^ \[]+)\[\d+\]: (?P<message>.*)$", line)
        assert match, line
        if match["ident"] == "blink-watcher":
            ours.append(json.loads(match["message"]))
    diagnostics = {str(line["event"]) for line in ours if "level" in line}
    events = {
        (line["execution_id"], line["state"])
        for line in ours
        if "event_id" in line and "level" not in line
    }

    assert {str(line["level"]) for line in ours if "level" in line} <= {"warning", "error"}
    assert {"poll.failed", "api.auth_failed", "execution.unknown_state"} <= diagnostics
    assert events == {
        (DOCUMENTED_ID, "Failed"),
        ("cancel-1", "Cancelled"),
        ("invalid-1", None),
        (MISSING_ID, None),
    }


def one_execution(run: JournalRun, recipe: str) -> None:
    output = run.run(recipe)
    print(f"$ {recipe}\n{output}")
    lines = json_lines(output)

    assert {line["execution_id"] for line in lines} == {DOCUMENTED_ID}
    # Its diagnostics (first seen Running, the 503) and its event.
    assert {"execution.state", "poll.failed", "execution.finished"} <= {
        str(line["event"]) for line in lines
    }
    assert run.bodies()[DOCUMENTED_ID].decode() in output.splitlines()


def results(run: JournalRun, recipe: str) -> None:
    output = run.run(recipe)
    print(f"$ {recipe}\n{output}")
    shown = {(line["execution_id"], line["state"]) for line in json_lines(output)}
    finished = {(k, v[1]) for k, v in ENDINGS.items() if v[0] == "execution.finished"}

    # late-1 only when the follow test has already run.
    assert finished <= shown <= {*finished, ("late-1", "Completed")}


def follow_live(run: JournalRun, recipe: str) -> None:
    followed = FollowedCommand(run.ns, recipe)
    try:
        # A reload (systemd logs "Reloading blink-watcher.service", not JSON)
        # and a new execution, while the recipe follows.
        run.service.executions.append("late-1")
        run.service.write_config(**CONFIG_EXTRAS)
        run.ns.systemctl("reload", UNIT)

        def late_result(line: str) -> bool:
            return '"late-1"' in line and '"execution.finished"' in ANSI.sub("", line)

        seen = wait_for_lines(followed, 1, late_result, timeout_s=60)
    finally:
        errors = followed.stop()
    print(f"$ {recipe}\n" + "\n".join(ANSI.sub("", line) for line in seen))
    assert errors == ""
    lines = json_lines("\n".join(seen))
    assert "config.reloaded" in {line["event"] for line in lines}
    assert (
        run.run("journalctl -u blink-watcher -o cat | grep -c '^Reloading blink-watcher'").strip()
        != "0"
    ), "systemd's own reload line never reached the journal: the recipe's filter went untested"


CHECKS: dict[str, Callable[[JournalRun, str], None]] = {
    "journalctl -u blink-watcher -p warning": failures_only,
    f"journalctl -u blink-watcher EXECUTION_ID={DOCUMENTED_ID} -o cat": one_execution,
    "journalctl -u blink-watcher -o cat BLINK_WATCHER_EVENT=execution.finished"
    " | jq -c '{execution_id, state, duration}'": results,
    "journalctl -u blink-watcher -f -o cat | jq -R -c 'fromjson?'": follow_live,
}


def test_every_documented_recipe_is_checked_here() -> None:
    assert set(documented_recipes()) == set(CHECKS)


@pytest.mark.parametrize("recipe", list(CHECKS), ids=[c.__name__ for c in CHECKS.values()])
def test_documented_recipe_works_as_written(journal_run: JournalRun, recipe: str) -> None:
    if "| jq" in recipe and shutil.which("jq") is None:
        pytest.skip("jq is not installed (apt-get install jq)")
    CHECKS[recipe](journal_run, recipe)


# --- when the journal refuses ----------------------------------------------------------------

FALLBACK_UNIT = "blink-watcher@fallback.service"
# After the tests above: this unit's entries must not be mistaken for the main one's.
FALLBACK_DROP_IN = """\
[Service]
# The sandbox hides the journal's native socket; stdout and stderr stay connected.
InaccessiblePaths=/run/systemd/journal/socket
ExecStart=
ExecStart={venv}/bin/blink-watcher run -c {conf}/fallback.toml
"""


def test_when_the_journal_refuses_entries_lines_go_to_the_streams_said_once(
    journal_run: JournalRun,
) -> None:
    ns = journal_run.ns
    install_service(ns, journal_run.venv, "blink-watcher@.service", FALLBACK_UNIT, output="journal")
    drop_in = ns.units / f"{FALLBACK_UNIT}.d"
    drop_in.mkdir()
    (drop_in / "zz-fallback.conf").write_text(
        FALLBACK_DROP_IN.format(venv=journal_run.venv, conf=CONF_DIR_INSIDE)
    )
    config = (ns.conf / "config.toml").read_text()
    config = re.sub(r"(?m)^executions = .*$", 'executions = ["ok-1"]', config)
    config = re.sub(r"(?m)^listen = .*$", f'listen = "127.0.0.1:{free_port()}"', config)
    (ns.conf / "fallback.toml").write_text(config)
    (ns.conf / "fallback.toml").chmod(0o644)
    ns.systemctl("daemon-reload")
    ns.systemctl("start", FALLBACK_UNIT)

    def lines() -> list[dict[str, object]]:
        found = []
        for entry in entries(ns, f"_SYSTEMD_UNIT={FALLBACK_UNIT}"):
            with contextlib.suppress(ValueError):
                found.append({**json.loads(text_of(entry["MESSAGE"])), "_": entry})
        return found

    def result_seen() -> bool:
        return any(line.get("event_id") and "level" not in line for line in lines())

    wait_for(
        result_seen, timeout_s=60, what="the fallback unit's event", diagnostics=ns.diagnostics
    )
    seen = lines()
    # Every line came through the stream, none natively.
    assert {line["_"]["_TRANSPORT"] for line in seen} == {"stdout"}  # type: ignore[index]
    notices = [line for line in seen if line.get("event") == "journal.unavailable"]
    assert sorted(str(n["what"]) for n in notices) == ["diagnostics", "events"]
    [event] = [line for line in seen if line.get("event_id") and "level" not in line]
    assert (event["execution_id"], event["state"]) == ("ok-1", "Completed")
