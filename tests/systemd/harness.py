"""Run the shipped unit under a real systemd: namespaces, venv, simulator, service.

systemd runs as PID 1 of private pid/mount/uts/ipc/cgroup namespaces, in a
cgroup of its own, and sees only the units the test writes. The host's
network is shared, so the daemon inside reaches a simulated Blink API that
the test starts on 127.0.0.1. Everything is torn down even when a test fails:
``unshare --kill-child`` takes the whole namespace with it, and the cgroup
and scratch directories are removed.

Layout inside the namespace (host directory -> where systemd sees it):

    <scratch>/units    -> /etc/systemd/system   (shipped unit + test drop-in + stub targets)
    <scratch>/conf     -> /run/blink-watcher-test (config.toml and the credential sources)
    <scratch>/var-lib  -> /var/lib               (StateDirectory= lands in var-lib/private/)
    <scratch>/var-log  -> /var/log               (the service's stdout/stderr files, or the journal)
    <scratch>/run      -> copied into /run       (only when a test puts files there)
    <scratch>/tmp, <scratch>/var-tmp -> /tmp, /var/tmp
    a pty              -> /dev/console           (systemd's own log)
    <scratch>/overlay/_etc/upper, ...            (only for the directories a test overlays:
                       -> changes to /etc, ...    the host's files show through, unchanged)

journald runs in the namespace only where a test installs it (journald.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
UNIT_SOURCE_DIR = REPO / "systemd"
UNIT = "blink-watcher.service"

SYSTEMD = Path("/lib/systemd/systemd")
# The unit's sandbox: ProtectHome= hides /root and PrivateTmp= hides /tmp, so
# the daemon under test lives in a venv under /opt built from the system
# interpreter, like a real installation.
SYSTEM_PYTHON = Path("/usr/bin/python3")
VENV_PARENT = Path("/opt")
VENV_PREFIX = "blink-watcher-test-"
# Venvs of other source versions kept for runs of other checkouts (~20 MB each).
VENVS_KEPT = 3

# What WatcherService.wait_for_unit() reads of the unit.
UNIT_STATE = (
    "ActiveState",
    "SubState",
    "Result",
    "MainPID",
    "NRestarts",
    "StatusText",
    "ExecMainCode",
    "ExecMainStatus",
)

# Where the test's config and credential sources appear inside the namespace.
CONF_DIR_INSIDE = "/run/blink-watcher-test"
OUTPUT_DIR_INSIDE = "/var/log/blink-watcher-test"

API_KEY = "test-api-key-" + "k" * 16
# A Standard Webhooks secret: "whsec_" + base64 of random bytes.
WEBHOOK_SECRET = "whsec_dGVzdC13ZWJob29rLXNlY3JldC0wMTIzNDU2Nzg5"


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"--- {path.name}: (absent)"
    return f"--- {path.name} (last {lines} lines):\n" + "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- prerequisites

CGROUP_PREFIX = "blink-watcher-test-"
# Older than any run takes: safe to remove when empty.
STALE_CGROUP_S = 600


def _cgroup2_mount() -> Path | None:
    """The host's cgroup2 mount point (``/sys/fs/cgroup`` or, on hybrid hosts, ``.../unified``)."""
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            # Fields: ID parent major:minor root mount-point options ... - fstype source ...
            before, _, after = line.partition(" - ")
            if after.split()[0] == "cgroup2":
                return Path(before.split()[4])
    return None


