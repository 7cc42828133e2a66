"""``blink-watcher watch``: arguments, the run against the simulator, the real CLI process."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from watcher import logs as wlogging
from watcher.cli import build_parser, main
from watcher.cli.live import LiveTable
from watcher.cli.watch import (
    MemoryStore,
    UsageError,
    WatchAborted,
    WatchPlan,
    all_completed,
    parse_ids,
    plan_from_args,
    run_watch,
)
from watcher.config import BlinkConfig, PollConfig, Secret
from watcher.errors import ConfigError
from watcher.models import WatchRow
from watcher.sim import Simulator

KEY = "sk-test-0123456789-SECRET"
WS = "ws-main"


def script(execution_id: str, steps: list[str], playbook: str = "Restart pod") -> dict[str, Any]:
    return {
        "workspace_id": WS,
        "execution_id": execution_id,
        "steps": steps,
        "fields": {"playbook_name": playbook},
    }


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    scripts = [
        script("ok-1", ["Pending", "Running", "Completed"], "Enrich phishing IOC"),
        script("ok-2", ["Running", "completed"], "Rotate IAM keys"),
        script("bad-1", ["Running", "Failed"], "Isolate compromised host"),
        script("flaky", ["Pending", "!503", "!429:0", "Running", "Completed"]),
        script("forever", ["Running"]),
    ]
    async with Simulator(api_key=KEY, scripts=scripts) as simulator:
        yield simulator


@pytest.fixture
def diagnostics() -> Iterator[io.StringIO]:
    """What in-process runs log, kept apart from whatever another test configured."""
    saved = structlog.get_config()
    stream = io.StringIO()
    wlogging.configure("warning", "console", stream=stream)
    yield stream
    structlog.configure(**saved)


def args_for(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["watch", *argv])


# --- arguments ------------------------------------------------------------------------------


def test_ids_take_the_default_workspace_keep_their_order_and_drop_duplicates() -> None:
    assert parse_ids(["ex-1", "ws-b/ex-2", " ex-1 ", "ws-main/ex-1"], "ws-main") == (
        ("ws-main", "ex-1"),
        ("ws-b", "ex-2"),
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("a/b/c", "is not EXEC_ID or WS_ID/EXEC_ID"),
        ("/ex-1", "is not EXEC_ID or WS_ID/EXEC_ID"),
        ("ex 1", "contains white space"),
        ("ex-1", "has no workspace: pass --workspace WS"),
    ],
)
def test_bad_ids_are_usage_errors(raw: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_ids([raw], None)


def test_without_a_config_the_key_comes_from_the_environment_and_flags_apply() -> None:
    plan = plan_from_args(
        args_for("--workspace", "ws-a", "--base-url", "http://127.0.0.1:9/api/v1/", "ex-1"),
        environ={"BLINK_API_KEY": f" {KEY}\n"},
    )
    assert plan.keys == (("ws-a", "ex-1"),)
    assert plan.blink.base_url == "http://127.0.0.1:9/api/v1"
    assert plan.blink.api_key == Secret(KEY)
    assert plan.poll == PollConfig()
    assert KEY not in repr(plan)


def test_without_a_config_or_key_it_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"\$BLINK_API_KEY is not set"):
        plan_from_args(args_for("ws/ex-1"), environ={})


def test_plain_http_to_a_remote_host_is_refused() -> None:
    with pytest.raises(UsageError, match="--base-url: plain http is only allowed for loopback"):
        plan_from_args(
            args_for("--base-url", "http://blink.example.com/api/v1", "ws/ex-1"),
            environ={"BLINK_API_KEY": KEY},
        )


@pytest.mark.parametrize("interval", ["0", "-1", "nan", "inf"])
def test_interval_must_be_a_positive_number(interval: str) -> None:
    with pytest.raises(UsageError, match="--interval must be a positive number"):
        plan_from_args(args_for("--interval", interval, "ws/ex"), environ={"BLINK_API_KEY": KEY})


def test_a_config_file_supplies_the_api_settings_and_the_flags_override_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_KEY", KEY)  # config.py reads secrets from the real environment
    config = tmp_path / "config.toml"
    config.write_text(
        '[blink]\nworkspace_id = "ws-conf"\napi_key_env = "MY_KEY"\nrate_limit = 0\n'
        "[poll]\ninterval = 1.0\nmax_interval = 2.0\nnot_found_grace = 5\n"
    )
    env = {"MY_KEY": KEY, "BLINK_WATCHER_CONFIG": str(config)}
    plan = plan_from_args(args_for("--interval", "3", "ex-1"), environ=env)
    assert plan.keys == (("ws-conf", "ex-1"),)
    assert plan.blink.rate_limit_per_s == 0
    assert plan.blink.base_url == "https://app.blinkops.com/api/v1"
    assert (plan.poll.interval_s, plan.poll.max_interval_s, plan.poll.not_found_grace) == (
        3.0,
        3.0,
        5,
    )

    plan = plan_from_args(args_for("-c", str(config), "--workspace", "ws-flag", "x"), environ=env)
    assert plan.keys == (("ws-flag", "x"),)
    assert plan.poll.interval_s == 1.0

    # $BLINK_WATCHER_CONFIG naming no file: watch falls back to the environment.
    env = {"BLINK_WATCHER_CONFIG": str(tmp_path / "none.toml"), "BLINK_API_KEY": KEY}
    plan = plan_from_args(args_for("ws/x"), environ=env)
    assert (plan.blink.api_key_source, plan.blink.rate_limit_per_s) == ("env BLINK_API_KEY", 10)


def test_a_missing_config_file_given_with_c_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="no such file"):
        plan_from_args(args_for("-c", str(missing), "ws/x"), environ={"BLINK_API_KEY": KEY})
    assert main(["watch", "-c", str(missing), "ws/x"]) == 78
    err = capsys.readouterr().err
    assert err == f"blink-watcher: configuration error: {missing}: no such file\n"


def test_a_bad_id_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BLINK_API_KEY", KEY)
    monkeypatch.delenv("BLINK_WATCHER_CONFIG", raising=False)
    assert main(["watch", "--workspace", "ws", "a/b/c"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", "blink-watcher: 'a/b/c' is not EXEC_ID or WS_ID/EXEC_ID\n")


# --- the run, in process --------------------------------------------------------------------


def plan_for(sim: Simulator, *ids: str, grace: int = 3) -> WatchPlan:
    blink = BlinkConfig(
        base_url=sim.base_url,
        api_key=Secret(KEY),
        rate_limit_per_s=0,  # unlimited: the test must not wait on the limiter
        retry_backoff_s=0.001,
        retry_backoff_max_s=0.01,
    )
    poll = PollConfig(interval_s=0.005, max_interval_s=0.02, jitter=0, not_found_grace=grace)
    return WatchPlan(blink, poll, parse_ids(ids, WS))


async def test_run_watch_follows_each_execution_to_its_event(
    sim: Simulator, diagnostics: io.StringIO
) -> None:
    out = io.StringIO()
    table = LiveTable(out, tty=False)
    events = await run_watch(plan_for(sim, "ok-1", "flaky", "bad-1", "missing"), table)
    assert [(e.key[1], e.event, e.state, e.polls) for e in events] == [
        ("ok-1", "execution.finished", "Completed", 3),
        ("flaky", "execution.finished", "Completed", 3),  # faults are not polls
        ("bad-1", "execution.finished", "Failed", 2),
        ("missing", "execution.not_found", None, 3),
    ]
    assert not all_completed(events)
    assert all_completed(events[:2])
    lines = out.getvalue().splitlines()
    mine = [re.sub(r"\d+\.\ds", "Ts", line) for line in lines if line.startswith("ws-main/ok-1 ")]
    assert mine == [
        "ws-main/ok-1  Pending  (poll 1, Ts)",
        "ws-main/ok-1  Running  (poll 2, Ts)",
        "ws-main/ok-1  Completed  (poll 3, Ts)",
    ]
    missing = [line for line in lines if line.startswith("ws-main/missing ")]
    assert len(missing) == 1  # the 404s within the grace have no state to show
    assert missing[0].startswith("ws-main/missing  not found  (poll 3, ")
    assert "execution.not_found" in diagnostics.getvalue()


async def test_on_a_tty_the_table_is_redrawn_and_names_the_playbooks(
    sim: Simulator, diagnostics: io.StringIO
) -> None:
    out = io.StringIO()
    with LiveTable(out, tty=True, color=False, size=(120, 40)) as table:
        events = await run_watch(plan_for(sim, "ok-1", "ok-2"), table)
        table.finish(events)
    text = out.getvalue()
    assert "\x1b[4A\r" in text  # header + 2 rows + footer, redrawn in place
    assert "Enrich phishing IOC" in text
    assert "Rotate IAM keys" in text
    assert text.endswith("2 executions: 2 Completed\n\x1b[?25h")
    assert all_completed(events)  # "completed" in lower case counts too


async def test_a_rejected_key_ends_the_watch_with_one_clear_reason(
    sim: Simulator, diagnostics: io.StringIO
) -> None:
    sim.set_api_key("another-key")
    with pytest.raises(WatchAborted, match="rejected the API key: HTTP 401") as caught:
        await run_watch(plan_for(sim, "ok-1"), LiveTable(io.StringIO(), tty=False))
    assert KEY not in str(caught.value)
    assert "api.auth_failed" in diagnostics.getvalue()
    assert KEY not in diagnostics.getvalue()


async def test_memory_store_remembers_the_last_response_until_forgotten() -> None:
    changes: list[WatchRow] = []
    store = MemoryStore(changes.append)
    row = WatchRow(("ws", "ex"), "Running", 1, 1.0, 1.0, {"state": "Running"})
    store.save_watch(row)
    assert changes == [row]
    assert await store.last_response(("ws", "ex")) == {"state": "Running"}
    store.forget_watch(("ws", "ex"))
    store.forget_watch(("ws", "ex"))
    assert await store.last_response(("ws", "ex")) is None


# --- the real CLI process ---------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BLINK_WATCHER_CONFIG", "NO_COLOR")}
    env.pop("BLINK_API_KEY", None)
    return {**env, "BLINK_API_KEY": KEY, **extra}


async def run_cli(sim: Simulator, *ids: str, env: dict[str, str] | None = None) -> Result:
    argv = ["watch", "--base-url", sim.base_url, "--workspace", WS, "--interval", "0.02", *ids]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watcher",
        *argv,
        env=cli_env() if env is None else env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    result = Result(proc.returncode or 0, out.decode(), err.decode())
    assert KEY not in result.out
    assert KEY not in result.err
    assert "Traceback" not in result.err
    assert "\x1b" not in result.out  # not a TTY: no cursor movement, no colour
    return result


def normalized(text: str) -> list[str]:
    """Lines with times made stable and column padding squeezed."""
    text = re.sub(r"\b\d+(\.\d+)?(ms|s)\b|\b\d+m\d\ds\b", "T", text)
    return [re.sub(r" {2,}", "  ", line) for line in text.splitlines()]


def progress_of(lines: Sequence[str], execution_id: str) -> list[str]:
    return [line for line in lines if line.startswith(f"{WS}/{execution_id}  ") and "(poll" in line]


async def test_cli_all_completed_exits_0(sim: Simulator) -> None:
    result = await run_cli(sim, "ok-1", f"{WS}/ok-2")
    assert result.code == 0, result.err
    lines = normalized(result.out)
    assert progress_of(lines, "ok-1") == [
        "ws-main/ok-1  Pending  (poll 1, T)",
        "ws-main/ok-1  Running  (poll 2, T)",
        "ws-main/ok-1  Completed  (poll 3, T)",
    ]
    assert progress_of(lines, "ok-2") == [
        "ws-main/ok-2  Running  (poll 1, T)",
        "ws-main/ok-2  completed  (poll 2, T)",
    ]
    assert lines[5:] == [
        "",
        "EXECUTION  PLAYBOOK  STATE  DURATION  FAILED  ERROR",
        "ws-main/ok-1  Enrich phishing IOC  Completed  T  0/5",
        "ws-main/ok-2  Rotate IAM keys  completed  T  0/6",
        "2 executions: 2 Completed",
    ]
    assert result.err == ""


async def test_cli_one_failed_exits_1(sim: Simulator) -> None:
    result = await run_cli(sim, "ok-1", "bad-1")
    assert result.code == 1, result.err
    lines = normalized(result.out)
    assert progress_of(lines, "bad-1") == [
        "ws-main/bad-1  Running  (poll 1, T)",
        "ws-main/bad-1  Failed  (poll 2, T)",
    ]
    assert lines[-3:] == [
        "ws-main/ok-1  Enrich phishing IOC  Completed  T  0/5",
        "ws-main/bad-1  Isolate compromised host  Failed  T  1/7  "
        "CrowdStrike API returned 403: API client lacks the Hosts:...",
        "2 executions: 1 Completed, 1 Failed",
    ]


async def test_cli_an_execution_that_is_not_found_exits_1(sim: Simulator) -> None:
    result = await run_cli(sim, "no-such-execution")
    assert result.code == 1, result.err
    assert normalized(result.out) == [
        "ws-main/no-such-execution  not found  (poll 3, T)",  # after not_found_grace 404s
        "",
        "EXECUTION  PLAYBOOK  STATE  DURATION  FAILED  ERROR",
        "ws-main/no-such-execution  -  not found  -  -  "
        "HTTP 404: no such execution in this workspace",
        "1 execution: 1 not found",
    ]
    assert sim.requests_for(WS, "no-such-execution") == 3
    # The diagnostic is a console line on stderr, at warning level.
    assert "execution.not_found" in result.err
    assert "warning" in result.err


async def test_cli_without_an_api_key_exits_2_with_one_line(sim: Simulator) -> None:
    env = cli_env()
    del env["BLINK_API_KEY"]
    result = await run_cli(sim, "ok-1", env=env)
    assert (result.code, result.out) == (2, "")
    assert result.err == "blink-watcher: $BLINK_API_KEY is not set (export it, or pass -c FILE)\n"
    assert sim.total_requests == 0


async def test_cli_ctrl_c_exits_130_cleanly(sim: Simulator) -> None:
    argv = ["watch", "--base-url", sim.base_url, "--interval", "0.02", f"{WS}/forever"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watcher",
        *argv,
        env=cli_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert first.decode().startswith("ws-main/forever  Running  (poll 1, ")
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130
    assert err.decode() == "blink-watcher: interrupted\n"
    assert KEY not in out.decode()
