"""The service builds, then runs; a reload swaps everything in or nothing; stop closes all."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.test_delivery import RecordingSink
from tests.waiting import until
from watcher.blink import RateLimiter
from watcher.config import Config, SinkConfig, load_config
from watcher.errors import DeliveryError, StoreError
from watcher.metrics import Metrics
from watcher.models import Execution, ExecutionKey
from watcher.service import Service
from watcher.store import Store
from watcher.systemd import Notifier

API_KEY = "service-test-key-0123456789"


class FakeClient:
    """Answers Running (or a scripted state) for every execution; records being closed."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.limiter = RateLimiter(0.0)
        self.states: dict[ExecutionKey, str] = {}
        self.polls: dict[ExecutionKey, int] = {}
        self.closed = False

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.closed = True

    async def get_execution(self, key: ExecutionKey) -> Execution:
        self.polls[key] = self.polls.get(key, 0) + 1
        return Execution.from_api({"id": key[1], "state": self.states.get(key, "Running")})


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__(None)
        self.sent: list[str] = []

    def send(self, *fields: str) -> None:
        self.sent.extend(fields)

    def count(self, field: str) -> int:
        return sum(1 for f in self.sent if f == field)


class Daemon:
    """A Service with fake client and sinks on a real store, run as a task."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("BLINK_API_KEY", API_KEY)
        self.path = tmp_path / "config.toml"
        self.state_path = tmp_path / "state.db"
        self.clients: list[FakeClient] = []
        self.sinks: list[RecordingSink] = []
        self.broken_sinks: set[str] = set()
        self.notifier = RecordingNotifier()
        self.metrics = Metrics()
        self.service: Service | None = None
        self.task: asyncio.Task[int] | None = None

    def write(
        self, executions: list[str], *, sinks: Sequence[str] = ("log",), **blink: Any
    ) -> None:
        blink_lines = "".join(f"{k} = {v!r}\n" for k, v in blink.items())
        sink_lines = "".join(
            f'[[sinks]]\ntype = "log"\nname = "{name}"\npath = "{self.path.parent}/{name}.jsonl"\n'
            for name in sinks
        )
        self.path.write_text(
            '[blink]\nworkspace_id = "ws"\nrate_limit = 0\n'
            + blink_lines
            + f"[poll]\ninterval = 3600\nmax_interval = 3600\n"
            f"[watch]\nexecutions = {executions!r}\n"
            f'[state]\npath = "{self.state_path}"\n' + sink_lines
        )

    def client_factory(self, config: Config, _metrics: Metrics) -> FakeClient:
        client = FakeClient(config)
        self.clients.append(client)
        return client

    def sink_factory(self, config: SinkConfig) -> RecordingSink:
        if config.name in self.broken_sinks:
            raise OSError(f"cannot open the file for sink {config.name}")
        sink = RecordingSink(config)
        self.sinks.append(sink)
        return sink

    async def start(self, **kwargs: Any) -> Service:
        self.service = Service(
            load_config(self.path),
            notifier=self.notifier,
            metrics=self.metrics,
            client_factory=self.client_factory,  # type: ignore[arg-type]
            sink_factory=self.sink_factory,
            **kwargs,
        )
        self.task = asyncio.create_task(self.service.run())
        task = self.task
        await until(lambda: self.notifier.count("READY=1") == 1 or task.done(), what="READY")
        return self.service

    async def reload(self) -> None:
        assert self.service is not None
        readies = self.notifier.count("READY=1")
        self.service.request("reload")
        await until(lambda: self.notifier.count("READY=1") > readies, what="READY after reload")

    async def stop(self) -> int:
        assert self.service is not None
        assert self.task is not None
        self.service.request("stop")
        return await asyncio.wait_for(self.task, 15)

    def reloads(self, result: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "blink_watcher_config_reloads_total", {"result": result}
        )
        return value or 0.0


@pytest.fixture
async def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Daemon]:
    d = Daemon(tmp_path, monkeypatch)
    yield d
    if d.task is not None and not d.task.done():
        d.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await d.task


def snapshot(service: Service) -> dict[str, Any]:
    """What a reload may change: compared before and after a failed one."""
    return {
        "config": service.config,
        "client": service.client,
        "scheduler_client": service.scheduler.client,
        "sinks": service.outbox.current_sinks(),
        "watched": sorted(service.scheduler.watched_keys()),
        "poll": service.scheduler.poll,
    }


async def test_start_resumes_config_watches_and_polls_each_once(daemon: Daemon) -> None:
    daemon.write(["a", "b"])
    service = await daemon.start()

    await until(lambda: len(daemon.clients[0].polls) == 2, what="first polls")

    assert sorted(service.scheduler.watched_keys()) == [("ws", "a"), ("ws", "b")]
    assert await daemon.stop() == 0
    assert daemon.clients[0].closed
    assert all(s.closed for s in daemon.sinks)


@pytest.mark.parametrize("failure", ["sink", "store"])
async def test_a_reload_that_fails_while_building_leaves_the_daemon_exactly_as_it_was(
    daemon: Daemon, failure: str
) -> None:
    daemon.write(["a"], sinks=["log"])
    service = await daemon.start()
    before = snapshot(service)
    # Every part of the reload changes something: API settings (a new client),
    # a new sink, a new execution. One piece fails to build.
    daemon.write(["a", "b"], sinks=["log", "extra"], request_timeout=3.0)
    if failure == "sink":
        daemon.broken_sinks.add("extra")
    else:

        async def failing(_keys: object) -> set[ExecutionKey]:
            raise StoreError("state file: disk I/O error")

        service.store.reported_keys = failing  # type: ignore[method-assign]

    with structlog.testing.capture_logs() as logs:
        await daemon.reload()

    assert snapshot(service) == before
    assert len(daemon.clients) == 2
    assert daemon.clients[1].closed
    assert not daemon.clients[0].closed
    assert daemon.reloads("failed") == 1
    assert daemon.reloads("ok") == 0
    failed = [e for e in logs if e["event"] == "config.reload_failed"]
    assert failed
    assert failed[0]["kept"] == "the running configuration"
    assert ("ws", "b") not in daemon.clients[0].polls
    assert await daemon.stop() == 0


async def test_a_sink_built_before_the_failure_is_closed(daemon: Daemon) -> None:
    daemon.write(["a"], sinks=["log"])
    service = await daemon.start()
    daemon.write(["a"], sinks=["log", "new", "broken"])
    daemon.broken_sinks.add("broken")

    await daemon.reload()

    new = [s for s in daemon.sinks if s.name == "new"]
    assert len(new) == 1
    assert new[0].closed
    assert [s.name for s in service.outbox.current_sinks()] == ["log"]
    assert await daemon.stop() == 0


async def test_a_reload_swaps_every_piece_and_closes_the_retired_client_at_stop(
    daemon: Daemon,
) -> None:
    daemon.write(["a"], sinks=["log"])
    service = await daemon.start()
    daemon.write(["b"], sinks=["other"], request_timeout=30.0)

    await daemon.reload()

    assert service.client is daemon.clients[1] is service.scheduler.client
    assert service.scheduler.watched_keys() == [("ws", "b")]
    assert [s.name for s in service.outbox.current_sinks()] == ["other"]
    assert daemon.reloads("ok") == 1
    await until(lambda: daemon.sinks[0].closed, what="the removed sink to close")
    # The old client waits out its requests in flight (31 s here): stopping must
    # close it at once rather than cancel its close.
    assert not daemon.clients[0].closed
    assert await daemon.stop() == 0
    assert daemon.clients[0].closed
    assert daemon.clients[1].closed


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda text, tmp: text.replace("state.db", "moved.db"), "state.path"),
        (lambda text, tmp: text + '[server]\nlisten = "127.0.0.1:0"\n', "server"),
    ],
)
async def test_a_reload_that_changes_a_start_only_setting_warns_and_keeps_it(
    daemon: Daemon, change: Callable[[str, Path], str], key: str
) -> None:
    daemon.write(["a"])
    service = await daemon.start()
    before = service.config
    text = daemon.path.read_text().replace("['a']", "['a', 'b']")
    daemon.path.write_text(change(text, daemon.path))

    with structlog.testing.capture_logs() as logs:
        await daemon.reload()

    warning = [e for e in logs if e["event"] == "config.restart_needed"]
    assert warning
    assert warning[0]["keys"] == [key]
    assert warning[0]["log_level"] == "warning"
    assert service.config.state_path == before.state_path
    assert service.config.server == before.server
    assert ("ws", "b") in service.scheduler  # the rest of the reload applied
    assert await daemon.stop() == 0


async def test_a_store_failure_while_resuming_closes_what_was_opened(daemon: Daemon) -> None:
    daemon.write(["a"])

    class BrokenStore(Store):
        async def reported_keys(self, keys: object) -> set[ExecutionKey]:
            raise StoreError("state file: database disk image is malformed")

    service = Service(
        load_config(daemon.path),
        notifier=daemon.notifier,
        client_factory=daemon.client_factory,  # type: ignore[arg-type]
        sink_factory=daemon.sink_factory,
        store_factory=BrokenStore,
    )

    assert await service.run() == 1
    assert daemon.clients[0].closed
    assert daemon.notifier.count("READY=1") == 0


async def test_an_event_is_stored_before_it_reaches_the_sinks(daemon: Daemon) -> None:
    daemon.write(["a"])
    seen_stored: list[bool] = []
    original = RecordingSink.deliver

    async def checking(sink: RecordingSink, event_id: str, body: bytes) -> None:
        assert daemon.service is not None
        rows = await daemon.service.store.open_deliveries()
        seen_stored.append(any(r.event_id == event_id for r in rows))
        await original(sink, event_id, body)

    def factory(config: Config, metrics: Metrics) -> FakeClient:
        client = daemon.client_factory(config, metrics)
        client.states[("ws", "a")] = "Completed"
        return client

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RecordingSink, "deliver", checking)
        service = Service(
            load_config(daemon.path),
            exit_when_done=True,
            client_factory=factory,  # type: ignore[arg-type]
            sink_factory=daemon.sink_factory,
        )
        daemon.service = service
        assert await asyncio.wait_for(service.run(), 15) == 0

    assert seen_stored == [True]
    assert len(daemon.sinks[0].delivered) == 1


async def test_a_sink_failure_never_loses_the_event(daemon: Daemon) -> None:
    daemon.write(["a"])

    def factory(config: Config, metrics: Metrics) -> FakeClient:
        client = daemon.client_factory(config, metrics)
        client.states[("ws", "a")] = "Failed"
        return client

    def sinks(config: SinkConfig) -> RecordingSink:
        sink = daemon.sink_factory(config)
        sink.failures = [DeliveryError("receiver down", retryable=True)]
        return sink

    service = Service(
        load_config(daemon.path),
        exit_when_done=True,
        client_factory=factory,  # type: ignore[arg-type]
        sink_factory=sinks,
    )
    run: Awaitable[int] = service.run()

    assert await asyncio.wait_for(run, 15) == 0
    assert len(daemon.sinks[0].attempts) >= 2  # the failure was retried, not dropped


async def test_the_service_prunes_reported_history_past_keep_reported(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon.write(["a"])
    calls: list[float] = []

    async def prune(self: Store, keep_s: float, **_: Any) -> int:
        calls.append(keep_s)
        return 0

    monkeypatch.setattr(Store, "prune", prune)
    await daemon.start(prune_every_s=0.001)

    await until(lambda: len(calls) >= 3, what="repeated retention runs")

    assert set(calls) == {604800.0}  # [state] keep_reported's default
    assert await daemon.stop() == 0


async def test_a_store_failing_at_stop_still_stops_cleanly_and_says_what_waits(
    daemon: Daemon,
) -> None:
    daemon.write(["a"])
    failing = asyncio.Event()

    class FailingAtStop(Store):
        async def flush(self) -> None:
            if failing.is_set():
                raise StoreError("state database: connection refused")
            await super().flush()

    await daemon.start(store_factory=FailingAtStop)
    await until(lambda: len(daemon.clients[0].polls) >= 1, what="a first poll")
    failing.set()
    with structlog.testing.capture_logs() as logs:
        assert await daemon.stop() == 0
    events = [e["event"] for e in logs]
    assert "store.unsaved_at_stop" in events
    assert "service.crashed" not in events
    assert "service.stopped" in events
