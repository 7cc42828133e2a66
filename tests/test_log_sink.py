"""The log sink: one event per line, on standard output or appended to a file, nothing else."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from watcher.config import LogSinkConfig
from watcher.errors import DeliveryError
from watcher.sinks import build_sink
from watcher.sinks.log import LogSink

FIRST = b'{"event":"execution.finished","event_id":"evt_1","state":"Completed"}'
SECOND = '{"event":"execution.not_found","event_id":"evt_2","note":"caf\u00e9"}'.encode()


@pytest.fixture
async def make_sink() -> AsyncIterator[Callable[[Path | None], LogSink]]:
    sinks: list[LogSink] = []

    def factory(path: Path | None) -> LogSink:
        sink = LogSink(LogSinkConfig(name="log", path=path))
        sinks.append(sink)
        return sink

    yield factory
    for sink in sinks:
        await sink.close()


async def test_each_event_is_one_line_on_standard_output_and_nothing_else(
    make_sink: Callable[[Path | None], LogSink], capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    sink = make_sink(None)

    await sink.deliver("evt_1", FIRST)
    await sink.deliver("evt_2", SECOND)

    out, err = capfdbinary.readouterr()
    assert out == FIRST + b"\n" + SECOND + b"\n"
    assert err == b""
    assert [json.loads(line)["event_id"] for line in out.splitlines()] == ["evt_1", "evt_2"]


async def test_each_line_reaches_the_file_before_deliver_returns(
    make_sink: Callable[[Path | None], LogSink], tmp_path: Path
) -> None:
    path = tmp_path / "results.jsonl"
    sink = make_sink(path)

    await sink.deliver("evt_1", FIRST)
    # Flushed, not sitting in a buffer: a `tail -f` reader sees it now.
    assert path.read_bytes() == FIRST + b"\n"

    await sink.deliver("evt_2", SECOND)
    assert path.read_bytes() == FIRST + b"\n" + SECOND + b"\n"


async def test_the_file_is_appended_to_not_truncated(
    make_sink: Callable[[Path | None], LogSink], tmp_path: Path
) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"earlier":true}\n')

    first = make_sink(path)
    await first.deliver("evt_1", FIRST)
    await first.close()
    second = make_sink(path)
    await second.deliver("evt_2", SECOND)

    assert path.read_bytes().splitlines() == [b'{"earlier":true}', FIRST, SECOND]


async def test_missing_parent_directories_are_created(
    make_sink: Callable[[Path | None], LogSink], tmp_path: Path
) -> None:
    path = tmp_path / "var" / "log" / "blink-watcher" / "results.jsonl"

    await make_sink(path).deliver("evt_1", FIRST)

    assert path.read_bytes() == FIRST + b"\n"


async def test_writing_to_a_file_leaves_standard_output_alone(
    make_sink: Callable[[Path | None], LogSink],
    tmp_path: Path,
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    await make_sink(tmp_path / "results.jsonl").deliver("evt_1", FIRST)

    assert capfdbinary.readouterr() == (b"", b"")


async def test_an_unwritable_path_is_a_retryable_delivery_error(
    make_sink: Callable[[Path | None], LogSink], tmp_path: Path
) -> None:
    (tmp_path / "afile").write_text("a regular file, not a directory")
    sink = make_sink(tmp_path / "afile" / "results.jsonl")

    with pytest.raises(DeliveryError) as info:
        await sink.deliver("evt_1", FIRST)

    # The disk may be fixed while the daemon runs: worth trying again.
    assert info.value.retryable is True
    assert "cannot write" in str(info.value)


async def test_closing_twice_is_harmless_and_a_later_event_reopens_the_file(
    make_sink: Callable[[Path | None], LogSink], tmp_path: Path
) -> None:
    path = tmp_path / "results.jsonl"
    sink = make_sink(path)
    await sink.deliver("evt_1", FIRST)
    await sink.close()
    await sink.close()

    await sink.deliver("evt_2", SECOND)

    assert path.read_bytes().splitlines() == [FIRST, SECOND]


def test_build_sink_makes_a_log_sink_for_a_log_config() -> None:
    sink = build_sink(LogSinkConfig(name="log:stdout"))

    assert isinstance(sink, LogSink)
    assert sink.name == "log:stdout"