def _remove_cgroup_tree(cgroup: Path) -> bool:
    """rmdir a cgroup and its children, deepest first; False while any is still populated."""
    directories = sorted(
        (d for d in cgroup.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True
    )
    for directory in [*directories, cgroup]:
        try:
            directory.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return False
    return True


def _cgroup_is_empty(cgroup: Path) -> bool:
    """No process in the cgroup or any descendant ("populated 0" in cgroup.events)."""
    try:
        return "populated 0" in (cgroup / "cgroup.events").read_text().splitlines()
    except OSError:
        return False


def _first_child(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return int(children[0]) if children else None
    except FileNotFoundError:  # kernels built without CONFIG_PROC_CHILDREN
        pass
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name, in parentheses, may contain spaces: split after it.
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                return int(stat.parent.name)
    return None


def missing_prerequisite() -> str | None:
    """Why this machine cannot run systemd as PID 1 of private namespaces, or None."""
    if os.geteuid() != 0:
        return "needs root (namespaces, mounts and a cgroup of its own)"
    for tool in ("unshare", "nsenter", "systemctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} is not installed"
    # The service's venv is built from the system interpreter.
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} is not installed"
    version = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version_info >= (3, 11))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if version.stdout.strip() != "True":
        return f"{SYSTEM_PYTHON} is older than 3.11"
    if _cgroup2_mount() is None:
        return "no cgroup2 hierarchy is mounted"
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount", "--cgroup", "--uts", "--ipc", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"cannot create namespaces: {probe.stderr.strip()}"
    return None


# ------------------------------------------------------------------------- the daemon venv


def _package_sources() -> list[Path]:
    """What ``pip install <checkout>`` reads: the venv is rebuilt when any of it changes."""
    files = [REPO / "pyproject.toml"]
    files += sorted(p for p in REPO.glob("README*") if p.is_file())
    files += sorted(p for p in REPO.glob("LICENSE*") if p.is_file())
    files += sorted(
        p
        for p in (REPO / "watcher").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    return files


def _venv_key() -> str:
    digest = hashlib.sha256()
    version = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    digest.update(version.encode())
    for path in _package_sources():
        digest.update(str(path.relative_to(REPO)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _build_venv(venv: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="blink-watcher-src-") as src_dir:
        # Install from a copy of exactly the hashed files: the build never
        # writes into the checkout, and what is cached is what was hashed.
        src = Path(src_dir)
        for path in _package_sources():
            target = src / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        # The service's dynamic user must be able to read the venv whatever
        # the umask of the test run.
        subprocess.run(
            [str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(venv)],
            check=True,
            umask=0o022,
        )
        # The running interpreter's pip installs into the target venv: no
        # ensurepip (python3-venv) needed for the system interpreter.
        pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
        result = subprocess.run(
            [*pip, "install", "--quiet", "--no-input", str(src)],
            capture_output=True,
            text=True,
            check=False,
            umask=0o022,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pip install into {venv} failed:\n{result.stdout}{result.stderr}")


def _prune_old_venvs(keep: Path) -> None:
    """Keep the few most recently used venvs: each source change builds a new one."""

    def last_used(venv: Path) -> float:
        stamp = venv / ".complete"
        return (stamp if stamp.exists() else venv).stat().st_mtime

    others = [p for p in VENV_PARENT.glob(VENV_PREFIX + "*") if p.is_dir() and p != keep]
    for old in sorted(others, key=last_used, reverse=True)[VENVS_KEPT - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


def ensure_daemon_venv() -> Path:
    """A venv under /opt with the checkout under test installed, cached by a hash of its sources."""
    venv = VENV_PARENT / f"{VENV_PREFIX}{_venv_key()}"
    stamp = venv / ".complete"
    lock_path = VENV_PARENT / f".{VENV_PREFIX}lock"
    with open(lock_path, "w") as lock:
        # Two runs on one machine must not build into the same directory at once.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            shutil.rmtree(venv, ignore_errors=True)
            try:
                _build_venv(venv)
            except BaseException:
                shutil.rmtree(venv, ignore_errors=True)
                raise
        stamp.touch()
        _prune_old_venvs(keep=venv)
    return venv


# ------------------------------------------------------------------- the simulated Blink API


@dataclass(frozen=True)
class SimulatedBlink:
    """``python -m watcher.sim`` running on the host's loopback, reachable from the namespace."""

    base_url: str
    hooks_base: str

    def stats(self) -> dict[str, object]:
        """The simulator's counters, including every webhook delivery it received."""
        origin = self.base_url.removesuffix("/api/v1")
        with urllib.request.urlopen(origin + "/_sim/stats", timeout=5) as response:
            result: dict[str, object] = json.load(response)
        return result


SIM_SCRIPTS = [
    {"workspace_id": "ws", "execution_id": "ex-1", "steps": ["Running", "Running", "Completed"]},
    {"workspace_id": "ws", "execution_id": "ex-2", "steps": ["Running", "Failed"]},
    # Watched only once a test adds it to the config.
    {"workspace_id": "ws", "execution_id": "ex-3", "steps": ["Running", "Completed"]},
]


@contextlib.contextmanager
def run_simulator(scripts: Path) -> Iterator[SimulatedBlink]:
    """Run ``python -m watcher.sim`` with these scripts on 127.0.0.1 until the block ends."""
    command = [sys.executable, "-m", "watcher.sim", "--scripts", str(scripts), "--port", "0"]
    if shutil.which("setpriv"):
        # Not left serving if pytest itself is killed.
        command = ["setpriv", "--pdeathsig", "TERM", *command]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, "BLINK_API_KEY": API_KEY},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        # The simulator prints one line once it listens, or exits on an error.
        ready, _, _ = select.select([process.stdout], [], [], 30)
        line = process.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"the simulator did not start (exit status {process.poll()})")
        info = json.loads(line)
        yield SimulatedBlink(info["base_url"], info["hooks_base"])
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


# ------------------------------------------------------------------ systemd in namespaces

# Stand-ins for the targets systemd and the shipped unit refer to: nothing
# else is started, and "systemctl exit" works (exit.target -> systemd-exit.service).
STUB_TARGETS = [
    "basic",
    "sysinit",
    "local-fs",
    "sockets",
    "timers",
    "paths",
    "network",
    "network-online",
    "multi-user",
    "shutdown",
    "umount",
    "final",
]
EXIT_TARGET = """\
[Unit]
Description=Exit the container
DefaultDependencies=no
Requires=systemd-exit.service
After=systemd-exit.service
"""
EXIT_SERVICE = """\
[Unit]
Description=Exit the container
DefaultDependencies=no
Requires=shutdown.target umount.target final.target
After=shutdown.target umount.target final.target
SuccessAction=exit-force
"""
# The unit systemd boots into. It Wants= nothing: the test starts the service
# itself.
BOOT_TARGET = "test-boot.target"

# Run by unshare as PID 1 of the new namespaces; ends by becoming systemd.
BOOT_SCRIPT = r"""
set -eu
scratch=$1 console=$2 conf_inside=$3 systemd=$4 boot_target=$5 overlays=${6:-}

# A fresh cgroup2 tree rooted at the test's own cgroup: systemd must never see
# (and remount, or create controller directories in) the host's /sys/fs/cgroup.
mount -o remount,bind,ro /sys
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys

mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
# Files the test wants in /run before systemd starts (journald's config drop-in).
if [ -d "$scratch/run" ]; then cp -a "$scratch/run/." /run/; fi
mkdir "$conf_inside"
mount --bind "$scratch/conf" "$conf_inside"

# Directories a test writes to as an operator would (/etc, /opt, /root): the
# host's content shows through, every change lands in $scratch/overlay/NAME.
for dir in $overlays; do
    layer="$scratch/overlay/$(echo "$dir" | tr / _)"
    mkdir -p "$layer/upper" "$layer/work"
    mount -t overlay overlay -o "lowerdir=$dir,upperdir=$layer/upper,workdir=$layer/work" "$dir"
done

# Only the test's units exist: hide the distribution's units and generators.
mount --bind "$scratch/units" /etc/systemd/system
for dir in /usr/lib/systemd/system /lib/systemd/system /usr/local/lib/systemd/system \
           /etc/systemd/system.control /etc/systemd/system.attached \
           /usr/lib/systemd/system-generators /lib/systemd/system-generators \
           /usr/local/lib/systemd/system-generators /etc/systemd/system-generators; do
    if [ -d "$dir" ]; then mount -t tmpfs -o mode=0755 tmpfs "$dir"; fi
done

# systemd logs only to a terminal when it is not the host's init.
mount --bind "$console" /dev/console
mount --bind "$scratch/var-lib" /var/lib
mount --bind "$scratch/var-log" /var/log
mount --bind "$scratch/var-tmp" /var/tmp
# Last: $scratch itself may live under /tmp.
mount --bind "$scratch/tmp" /tmp

# LoadCredential= builds the credentials mount in a helper namespace and
# propagates it to the service: without shared propagation the service sees
# an empty, unreadable credentials directory.
mount --make-rshared /

export container=blink-watcher-test
exec "$systemd" --system --unit="$boot_target" --log-target=console --log-color=no
"""


class SystemdNamespace:
    """A real systemd as PID 1 of private namespaces, driven with ``nsenter ... systemctl``."""

    def __init__(self, scratch: Path, *, overlays: tuple[str, ...] = ()) -> None:
        """``overlays``: host directories the namespace may write to, its changes kept apart.

        Each is an overlay whose upper layer is :meth:`overlay_upper`: the host's
        files show through and stay untouched.
        """
        self.scratch = scratch
        self.overlays = overlays
        self.units = scratch / "units"
        self.conf = scratch / "conf"
        self.var_lib = scratch / "var-lib"
        self.var_log = scratch / "var-log"
        self.console_log = scratch / "console.log"
        self.boot_log = scratch / "boot.log"
        for directory in (self.units, self.conf, self.var_lib, self.var_log):
            directory.mkdir(mode=0o755)
            directory.chmod(0o755)  # whatever the umask: the dynamic user reads conf/
        for directory in (scratch / "tmp", scratch / "var-tmp"):
            directory.mkdir()
            directory.chmod(0o1777)
        self._write_stub_units()
        self._cgroup: Path | None = None
        self._launcher: subprocess.Popen[bytes] | None = None
        self._pid1: int | None = None
        self._pty: tuple[int, int] | None = None
        self._console_reader: threading.Thread | None = None
        self._stop_reading = threading.Event()

    def _write_stub_units(self) -> None:
        for name in STUB_TARGETS:
            # DefaultDependencies=no: with the default Conflicts=shutdown.target
            # "systemctl exit" would be an unmergeable transaction.
            (self.units / f"{name}.target").write_text(
                f"[Unit]\nDescription={name} (stub)\nDefaultDependencies=no\n"
            )
        (self.units / "exit.target").write_text(EXIT_TARGET)
        (self.units / "systemd-exit.service").write_text(EXIT_SERVICE)
        (self.units / BOOT_TARGET).write_text("[Unit]\nDescription=Test boot target\n")

    # -- lifecycle

    def boot(self, *, timeout_s: float = 30) -> None:
        self._cgroup = self._make_cgroup()
        # The slave side stays open here until shutdown: with no slave open,
        # reading the master fails (EIO) before systemd has opened its console.
        master, slave = os.openpty()
        self._pty = (master, slave)
        self._console_reader = threading.Thread(
            target=self._read_console, args=(master,), name="systemd-console", daemon=True
        )
        self._console_reader.start()
        boot_script = self.scratch / "boot.sh"
        boot_script.write_text(BOOT_SCRIPT)

        command = [
            "unshare",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount",
            "--uts",
            "--ipc",
            "--cgroup",
            "--mount-proc",
            "--propagation",
            "private",
            "/bin/sh",
            str(boot_script),
            str(self.scratch),
            os.ttyname(slave),
            CONF_DIR_INSIDE,
            str(SYSTEMD),
            BOOT_TARGET,
            " ".join(self.overlays),
        ]
        if shutil.which("setpriv"):
            # If pytest itself is killed, take the namespace down with it.
            command = ["setpriv", "--pdeathsig", "KILL", *command]
        with open(self.boot_log, "wb") as boot_log:
            # The launcher enters the new cgroup before unshare, so the cgroup
            # namespace is rooted there.
            enter_cgroup = ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"']
            self._launcher = subprocess.Popen(
                [*enter_cgroup, str(self._cgroup), *command],
                stdin=subprocess.DEVNULL,
                stdout=boot_log,
                stderr=subprocess.STDOUT,
            )
        self._pid1 = wait_for(
            self._find_pid1,
            timeout_s=timeout_s,
            what="the namespace's PID 1",
            diagnostics=self.diagnostics,
        )
        wait_for(
            lambda: (
                self.systemctl("is-system-running", check=False).strip() in ("running", "degraded")
            ),
            timeout_s=timeout_s,
            what="systemd to finish booting",
            diagnostics=self.diagnostics,
        )

    def _make_cgroup(self) -> Path:
        mount = _cgroup2_mount()
        assert mount is not None  # checked by systemd_host
        # A run killed outright (SIGKILL) cannot remove its cgroup; its
        # processes died with it (pdeathsig), so the empty tree goes now.
        for stale in mount.glob(CGROUP_PREFIX + "*"):
            if time.time() - stale.stat().st_mtime > STALE_CGROUP_S and _cgroup_is_empty(stale):
                _remove_cgroup_tree(stale)
        cgroup = mount / f"{CGROUP_PREFIX}{secrets.token_hex(4)}"
        try:
            cgroup.mkdir()
        except OSError as exc:
            pytest.skip(f"real-systemd tests: cannot create a cgroup in {mount}: {exc}")
        return cgroup

    def _find_pid1(self) -> int | None:
        assert self._launcher is not None
        if self._launcher.poll() is not None:
            raise AssertionError(f"the namespace launcher exited early\n{self.diagnostics()}")
        # unshare --fork has exactly one child: PID 1 of the new namespaces.
        return _first_child(self._launcher.pid)

    def _read_console(self, master: int) -> None:
        # Drain the pty continuously: a full pty buffer would block systemd.
        with open(self.console_log, "ab") as log:
            while not self._stop_reading.is_set():
                ready, _, _ = select.select([master], [], [], 0.2)
                if not ready:
                    continue
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every slave side is closed
                    break
                log.write(data.replace(b"\r\n", b"\n"))
                log.flush()

    def shutdown(self) -> None:
        """Stop systemd (cleanly if it answers), then remove the cgroup. Safe to call twice."""
        try:
            self._stop_launcher()
            self._remove_cgroup()
        finally:
            self._stop_reading.set()
            if self._console_reader is not None:
                self._console_reader.join()
                self._console_reader = None
            if self._pty is not None:
                for fd in self._pty:
                    os.close(fd)
                self._pty = None

    def _stop_launcher(self) -> None:
        launcher, self._launcher = self._launcher, None
        if launcher is None:
            return
        if launcher.poll() is None and self._pid1 is not None:
            # "systemctl exit" stops every unit (the daemon gets its SIGTERM and
            # drains for up to 10 s), then PID 1 exits, which ends the namespace.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.systemctl("exit", check=False, timeout_s=10)
                launcher.wait(timeout=45)
        if launcher.poll() is None:
            # --kill-child: killing unshare kills PID 1 and so the namespace.
            launcher.kill()
        launcher.wait()

    def _remove_cgroup(self) -> None:
        cgroup, self._cgroup = self._cgroup, None
        if cgroup is None or not cgroup.exists():
            return
        kill = cgroup / "cgroup.kill"
        if kill.exists():
            # Anything that outlived PID 1 (nothing should) dies here.
            with contextlib.suppress(OSError):
                kill.write_text("1")
        # rmdir fails while killed processes are still exiting.
        wait_for(lambda: _remove_cgroup_tree(cgroup), timeout_s=15, what=f"{cgroup} to go")

    def overlay_upper(self, directory: str) -> Path:
        """What the namespace changed in an overlaid directory (its overlay's upper layer)."""
        assert directory in self.overlays, directory
        return self.scratch / "overlay" / directory.replace("/", "_") / "upper"

    @property
    def pid1(self) -> int | None:
        """systemd's PID (as the host sees it), once booted."""
        return self._pid1

    # -- driving systemd

    def run(
        self, *command: str, input: str | None = None, check: bool = True, timeout_s: float = 60
    ) -> str:
        """Run a command in the namespaces (the view systemd has); return its standard output."""
        assert self._pid1 is not None
        result = subprocess.run(
            ["nsenter", "-t", str(self._pid1), "-m", "-p", *command],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout_s,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()}"
                f"\n{self.diagnostics()}"
            )
        return result.stdout

    def systemctl(self, *args: str, check: bool = True, timeout_s: float = 60) -> str:
        return self.run("systemctl", "--no-pager", *args, check=check, timeout_s=timeout_s)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        output = self.systemctl("show", unit, *(f"--property={p}" for p in properties))
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)

    def diagnostics(self) -> str:
        parts = [tail(self.boot_log, 20), tail(self.console_log)]
        parts += [tail(path) for path in sorted(self.var_log.glob("*/*.log"))]
        return "\n".join(parts)


# -------------------------------------------------------------------- the service under test


@dataclass
class WatcherService:
    """The shipped unit, installed with a test drop-in, in a booted :class:`SystemdNamespace`."""

    ns: SystemdNamespace
    blink: SimulatedBlink
    executions: list[str]
    # The metrics listener, on the loopback the namespace shares with the host.
    server_port: int
    unit: str = UNIT
    # StateDirectory= of that unit.
    state_directory: str = "blink-watcher"

    @property
    def stdout_log(self) -> Path:
        return self.ns.var_log / Path(OUTPUT_DIR_INSIDE).name / "stdout.log"

    @property
    def stderr_log(self) -> Path:
        return self.ns.var_log / Path(OUTPUT_DIR_INSIDE).name / "stderr.log"

    @property
    def state_file(self) -> Path:
        # DynamicUser=yes: $STATE_DIRECTORY is a symlink into /var/lib/private/.
        return self.ns.var_lib / "private" / self.state_directory / "blink-watcher.db"

    def write_config(self, *, extra_blink_keys: str = "", extra_tables: str = "") -> None:
        config = f"""\
[blink]
base_url = "{self.blink.base_url}"
workspace_id = "ws"
api_key_file = "blink-api-key"
{extra_blink_keys}

[poll]
interval = 0.2
max_interval = 0.5

[watch]
executions = {json.dumps(self.executions)}

[state]
path = "blink-watcher.db"

[server]
listen = "127.0.0.1:{self.server_port}"

[[sinks]]
type = "log"

[[sinks]]
type = "webhook"
url = "{self.blink.hooks_base}/systemd-test"
secret_file = "webhook-secret"

{extra_tables}
"""
        # Write-then-rename: a reload never reads a half-written file.
        staging = self.ns.conf / ".config.toml.new"
        staging.write_text(config)
        staging.chmod(0o644)
        staging.replace(self.ns.conf / "config.toml")

    def show(self, *properties: str) -> dict[str, str]:
        return self.ns.show(self.unit, *properties)

    def http_get(self, path: str) -> int | None:
        """Status of GET ``path`` on the daemon's listener, None while it does not answer."""
        url = f"http://127.0.0.1:{self.server_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                status: int = response.status
                return status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def events(self) -> list[dict[str, object]]:
        """Events the log sink wrote (JSON lines on the service's standard output)."""
        try:
            lines = self.stdout_log.read_text().splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
        return events

    def finished(self) -> set[str]:
        return {
            str(e.get("execution_id"))
            for e in self.events()
            if e.get("event") == "execution.finished"
        }

    def deliveries(self) -> list[dict[str, object]]:
        """Requests the simulated webhook receiver answered with a 2xx."""
        deliveries = self.blink.stats()["deliveries"]
        assert isinstance(deliveries, list)
        return [d for d in deliveries if isinstance(d.get("status"), int) and d["status"] < 300]

    def start(self) -> dict[str, str]:
        """``systemctl start``, then wait until the daemon sent READY=1 and a STATUS= text."""
        self.ns.systemctl("start", self.unit)
        return self.wait_until_running(what="the unit to be ready with a status", status=True)

    def wait_for_unit(
        self, accept: Callable[[dict[str, str]], bool], *, what: str, timeout_s: float = 30
    ) -> dict[str, str]:
        """Poll the unit's state until ``accept`` takes it; return that state."""

        def state() -> dict[str, str] | None:
            current = self.show(*UNIT_STATE)
            return current if accept(current) else None

        return wait_for(state, timeout_s=timeout_s, what=what, diagnostics=self.ns.diagnostics)

    def wait_until_running(self, *, what: str, status: bool = False) -> dict[str, str]:
        """Wait for active/running (READY=1 seen; with ``status``, a STATUS= text too)."""
        return self.wait_for_unit(
            lambda s: (
                s["ActiveState"] == "active"
                and s["SubState"] == "running"
                and (bool(s["StatusText"]) or not status)
            ),
            what=what,
        )

    def wait_for_finished(self, *execution_ids: str, timeout_s: float = 30) -> None:
        wait_for(
            lambda: set(execution_ids) <= self.finished(),
            timeout_s=timeout_s,
            what=f"execution.finished for {', '.join(execution_ids)} in the log sink output",
            diagnostics=self.ns.diagnostics,
        )


DROP_IN = """\
[Service]
ExecStart=
ExecStart={venv}/bin/blink-watcher run -c {conf}/config.toml
# Fast enough for a test, slow enough for a loaded CI machine.
WatchdogSec=3s
RestartSec=100ms
# The shipped unit reads /etc/blink-watcher/*, which this test leaves alone.
LoadCredential=
LoadCredential=blink-api-key:{conf}/blink-api-key
LoadCredential=webhook-secret:{conf}/webhook-secret
"""
# Without journald in the namespace, the log sink's JSON lines and the
# diagnostics go to files; with it, the unit keeps its default (the journal).
OUTPUT_TO_FILES = """\
StandardOutput=append:{output}/stdout.log
StandardError=append:{output}/stderr.log
"""


def free_port() -> int:
    # Another process could take it before the daemon binds it; on loopback,
    # within a second, that does not happen in practice.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def install_service(
    ns: SystemdNamespace, venv: Path, unit_file: str, unit: str, *, output: str = "files"
) -> None:
    """Install a shipped unit file, a test drop-in, and the root-only credential sources.

    ``unit`` is the unit the test runs: ``unit_file`` itself, or an instance
    of it when it is a template. ``output``: "files" (see OUTPUT_TO_FILES) or
    "journal", as shipped.
    """
    shutil.copy(UNIT_SOURCE_DIR / unit_file, ns.units / unit_file)
    drop_in_dir = ns.units / f"{unit_file}.d"
    drop_in_dir.mkdir()
    drop_in = DROP_IN + (OUTPUT_TO_FILES if output == "files" else "")
    (drop_in_dir / "test.conf").write_text(
        drop_in.format(venv=venv, conf=CONF_DIR_INSIDE, output=OUTPUT_DIR_INSIDE)
    )
    # Referenced by the boot target, the unit stays loaded after a stop: systemd
    # would otherwise unload it and forget its Result= and ExecMainStatus=.
    boot_drop_in = ns.units / f"{BOOT_TARGET}.d"
    boot_drop_in.mkdir(exist_ok=True)
    (boot_drop_in / "keep-loaded.conf").write_text(f"[Unit]\nAfter={unit}\n")
    (ns.var_log / Path(OUTPUT_DIR_INSIDE).name).mkdir(exist_ok=True)
    # Like an operator's files: readable by root alone (systemd copies them to
    # $CREDENTIALS_DIRECTORY for the dynamic user), ending in a newline as
    # "echo KEY > file" leaves them.
    for name, value in (("blink-api-key", API_KEY), ("webhook-secret", WEBHOOK_SECRET)):
        path = ns.conf / name
        path.write_text(value + "\n")
        path.chmod(0o600)
