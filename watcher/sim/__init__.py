"""The simulated Blink API and a webhook receiver, on one loopback aiohttp server.

The demo, the integration tests and the benchmark all run against this, so it
answers ``GET /api/v1/workspace/{ws_id}/executions/{id}`` the way the real API
does (every field of ``models.PlaybookExecutionWithSubflowNames``, errors as
``api_responses.ErrorWrapper``) and can inject the faults a watcher has to
survive. The daemon never imports it.

    script.py      the step language: scripts of tokens compiled into programs and counters
    playbooks.py   deterministic ULID-looking IDs and the realistic playbooks bodies draw on
    bodies.py      the JSON the API answers: execution bodies, ErrorWrapper, deliberate junk
    api.py         the execution GET: auth, which script answers, the faults, bookkeeping
    receiver.py    ``POST /hooks/{name}``: Delivery records, answers from hook scripts
    control.py     ``/_sim/*``: drive a simulator running in another process
    simulator.py   Simulator: all of the above on one server, and what it saw
    demo.py        the demo's executions
    command.py     ``python -m watcher.sim --scripts FILE.json`` (``__main__.py`` runs it)

Everything code outside the package uses is importable from here.
"""

from __future__ import annotations

from watcher.sim.api import API_PREFIX, HUGE_BODY_BYTES
from watcher.sim.command import main
from watcher.sim.demo import DEMO_MISSING_EXECUTION_ID, demo_scripts
from watcher.sim.receiver import Delivery, parse_hook_step
from watcher.sim.script import TERMINAL_STATES, Script, parse_step
from watcher.sim.simulator import Simulator

__all__ = [
    "API_PREFIX",
    "DEMO_MISSING_EXECUTION_ID",
    "HUGE_BODY_BYTES",
    "TERMINAL_STATES",
    "Delivery",
    "Script",
    "Simulator",
    "demo_scripts",
    "main",
    "parse_hook_step",
    "parse_step",
]
