"""Walking systemd/README.md: its shell blocks, the releases it installs, the operator at the shell.

The operator runs a block as root would on the host, in the namespace's view
of it (harness.py), and keeps a transcript of what each block printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.systemd.harness import BOOT_TARGET, REPO, SimulatedBlink, SystemdNamespace
from tests.systemd.journald import entries, text_of
from tests.waiting import wait_for

DOC = REPO / "systemd" / "README.md"
UNIT = "blink-watcher.service"
# The upgrade installs a release of the same sources with this version suffix.
UPGRADE_LOCAL_VERSION = "+upgrade"
OPERATOR_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sh_blocks() -> dict[str, list[str]]:
    """The ```sh blocks of systemd/README.md, by the title of their ``##`` section."""
    sections: dict[str, list[str]] = {}
    for section in re.split(r"(?m)^## ", DOC.read_text())[1:]:
        title, _, body = section.partition("\n")
        sections[title.strip()] = re.findall(r"```sh\n(.*?)```", body, flags=re.DOTALL)
    return sections


# --- the release, built once ------------------------------------------------------------------


def _source_copy(target: Path) -> None:
    """The checkout as ``make dist`` sees it, without what a build or a test run leaves."""
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "dist", "build", "*.egg-info", "__pycache__", ".*_cache"
    )
    shutil.copytree(REPO, target, ignore=ignore)


def _version(pyproject: Path) -> str:
    match = re.search(r'(?m)^version = "([^"]+)"$', pyproject.read_text())
    assert match, f"no version in {pyproject}"
    return match[1]


@dataclass(frozen=True)
class Releases:
    current: Path  # dist/ of the checkout: a wheel and an sdist
    current_version: str
    upgrade: Path  # the same with a higher version, for the upgrade step
    upgrade_version: str


def build_releases(root: Path) -> Releases:
    """``make dist`` of the checkout, and of a copy one version up: both built at once."""
    builds = []
    for name, suffix in (("current", ""), ("upgrade", UPGRADE_LOCAL_VERSION)):
        src = root / f"{name}-src"
        _source_copy(src)
        pyproject = src / "pyproject.toml"
        version = _version(pyproject) + suffix
        pyproject.write_text(
            re.sub(r'(?m)^version = "[^"]+"$', f'version = "{version}"', pyproject.read_text())
        )
        out = root / name
        # The Makefile's dist target: python -m build --outdir dist .
        process = subprocess.Popen(
            [sys.executable, "-m", "build", "--outdir", str(out), str(src)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        builds.append((process, out, version))
    for process, out, _ in builds:
        output, _ = process.communicate(timeout=180)
        assert process.returncode == 0, f"building {out.name} failed:\n{output}"
        assert len(list(out.glob("*.whl"))) == 1, list(out.iterdir())
        assert len(list(out.glob("*.tar.gz"))) == 1, list(out.iterdir())
    (_, current, current_version), (_, upgrade, upgrade_version) = builds
    return Releases(current, current_version, upgrade, upgrade_version)


# --- the operator -----------------------------------------------------------------------------


@dataclass
class Operator:
    """Root at a shell on the host: runs the README's blocks and keeps a transcript."""

    ns: SystemdNamespace
    blink: SimulatedBlink
    blocks: dict[str, list[str]]
    transcript: list[str] = field(default_factory=list)
    ran: set[tuple[str, int]] = field(default_factory=set)
    # This machine's pip settings (its package index), as the host's would be.
    pip_environment: dict[str, str] = field(
        default_factory=lambda: {
            k: v for k, v in os.environ.items() if k.startswith("PIP_") or "proxy" in k.lower()
        }
    )

    def step(self, section: str, index: int, *, replace: tuple[tuple[str, str], ...] = ()) -> str:
        """Run block ``index`` of ``section`` as written, but for ``replace``; its output."""
        block = self.blocks[section][index]
        for old, new in replace:
            assert old in block, f"{section} block {index} no longer says {old!r}"
            block = block.replace(old, new)
        self.ran.add((section, index))
        return self.shell(block, title=f"{section} (block {index + 1})")

    def shell(self, commands: str, *, title: str, check: bool = True) -> str:
        """A root shell in the namespace, starting in root's home; each line echoed (-v)."""
        assert self.ns.pid1 is not None
        environment = [f"{k}={v}" for k, v in self.pip_environment.items()]
        result = subprocess.run(
            [
                *("nsenter", "-t", str(self.ns.pid1), "-m", "-p"),
                *("env", "-i", "HOME=/root", f"PATH={OPERATOR_PATH}", "LANG=C.UTF-8"),
                *environment,
                *("bash", "-c", f"cd ~ && set -euv\n{commands}"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            check=False,
        )
        self.transcript.append(f"===== {title} (exit {result.returncode})\n{result.stdout}")
        if check and result.returncode != 0:
            raise AssertionError(
                f"{title} exited {result.returncode}:\n{result.stdout}\n{self.ns.diagnostics()}"
            )
        return result.stdout

    def read(self, path: str) -> str:
        return self.ns.run("cat", path)

    def edit(self, path: str, old: str, new: str) -> None:
        """The operator editing a file: replace ``old`` (which must be there) by ``new``."""
        text = self.read(path)
        assert old in text, f"{path} does not say {old!r}"
        self.ns.run("sh", "-c", 'cat > "$0"', path, input=text.replace(old, new, 1))
        self.transcript.append(f"===== (edit {path}: {old.strip()!r} -> {new.strip()!r})\n")

    def unit(self, *properties: str) -> dict[str, str]:
        return self.ns.show(UNIT, *properties)

    def journal(self) -> list[dict[str, object]]:
        """The daemon's JSON lines in the journal (events and diagnostics)."""
        lines = []
        for entry in entries(self.ns, f"_SYSTEMD_UNIT={UNIT}"):
            try:
                line = json.loads(text_of(entry["MESSAGE"]))
            except ValueError:
                continue
            if isinstance(line, dict):
                lines.append(line)
        return lines

    def finished(self) -> list[str]:
        """Execution IDs of the execution.finished events in the journal, with repeats."""
        return [
            str(line["execution_id"])
            for line in self.journal()
            if line.get("event") == "execution.finished" and "level" not in line
        ]

    def wait_until(self, condition: Callable[[], object], what: str, timeout_s: float = 60) -> None:
        wait_for(condition, timeout_s=timeout_s, what=what, diagnostics=self.ns.diagnostics)

    def readyz(self, port: int) -> int | None:
        """Status of the daemon's /readyz, None while nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
                status: int = answer.status
                return status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None


DISTRIBUTION_UNITS = Path("/lib/systemd/system")
DBUS_UNITS = ("dbus.socket", "dbus.service")


def install_dbus(ns: SystemdNamespace) -> None:
    """The system bus, as on a Debian host (``systemd-run --wait`` needs it); before boot."""
    for name in DBUS_UNITS:
        shutil.copy(DISTRIBUTION_UNITS / name, ns.units / name)
    boot = ns.units / f"{BOOT_TARGET}.d"
    boot.mkdir(exist_ok=True)
    (boot / "dbus.conf").write_text("[Unit]\nWants=dbus.socket\n")
