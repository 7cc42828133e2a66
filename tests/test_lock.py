"""One daemon per state file: the lock refuses a second holder and dies with its process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from watcher.lock import StateInUseError, StateLock


def test_a_second_holder_is_refused_naming_the_file_and_the_holder(tmp_path: Path) -> None:
    state = tmp_path / "state.db"

    with StateLock(state), pytest.raises(StateInUseError) as info, StateLock(state):
        pass

    assert str(state) in str(info.value)
    assert f"process {os.getpid()}" in str(info.value)
    assert not state.exists()  # neither holder touched the state file itself


def test_the_lock_is_free_again_once_released(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    with StateLock(state):
        pass

    with StateLock(state) as lock:
        assert lock.path.read_text() == f"{os.getpid()}\n"


def test_kill_9_releases_the_lock(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib; from watcher.lock import StateLock\n"
            "with StateLock(pathlib.Path(sys.argv[1])):\n"
            "    print('held', flush=True); sys.stdin.read()",
            str(state),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(StateInUseError, match=f"process {holder.pid}"), StateLock(state):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)

    with StateLock(state):
        pass
