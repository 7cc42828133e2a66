"""systemd/README.md walked through as written, under a real systemd: install to uninstall.

The README's shell blocks run in order, as root, in the namespace's view of
the host: ``/etc``, ``/opt`` and ``/root`` are overlays whose changes land in
the scratch directory, ``/var/lib`` and ``/var/log`` are scratch directories
(harness.py), so the host is never touched. Only what must differ here is
substituted, each substitution named where it is made: the release is built
by this module (``make dist``'s command) instead of copied over ssh, the key
is given instead of typed, the package manager is not run (``/var/lib/dpkg``
is hidden), and the operator's edits of the config point it at the simulated
Blink API and a free port. journald and the system bus run as on a Debian
host. The machinery is in walkthrough.py. The transcript (step, command, what it printed) is
printed, so ``pytest -s`` shows the walkthrough.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.systemd.harness import (
    API_KEY,
    REPO,
    SYSTEM_PYTHON,
    SystemdNamespace,
    free_port,
    run_simulator,
)
from tests.systemd.journald import install_journald, journald_missing, log_to_journal
from tests.systemd.walkthrough import (
    DBUS_UNITS,
    DISTRIBUTION_UNITS,
    UNIT,
    Operator,
    Releases,
    build_releases,
    install_dbus,
    sh_blocks,
)

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(240)]

WORKSPACE = "ws-1a2b3c"
# The README's execution, and the two the operator's later edits add.
FIRST, ADDED, HOOKED = (
    "01J9Z8Y7X6W5V4T3S2R1Q0P9N8",
    "01J9Z8Y7X6W5V4T3S2R1Q0P9N9",
    "01J9Z8Y7X6W5V4T3S2R1Q0PA00",
)
WRONG_KEY = "wrong-key-" + "w" * 16
ASK_PASSWORD = 'systemd-ask-password -n "Blink API key:"'
# /var/lib/dpkg is hidden in the namespace: the package is checked on the host instead.
NO_PACKAGE_MANAGER = ("apt-get update && apt-get install -y python3-venv\n", "")
ONLINE_INSTALL = "/opt/blink-watcher/bin/pip install ./blink_watcher-*.whl"
# What `cp -r dist root@HOST:blink-watcher-dist` leaves on the host, staged in
# the namespace's /run/blink-watcher-test (the harness's conf directory).
STAGED = "/run/blink-watcher-test"

# Blocks of the README not run here, and why: every other block runs.
NOT_RUN = {
    ("1. Install the daemon", 0): "runs on the build machine: the build fixture does the same",
}


@pytest.fixture(scope="module")
def releases(systemd_host: None, tmp_path_factory: pytest.TempPathFactory) -> Releases:
    """``make dist`` of the checkout, and of a copy one version up: both built at once."""
    try:
        import build  # noqa: F401
    except ImportError:
        pytest.skip("the build package is not installed (pip install -e '.[test]')")
    if subprocess.run([str(SYSTEM_PYTHON), "-c", "import ensurepip"], check=False).returncode:
        pytest.skip(f"{SYSTEM_PYTHON} has no venv module here (apt-get install python3-venv)")
    return build_releases(tmp_path_factory.mktemp("releases"))


@pytest.fixture
def operator(systemd_host: None, releases: Releases, tmp_path: Path) -> Iterator[Operator]:
    reason = journald_missing()
    if reason:
        pytest.skip(f"journald in the namespace: {reason}")
    for name in DBUS_UNITS:
        if not (DISTRIBUTION_UNITS / name).exists():
            pytest.skip(f"{DISTRIBUTION_UNITS / name} is not installed (apt-get install dbus)")
    scripts = tmp_path / "sim-scripts.json"
    scripts.write_text(
        json.dumps(
            [
                {"workspace_id": WORKSPACE, "execution_id": e, "steps": ["Completed"]}
                for e in (FIRST, ADDED, HOOKED)
            ]
        )
    )
    scratch = Path(tempfile.mkdtemp(prefix="blink-watcher-systemd-"))
    try:
        with run_simulator(scripts) as blink:
            ns = SystemdNamespace(scratch, overlays=("/etc", "/opt", "/root"))
            for name, dist in (("current", releases.current), ("upgrade", releases.upgrade)):
                shutil.copytree(dist, ns.conf / name)
            try:
                install_journald(ns)
                install_dbus(ns)
                ns.boot()
                log_to_journal(ns)
                operator = Operator(ns, blink, sh_blocks())
                try:
                    yield operator
                finally:
                    print("\n".join(operator.transcript))
            finally:
                ns.shutdown()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_every_block_of_the_walkthrough_is_run_or_said_why_not() -> None:
    blocks = sh_blocks()
    walked = [*STEPS, "Upgrade", "Uninstall"]

    assert set(walked) <= set(blocks), f"sections renamed? {sorted(blocks)}"
    expected = {(s, i) for s in walked for i in range(len(blocks[s]))} - set(NOT_RUN)
    assert expected == RUN_BY_THE_WALKTHROUGH | RUN_WITH_THE_ALTERNATIVES


STEPS = [
    "1. Install the daemon",
    "2. Provide the credentials",
    "3. Write and check the config",
    "4. Start it",
    "5. Change the list of executions",
]
RUN_BY_THE_WALKTHROUGH = {
    (STEPS[0], 1),
    (STEPS[1], 0),
    (STEPS[2], 0),
    (STEPS[2], 1),
    (STEPS[3], 0),
    (STEPS[3], 1),
    (STEPS[4], 0),
    (STEPS[4], 1),
    (STEPS[4], 2),
    (STEPS[4], 3),
    ("Upgrade", 0),
    ("Uninstall", 0),
}
RUN_WITH_THE_ALTERNATIVES = {
    (STEPS[0], 1),
    (STEPS[0], 2),
    (STEPS[0], 3),
    (STEPS[1], 1),
    (STEPS[2], 0),
    (STEPS[2], 2),
    (STEPS[3], 0),
}


def test_the_readme_works_as_written_from_install_to_uninstall(
    operator: Operator, releases: Releases
) -> None:
    op, ns = operator, operator.ns
    config = "/etc/blink-watcher/config.toml"
    port = free_port()

    # The build machine's `ssh ... rm -rf ... && scp -r dist root@HOST:blink-watcher-dist`.
    op.shell(f"cp -r {STAGED}/current ~/blink-watcher-dist", title="(copy dist/ to the host)")

    # 1. Install: the package manager is not run here (its database is hidden).
    out = op.step(STEPS[0], 1, replace=(NO_PACKAGE_MANAGER,))
    assert f"blink-watcher {releases.current_version}\n" in out
    assert ONLINE_INSTALL in out
    for unit in ("blink-watcher.service", "blink-watcher@.service"):
        assert (ns.units / unit).read_text() == (REPO / "systemd" / unit).read_text()

    # 2. Credentials: the key typed is wrong (found out in step 4).
    op.step(STEPS[1], 0, replace=((ASK_PASSWORD, f"printf %s {WRONG_KEY}"),))
    etc = ns.overlay_upper("/etc") / "blink-watcher"
    assert (etc / "blink-api-key").read_text() == WRONG_KEY
    for name in ("blink-api-key", "webhook-secret"):
        assert (etc / name).stat().st_mode & 0o777 == 0o600

    # 3. The config as written, then the operator's edits: the simulated Blink
    # API, and a free port (the namespace shares the host's network).
    op.step(STEPS[2], 0)
    op.edit(config, "[blink]\n", f'[blink]\nbase_url = "{op.blink.base_url}"\n')
    op.edit(config, "127.0.0.1:9464", f"127.0.0.1:{port}")
    out = op.step(STEPS[2], 1)
    assert "# state file: /var/lib/blink-watcher/blink-watcher.db (" in out
    assert 'api_key = "<redacted, from file /etc/blink-watcher/blink-api-key>"' in out
    assert "# OK: /etc/blink-watcher/config.toml" in out
    assert WRONG_KEY not in out

    # 4. Start: ready, although the key is wrong.
    out = op.step(STEPS[3], 0)
    assert "Active: active (running)" in out
    assert FIRST in out  # status lists the watch
    state = op.unit("ActiveState", "SubState", "StatusText")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running")
    # The service's state file is the one check-config and status named.
    assert (ns.var_lib / "blink-watcher").resolve() == ns.var_lib / "private" / "blink-watcher"
    assert (ns.var_lib / "private" / "blink-watcher" / "blink-watcher.db").exists()
    op.wait_until(
        lambda: any(line.get("event") == "api.auth_failed" for line in op.journal()),
        "api.auth_failed in the journal",
    )
    [failed] = [line for line in op.journal() if line.get("event") == "api.auth_failed"]
    assert "systemctl restart" in str(failed["action"])
    assert op.readyz(port) == 503
    op.wait_until(
        lambda: "API rejects the key" in op.unit("StatusText")["StatusText"],
        "the unit's status to say the key is rejected",
    )

    # What the README says about reload, checked: the right key in place, a
    # reload re-reads the config but the credential is still the copy made at
    # start, and the daemon still uses the wrong key.
    reloads = sum(1 for line in op.journal() if line.get("event") == "config.reloaded")
    op.shell(
        f"printf %s {API_KEY} > /etc/blink-watcher/blink-api-key\nsystemctl reload blink-watcher",
        title="(not in the README: a reload after replacing the key)",
    )
    op.wait_until(
        lambda: sum(1 for line in op.journal() if line.get("event") == "config.reloaded") > reloads,
        "config.reloaded after the reload",
    )
    assert op.read(f"/run/credentials/{UNIT}/blink-api-key") == WRONG_KEY
    assert op.readyz(port) == 503

    # The README's fix: replace the file, restart.
    out = op.step(STEPS[3], 1, replace=((ASK_PASSWORD, f"printf %s {API_KEY}"),))
    assert "api.auth_failed" in out  # journalctl -p warning showed the error
    op.wait_until(lambda: op.readyz(port) == 200, "/readyz 200 after the restart")
    op.wait_until(lambda: FIRST in op.finished(), f"{FIRST} reported")
    out = op.step(STEPS[3], 0)  # enable --now (already), status, status: the result shown
    assert "Completed" in out

    # 5. Add an execution, reload: same process, the new one reported.
    pid = op.unit("MainPID")["MainPID"]
    op.edit(config, f'executions = ["{FIRST}"]', f'executions = ["{FIRST}", "{ADDED}"]')
    op.step(STEPS[4], 0)
    op.wait_until(lambda: ADDED in op.finished(), f"{ADDED} reported after the reload")
    assert op.unit("MainPID")["MainPID"] == pid

    # A webhook sink whose URL is a credential: the secret, the operator's
    # edits (uncomment the sink, url_file, the URL file, one more execution),
    # the drop-in, check-config and the restart.
    op.step(STEPS[4], 1)
    secret = (etc / "webhook-secret").read_text()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret), secret
    hook_url = f"{op.blink.hooks_base}/readme"
    op.shell(
        f"(umask 077 && printf %s {hook_url} > /etc/blink-watcher/webhook-url)",
        title="(the webhook URL, written the same way as the secret)",
    )
    sink = '# [[sinks]]\n# type = "webhook"\n# url = "https://hooks.example.com/blink"\n'
    op.edit(config, sink, '[[sinks]]\ntype = "webhook"\nurl_file = "webhook-url"\n')
    op.edit(config, '# secret_file = "webhook-secret"', 'secret_file = "webhook-secret"')
    op.edit(config, f'"{ADDED}"]', f'"{ADDED}", "{HOOKED}"]')
    op.step(STEPS[4], 2)
    out = op.step(STEPS[4], 3)
    assert 'url = "<redacted, from file webhook-url>"' in out
    assert secret not in out
    assert hook_url not in out

    def hooked_delivered() -> bool:
        deliveries = op.blink.stats()["deliveries"]
        assert isinstance(deliveries, list)
        return any(d["name"] == "readme" and d["status"] == 200 for d in deliveries)

    op.wait_until(hooked_delivered, f"{HOOKED} delivered to the webhook")

    # Upgrade to a newer build of the same sources.
    op.shell(
        f"rm -rf ~/blink-watcher-dist && cp -r {STAGED}/upgrade ~/blink-watcher-dist",
        title="(copy the new dist/ to the host)",
    )
    out = op.step("Upgrade", 0)
    assert f"blink-watcher {releases.upgrade_version}\n" in out
    for execution in (FIRST, ADDED, HOOKED):
        assert execution in out
    [backup] = (ns.overlay_upper("/root")).glob("blink-watcher-state-*")
    assert (backup / "blink-watcher.db").exists()
    state = op.unit("ActiveState", "SubState")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running")
    op.wait_until(lambda: op.readyz(port) == 200, "/readyz 200 after the upgrade")
    # Nothing reported twice across restarts and the upgrade.
    assert sorted(op.finished()) == sorted([FIRST, ADDED, HOOKED])

    # Where the README says systemd keeps the state and logs (DynamicUser=yes).
    for var, private in (
        (ns.var_lib, "private/blink-watcher"),
        (ns.var_log, "private/blink-watcher"),
    ):
        assert (var / "blink-watcher").is_symlink()
        assert (var / "blink-watcher").resolve() == var / private

    # Uninstall: nothing of it is left.
    op.step("Uninstall", 0)
    assert op.unit("LoadState")["LoadState"] == "not-found"
    left = [str(p) for p in ns.units.rglob("blink-watcher*")]
    for upper in (ns.overlay_upper("/etc"), ns.overlay_upper("/opt")):
        left += [str(p) for p in upper.rglob("blink-watcher*")]
    left += [str(p) for p in ns.overlay_upper("/root").glob("blink-watcher-dist")]
    for var in (ns.var_lib, ns.var_log):
        left += [str(p) for p in var.glob("blink-watcher*")]
        left += [str(p) for p in var.glob("private/blink-watcher*")]
    assert left == []

    assert op.ran == RUN_BY_THE_WALKTHROUGH


def test_the_offline_install_and_encrypted_credentials_work_as_written(
    operator: Operator, releases: Releases, tmp_path: Path
) -> None:
    op, ns = operator, operator.ns
    config = "/etc/blink-watcher/config.toml"
    port = free_port()

    # The build machine: after make dist, the wheels for a host without an index.
    build_machine = tmp_path / "checkout"
    shutil.copytree(releases.current, build_machine / "dist")
    download = op.blocks[STEPS[0]][2].replace(".venv/bin/pip", f"{sys.executable} -m pip")
    op.ran.add((STEPS[0], 2))
    result = subprocess.run(
        ["bash", "-euvc", download],
        cwd=build_machine,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    op.transcript.append(f"===== {STEPS[0]} (block 3, on the build machine)\n{result.stderr}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert any((build_machine / "dist" / "wheels").glob("aiohttp-*.whl"))
    shutil.copytree(build_machine / "dist", ns.conf / "offline")
    op.shell(f"cp -r {STAGED}/offline ~/blink-watcher-dist", title="(copy dist/ to the host)")
    offline = op.blocks[STEPS[0]][3].strip()
    op.ran.add((STEPS[0], 3))
    # A host without an index: no pip settings at all, so nothing comes from elsewhere.
    op.pip_environment = {"PIP_CONFIG_FILE": "/dev/null"}
    out = op.step(STEPS[0], 1, replace=(NO_PACKAGE_MANAGER, (ONLINE_INSTALL, offline)))
    assert "Looking in links: /root/blink-watcher-dist/wheels\n" in out
    assert f"blink-watcher {releases.current_version}\n" in out

    # The encrypted alternative of step 2, then steps 3 and 4 with its check-config.
    op.step(STEPS[1], 1, replace=((ASK_PASSWORD, f"printf %s {API_KEY}"),))
    etc = ns.overlay_upper("/etc") / "blink-watcher"
    assert sorted(p.name for p in etc.iterdir()) == ["blink-api-key.cred", "webhook-secret.cred"]
    assert API_KEY.encode() not in (etc / "blink-api-key.cred").read_bytes()
    op.step(STEPS[2], 0)
    op.edit(config, "[blink]\n", f'[blink]\nbase_url = "{op.blink.base_url}"\n')
    op.edit(config, "127.0.0.1:9464", f"127.0.0.1:{port}")
    out = op.step(STEPS[2], 2)
    assert "# state file: /var/lib/blink-watcher/blink-watcher.db (" in out
    assert "# OK: /etc/blink-watcher/config.toml" in out
    assert API_KEY not in out

    out = op.step(STEPS[3], 0)
    assert "Active: active (running)" in out
    op.wait_until(lambda: FIRST in op.finished(), f"{FIRST} reported")
    op.wait_until(lambda: op.readyz(port) == 200, "/readyz 200")
    assert op.ran == RUN_WITH_THE_ALTERNATIVES
