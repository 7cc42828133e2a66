"""The shipped unit under a real systemd: readiness, delivery, reload, watchdog, stop.

Each test boots its own systemd (see harness.py), installs the shipped unit
with a test drop-in, and drives it with systemctl. Conditions are polled with
generous deadlines; no test measures how long anything takes.
"""

from __future__ import annotations

import shutil

import pytest

from tests.systemd.harness import (
    API_KEY,
    CONF_DIR_INSIDE,
    WEBHOOK_SECRET,
    WatcherService,
    wait_for,
)

# Building the daemon's venv on a cold cache takes most of this.
pytestmark = [pytest.mark.systemd, pytest.mark.timeout(240)]

# systemd allocates DynamicUser= UIDs from this range (systemd.exec(5)).
DYNAMIC_UIDS = range(61184, 65520)
EX_CONFIG = 78


def test_start_reaches_ready_and_delivers_events(watcher_service: WatcherService) -> None:
    service = watcher_service
    state = service.start()
    assert state["StatusText"], "the daemon sent READY=1 without a STATUS= text"

    service.wait_for_finished("ex-1", "ex-2")
    # Relative [state] path resolved in $STATE_DIRECTORY, created by the dynamic
    # user, private to it.
    store = service.state_file
    assert store.exists(), f"no state store at {store}\n{service.ns.diagnostics()}"
    assert store.stat().st_uid in DYNAMIC_UIDS
    assert store.stat().st_mode & 0o077 == 0, oct(store.stat().st_mode)
    # The sandbox leaves a loopback listener working.
    wait_for(
        lambda: service.http_get("/readyz") == 200,
        timeout_s=30,
        what="/readyz to answer 200",
        diagnostics=service.ns.diagnostics,
    )
    # The webhook sink reached the receiver: the secret credential was readable
    # and outbound HTTP works inside the sandbox.
    wait_for(
        lambda: len(service.deliveries()) >= 2,
        timeout_s=30,
        what="two webhook deliveries at the simulated receiver",
        diagnostics=service.ns.diagnostics,
    )


def test_reload_watches_an_added_execution(watcher_service: WatcherService) -> None:
    service = watcher_service
    before = service.start()
    service.wait_for_finished("ex-1", "ex-2")

    service.executions.append("ex-3")
    service.write_config()
    # With ExecReload=kill -HUP, systemctl may return before the daemon has
    # re-read its config: the new event is what says the reload happened.
    service.ns.systemctl("reload", service.unit)
    service.wait_for_finished("ex-3")

    after = service.wait_until_running(what="the unit to be running again after the reload")
    assert after["MainPID"] == before["MainPID"], "reload restarted the daemon"
    assert after["NRestarts"] == before["NRestarts"]


def test_watchdog_restarts_a_hung_daemon(watcher_service: WatcherService) -> None:
    service = watcher_service
    before = service.start()
    service.wait_for_finished("ex-1", "ex-2")
    # Not reloaded: only a new process reads this, so ex-3's event later says
    # the restarted daemon works, not merely that it runs.
    service.executions.append("ex-3")
    service.write_config()

    # A stopped process sends no WATCHDOG=1: systemd must abort and restart it.
    service.ns.systemctl("kill", "--kill-who=main", "--signal=SIGSTOP", service.unit)
    restarted = service.wait_for_unit(
        lambda s: int(s["NRestarts"]) > int(before["NRestarts"]) and s["SubState"] == "running",
        what="systemd to restart the hung daemon",
        timeout_s=60,
    )
    assert restarted["MainPID"] != before["MainPID"]
    # Result=watchdog is reset when the new process starts; systemd's own log
    # keeps why it restarted.
    console = service.ns.console_log.read_text(errors="replace")
    assert "Failed with result 'watchdog'" in console, service.ns.diagnostics()
    service.wait_for_finished("ex-3")


def test_credentials_encrypted_with_systemd_creds(watcher_service: WatcherService) -> None:
    if shutil.which("systemd-creds") is None:
        pytest.skip("systemd-creds is not installed")
    service = watcher_service
    ns = service.ns
    # As in the README: encrypt with systemd-creds (inside the namespace, so
    # the host key it creates lands in the test's /var/lib), drop the plain
    # files, and point a drop-in at the encrypted ones.
    for name, secret in (("blink-api-key", API_KEY), ("webhook-secret", WEBHOOK_SECRET)):
        encrypted = f"{CONF_DIR_INSIDE}/{name}.cred"
        ns.run("systemd-creds", "encrypt", f"--name={name}", "-", encrypted, input=secret)
        (ns.conf / name).unlink()
    # Drop-ins apply in name order: this one must come after test.conf.
    (ns.units / f"{service.unit}.d" / "zz-encrypted.conf").write_text(
        "[Service]\n"
        "LoadCredential=\n"
        f"LoadCredentialEncrypted=blink-api-key:{CONF_DIR_INSIDE}/blink-api-key.cred\n"
        f"LoadCredentialEncrypted=webhook-secret:{CONF_DIR_INSIDE}/webhook-secret.cred\n"
    )
    ns.systemctl("daemon-reload")

    service.start()
    # Polls authenticated with the decrypted key, webhooks signed with the secret.
    service.wait_for_finished("ex-1", "ex-2")
    wait_for(
        lambda: len(service.deliveries()) >= 2,
        timeout_s=30,
        what="two webhook deliveries at the simulated receiver",
        diagnostics=ns.diagnostics,
    )


def test_stop_is_clean(watcher_service: WatcherService) -> None:
    service = watcher_service
    service.start()
    service.wait_for_finished("ex-1", "ex-2")
    invocation = service.show("InvocationID")["InvocationID"]

    service.ns.systemctl("stop", service.unit)

    state = service.show("InvocationID", "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    # The same invocation: systemd kept the unit loaded (it would otherwise
    # report a fresh unit's defaults).
    assert state["InvocationID"] == invocation
    assert state["ActiveState"] == "inactive"
    assert state["Result"] == "success", service.ns.diagnostics()
    # Exited by itself (CLD_EXITED = 1) with status 0, not killed by SIGTERM.
    assert (state["ExecMainCode"], state["ExecMainStatus"]) == ("1", "0"), service.ns.diagnostics()


def test_config_error_exits_78_and_is_not_restarted(watcher_service: WatcherService) -> None:
    service = watcher_service
    service.write_config(extra_blink_keys="no_such_key = 1")

    # Type=notify: the start job fails because the daemon exits before READY=1.
    service.ns.systemctl("start", service.unit, check=False)

    state = service.wait_for_unit(lambda s: s["ActiveState"] == "failed", what="the unit to fail")
    assert state["ExecMainStatus"] == str(EX_CONFIG), service.ns.diagnostics()
    # RestartPreventExitStatus=78: a broken config is not retried in a loop.
    assert state["NRestarts"] == "0"
    # One line for the journal, naming the file and the key; no traceback.
    [line] = service.stderr_log.read_text().splitlines()
    assert "config.toml" in line
    assert "no_such_key" in line


def test_template_instance_has_its_own_user_and_state(watcher_instance: WatcherService) -> None:
    service = watcher_instance
    service.start()
    service.wait_for_finished("ex-1", "ex-2")
    assert service.show("User")["User"] == "blink-watcher-demo"
    # StateDirectory=blink-watcher-%i, beside (not inside) the plain unit's.
    assert service.state_file.exists(), service.ns.diagnostics()
    assert service.state_file.stat().st_uid in DYNAMIC_UIDS
