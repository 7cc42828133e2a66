"""``blink-watcher demo``: the whole product against the simulated Blink API.

Starts the simulator and its webhook receiver on loopback, writes a real
config file, runs the real service (store, scheduler, outbox, both sinks) until
every execution is reported, and shows the progress live, then how each ended
and where the results went.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, TextIO

from watcher import logs as wlogging
from watcher.cli.live import LiveTable
from watcher.cli.rows import Row
from watcher.config import load_config
from watcher.errors import EX_FAILURE, EX_OK
from watcher.models import Event, ExecutionKey, format_key
from watcher.service import Service
from watcher.sim import DEMO_MISSING_EXECUTION_ID, Simulator, demo_scripts
from watcher.sim.playbooks import PLAYBOOKS_BY_NAME

WORKSPACE = "ws-demo"
# The chat-ops receiver is flaky at first, so the demo shows deliveries retried;
# the SIEM only takes failures, to show a sink's states filter.
HOOK_SCRIPTS = {"chatops": ["503", "drop", "200"], "siem": ["200"], "approvals": ["200"]}
# Started by "something else" a moment after the daemon: nobody lists its ID,
# the [[discover]] rule finds it through the list endpoint.
DISCOVERED_ID = "01HZZXAD1SC0VEREDBYRULE0A"
DISCOVERED_PLAYBOOK = "Isolate compromised host"
RULE = "isolation"


def _config(workdir: Path, sim: Simulator, keys: list[ExecutionKey]) -> str:
    executions = ", ".join(f'"{format_key(k)}"' for k in keys)
    return f"""# written by `blink-watcher demo`
[blink]
base_url = "{sim.base_url}"
workspace_id = "{WORKSPACE}"
api_key_file = "{workdir / "blink-api-key"}"
rate_limit = 20.0
retry_backoff = 0.1
retry_backoff_max = 0.5

[poll]
interval = 1.0
max_interval = 1.0
not_found_grace = 2

[watch]
executions = [{executions}]

[state]
path = "{workdir / "blink-watcher.db"}"

[[sinks]]
type = "log"
path = "{workdir / "results.jsonl"}"

[[sinks]]
type = "webhook"
name = "chatops"
url = "{sim.hook_url("chatops")}"
secret_file = "{workdir / "webhook-secret"}"
backoff_initial = 0.2
backoff_max = 1.0

[[sinks]]
type = "webhook"
name = "siem"
url = "{sim.hook_url("siem")}"
secret_file = "{workdir / "webhook-secret"}"
states = ["Failed", "Timeout", "Cancelled"]

# An "awaiting approval" channel: a run that pauses for a person.
[[sinks]]
type = "webhook"
name = "approvals"
url = "{sim.hook_url("approvals")}"
secret_file = "{workdir / "webhook-secret"}"
events = ["execution.state_changed"]
states = ["Paused"]

