"""``python -m watcher.sim``: the listening line, signals and bad input."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.sim.helpers import KEY, WS, one
from watcher.sim import demo_scripts, main


async def test_cli_prints_its_listening_line_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts.json"
    scripts.write_text(json.dumps([one(["Running", "Completed"])]))
    hooks = tmp_path / "hooks.json"
    hooks.write_text(json.dumps({"h": ["503"]}))
    env = {**os.environ, "SIM_KEY": KEY}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "watcher.sim", "--scripts", str(scripts),
        "--hook-scripts", str(hooks), "--api-key-env", "SIM_KEY", "--demo",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = json.loads(await asyncio.wait_for(proc.stdout.readline(), timeout=20))
        port = line["port"]
        assert line["base_url"] == f"http://127.0.0.1:{port}/api/v1"
        assert line["hooks_base"] == f"http://127.0.0.1:{port}/hooks"
        async with aiohttp.ClientSession(headers={"BLINK-API-KEY": KEY}) as client:
            url = f"{line['base_url']}/workspace/{WS}/executions/ex-1"
            async with client.get(url) as r:
                assert (await r.json())["state"] == "Running"
            async with client.post(f"{line['hooks_base']}/h", json={}) as r:
                assert r.status == 503
            demo = demo_scripts()[0]
            ws, ex = demo["workspace_id"], demo["execution_id"]
            url = f"{line['base_url']}/workspace/{ws}/executions/{ex}"
            async with client.get(url) as r:
                assert r.status == 200  # --demo loaded the demo scripts too
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), timeout=20)
        rest, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert rc == 0, err
    assert rest == b""  # exactly one line on stdout


def test_cli_refuses_to_start_without_an_api_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SIM_NO_SUCH_KEY", raising=False)
    assert main(["--api-key-env", "SIM_NO_SUCH_KEY"]) == 2
    assert "SIM_NO_SUCH_KEY" in capsys.readouterr().err


def test_cli_reports_a_bad_scripts_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "scripts.json"
    bad.write_text(json.dumps([one(["!bogus"])]))
    monkeypatch.setenv("BLINK_API_KEY", KEY)
    assert main(["--scripts", str(bad)]) == 2
    err = capsys.readouterr()
    assert "!bogus" in err.err
    assert err.out == ""
