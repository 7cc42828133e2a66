"""The daemon never imports the terminal side (watcher.cli) or the simulator (watcher.sim).

Checked twice: statically, over the source of every daemon module (which also
catches imports inside functions that a given run never reaches), and at run
time, in a fresh interpreter that loads the daemon.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import watcher

OUTSIDE_DAEMON = ("watcher.cli", "watcher.sim")
PACKAGE_DIR = Path(watcher.__file__).parent
# `python -m watcher` is the command line's own entry point: it imports
# watcher.cli on purpose, and no daemon module imports it.
ENTRY_POINT = "watcher.__main__"


def outside_daemon(name: str) -> bool:
    """Is ``name`` the terminal side, the simulator, or a module inside either?"""
    return any(name == top or name.startswith(top + ".") for top in OUTSIDE_DAEMON)


def module_name(path: Path) -> tuple[str, bool]:
    """The dotted name of a file under watcher/, and whether it is a package's ``__init__``."""
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def daemon_modules() -> list[tuple[str, bool, Path]]:
    """Every module under watcher/ but the terminal side, the simulator and ``__main__``."""
    found = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        name, is_package = module_name(path)
        if not outside_daemon(name) and name != ENTRY_POINT:
            found.append((name, is_package, path))
    return found


def _dynamic_import_target(node: ast.Call) -> str | None:
    # importlib.import_module("watcher.sim"), import_module(...), __import__(...)
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if called not in ("import_module", "__import__") or not node.args:
        return None
    first = node.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def forbidden_imports(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """``line N: NAME`` for each import in ``source`` of the terminal side or the simulator.

    ``module`` is the dotted name of the module the source belongs to, so that
    relative imports (``from .sim import ...``) resolve as Python would.
    """
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str]
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            # `from watcher import sim` imports watcher.sim as much as `import watcher.sim`.
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Call) and (target := _dynamic_import_target(node)):
            names = [target]
        else:
            continue
        bad = next((name for name in names if outside_daemon(name)), None)
        if bad is not None:
            found.append(f"line {node.lineno}: {bad}")
    return found


# --- the checker itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("import watcher.cli", "watcher.service", "line 1: watcher.cli"),
        ("import os\nimport watcher.sim as simulator", "watcher.service", "line 2: watcher.sim"),
        ("from watcher.cli.render import table", "watcher.store", "line 1: watcher.cli.render"),
        ("from watcher import logs, sim", "watcher.service", "line 1: watcher.sim"),
        ("from watcher import cli", "watcher.blink", "line 1: watcher.cli"),
        ("from .sim import Simulator", "watcher.service", "line 1: watcher.sim"),
        ("from ..cli import main", "watcher.sinks.webhook", "line 1: watcher.cli"),
        ("from . import sim", "watcher", "line 1: watcher.sim"),
        (
            "def later() -> None:\n    from watcher.cli.watch import watch",
            "watcher.scheduler",
            "line 2: watcher.cli.watch",
        ),
        (
            "if TYPE_CHECKING:\n    from watcher.sim import Simulator",
            "watcher.metrics",
            "line 2: watcher.sim",
        ),
        ("importlib.import_module('watcher.sim')", "watcher.service", "line 1: watcher.sim"),
        ("__import__('watcher.cli.demo')", "watcher.service", "line 1: watcher.cli.demo"),
    ],
)
def test_the_checker_finds_each_way_of_importing_the_terminal_side_or_the_simulator(
    source: str, module: str, expected: str
) -> None:
    found = forbidden_imports(source, module, is_package=module == "watcher")
    assert found == [expected]


def test_the_checker_leaves_daemon_imports_and_look_alike_names_alone() -> None:
    source = (
        "import watcher.client\n"
        "import watcher.simple\n"
        "from watcher import clients, simulate, config\n"
        "from watcher.config import Config\n"
        "from .sinks import build_sink\n"
        "from . import logs\n"
        "importlib.import_module('watcher.cliff')\n"
        "importlib.import_module(name)\n"
    )
    assert forbidden_imports(source, "watcher.service") == []


def test_the_walk_sees_the_daemon_and_nothing_else() -> None:
    names = {name for name, _, _ in daemon_modules()}
    # A walk that found nothing would make the real check pass for nothing.
    assert {"watcher", "watcher.service", "watcher.store", "watcher.sinks.webhook"} <= names
    assert any(name.startswith("watcher.config") for name in names)
    assert not any(outside_daemon(name) for name in names)
    assert ENTRY_POINT not in names


# --- the daemon -----------------------------------------------------------------------------


def test_no_daemon_module_imports_the_terminal_side_or_the_simulator() -> None:
    violations = [
        f"{path.relative_to(PACKAGE_DIR.parent)} {hit}"
        for name, is_package, path in daemon_modules()
        for hit in forbidden_imports(path.read_text(encoding="utf-8"), name, is_package=is_package)
    ]
    assert violations == []


def _run_python(code: str, *args: str, cwd: Path | None = None) -> list[str]:
    env = {**os.environ, "BLINK_API_KEY": "boundary-test-key"}
    env.pop("BLINK_WATCHER_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=cwd,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


_LOADED = "print(json.dumps(sorted(m for m in sys.modules if m.startswith('watcher'))))"


def test_loading_the_daemon_loads_neither_the_terminal_side_nor_the_simulator() -> None:
    code = (
        "import importlib, json, sys\n"
        "import watcher.service\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n" + _LOADED
    )
    loaded = _run_python(code, *(name for name, _, _ in daemon_modules()))
    assert "watcher.service" in loaded
    assert [name for name in loaded if outside_daemon(name)] == []


def test_the_command_line_imports_each_command_only_when_it_runs(tmp_path: Path) -> None:
    imported = _run_python("import json, sys\nimport watcher.cli\n" + _LOADED)
    assert [name for name in imported if outside_daemon(name)] == [
        "watcher.cli",
        "watcher.cli.parser",
    ]

    # `blink-watcher run` itself: the daemon, and of the terminal side only the dispatcher.
    (tmp_path / "config.toml").write_text(
        '[blink]\nbase_url = "http://127.0.0.1:9/api/v1"\nworkspace_id = "ws"\n'
        '[state]\npath = "state.db"\n'
        '[[sinks]]\ntype = "log"\npath = "events.jsonl"\n'
    )
    code = (
        "import json, sys\n"
        "from watcher.cli import main\n"
        "assert main(['run', '-c', 'config.toml', '--exit-when-done']) == 0\n" + _LOADED
    )
    ran = _run_python(code, cwd=tmp_path)
    assert "watcher.service" in ran
    assert [name for name in ran if outside_daemon(name)] == ["watcher.cli", "watcher.cli.parser"]