# Every run of the isolation playbook, whoever starts it.
[[discover]]
name = "{RULE}"
playbook_ids = ["{PLAYBOOKS_BY_NAME[DISCOVERED_PLAYBOOK].playbook_id}"]
start = "now"
interval = 0.5
overlap = 5.0
"""


def demo(*, keep: bool = False, out: TextIO | None = None) -> int:
    """Run the demo; exit code 0 when the product did its job end to end."""
    stream = out or sys.stdout
    workdir = Path(tempfile.mkdtemp(prefix="blink-watcher-demo-"))
    try:
        # Diagnostics go to a file: the terminal belongs to the live table.
        with open(workdir / "blink-watcher.log", "w", encoding="utf-8") as log_file:
            wlogging.configure("info", "json", stream=log_file)
            return asyncio.run(_demo(workdir, stream, keep))
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


async def _demo(workdir: Path, out: TextIO, keep: bool) -> int:
    scripts = demo_scripts(WORKSPACE)
    keys: list[ExecutionKey] = [(s["workspace_id"], s["execution_id"]) for s in scripts]
    keys.append((WORKSPACE, DEMO_MISSING_EXECUTION_ID))
    playbooks = {
        (s["workspace_id"], s["execution_id"]): s.get("fields", {}).get("playbook_name")
        for s in scripts
    }
    discovered = (WORKSPACE, DISCOVERED_ID)
    playbooks[discovered] = f"{DISCOVERED_PLAYBOOK} (found by rule {RULE})"
    scripts.append(
        {
            "workspace_id": WORKSPACE,
            "execution_id": DISCOVERED_ID,
            "steps": ["Running", "Failed"],
            "fields": {"playbook_name": DISCOVERED_PLAYBOOK},
            "playbook_id": PLAYBOOKS_BY_NAME[DISCOVERED_PLAYBOOK].playbook_id,
            "trigger_type": "event",
            "created_at": int(time.time() * 1000) + 1500,
        }
    )
    api_key = "demo-" + secrets.token_hex(12)
    (workdir / "blink-api-key").write_text(api_key + "\n")
    (workdir / "webhook-secret").write_text(
        "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode() + "\n"
    )

    async with Simulator(api_key=api_key, scripts=scripts, hook_scripts=HOOK_SCRIPTS) as sim:
        config_path = workdir / "config.toml"
        config_path.write_text(_config(workdir, sim, keys))
        config = load_config(config_path)
        out.write(
            f"blink-watcher demo: a simulated Blink API on {sim.origin}, "
            f"{len(keys)} executions in 2 workspaces and one a discovery rule will find, "
            f"{len(config.sinks)} sinks.\n\n"
        )
        events: dict[ExecutionKey, Event] = {}
        first_seen: dict[ExecutionKey, float] = {}
        service = Service(config, exit_when_done=True)

        def listen(event: Event) -> None:
            if event.event == "execution.state_changed":
                return  # mid-run: the approvals sink's, not an ending
            events[event.key] = event

        service.listeners.append(listen)

        def rows() -> list[Row]:
            now = time.time()
            result = []
            scheduler = getattr(service, "scheduler", None)
            found = scheduler is not None and discovered in scheduler.discovered_by
            if discovered not in keys and (found or discovered in events):
                keys.append(discovered)  # the rule found it: it joins the table
            for key in keys:
                if key in events:
                    start = first_seen.get(key)
                    result.append(Row.from_event(events[key], start, playbooks.get(key)))
                    continue
                watch = scheduler.get(key) if scheduler is not None else None
                if watch is None:
                    result.append(Row(key, playbook=playbooks.get(key)))
                    continue
                first_seen[key] = watch.first_seen_at
                result.append(Row.from_watch(watch, now, playbooks.get(key)))
            return result

        with LiveTable(out) as view:
            run = asyncio.ensure_future(service.run())
            while not run.done():
                view.update(rows())
                await asyncio.wait({run}, timeout=view.REFRESH_S)
            view.update(rows())
            code = run.result()
            view.finish(events[k] for k in keys if k in events)
        _explain_spelling(out, events)
        _where_it_went(out, workdir, sim, events, keep)
    ok = code == EX_OK and len(events) == len(keys)
    return EX_OK if ok else EX_FAILURE


def _explain_spelling(out: TextIO, events: dict[Any, Event]) -> None:
    """Say why a state may show in lower case: the demo includes an API that answers so."""
    for key, event in events.items():
        state = event.state or ""
        if state.islower():
            note = (
                f"{format_key(key)} answered {state!r} in lower case: states are matched "
                f"without regard to case, so it counts as {state.capitalize()}, and its "
                "event keeps the API's spelling."
            )
            out.write("\n" + "\n".join(textwrap.wrap(note, 79)) + "\n")


def _self_command() -> str:
    """How to run this same ``blink-watcher`` again from the current directory.

    After ``make demo`` the command is ``.venv/bin/blink-watcher``, which is not
    on PATH: a hint naming plain ``blink-watcher`` would not work when pasted.
    """
    program = Path(sys.argv[0])
    if program.name == "__main__.py":
        return f"{sys.executable} -m watcher"
    found = shutil.which("blink-watcher")
    if found is not None and Path(found).resolve() == program.resolve():
        return "blink-watcher"
    try:
        return str(program.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(program.resolve())


def _where_it_went(
    out: TextIO, workdir: Path, sim: Simulator, events: dict[Any, Event], keep: bool
) -> None:
    attempts: dict[str, int] = {}
    delivered: dict[str, int] = {}
    for d in sim.deliveries:
        attempts[d.name] = attempts.get(d.name, 0) + 1
        if d.status is not None and 200 <= d.status < 300:
            delivered[d.name] = delivered.get(d.name, 0) + 1
    out.write("\nWhere the results went:\n")
    out.write(f"  log sink          {len(events)} JSON lines in results.jsonl\n")
    for name, label in (
        ("chatops", "every event"),
        ("siem", "failures only"),
        ("approvals", "runs paused for approval"),
    ):
        retried = attempts.get(name, 0) - delivered.get(name, 0)
        out.write(f"  webhook {name:<9} {delivered.get(name, 0)} signed deliveries ({label})\n")
        if retried:
            out.write(f"                    after {retried} failed attempt(s) retried\n")
    found = sum(1 for e in events.values() if e.discovered_by)
    out.write(f"  discovery         {found} found by rule {RULE!r}; nobody listed it\n")
    out.write("  state store       blink-watcher.db (watches, events, delivery outbox)\n")
    if keep:
        config = workdir / "config.toml"
        me = _self_command()
        out.write(
            f"\nKept in {workdir}. Try:\n"
            f"  {me} status -c {config}\n"
            f"  {me} deliveries -c {config}\n"
            f"  jq . {workdir / 'results.jsonl'}\n"
        )
    else:
        out.write(f"\nRun `{_self_command()} demo --keep` to keep the files and explore them.\n")
