"""The optional speed-ups (orjson, uvloop, malloc_trim) and the plain fallbacks without them."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from watcher import eventloop, fastjson, memtrim
from watcher.blink import BlinkClient
from watcher.config import BlinkConfig, Secret
from watcher.errors import TransientApiError

BODY = b'{"state": "Running", "step_results": {"completed": 2}, "display_name": "r\\u00e9"}'


@pytest.fixture
def reload_fastjson() -> Iterator[None]:
    yield
    importlib.reload(fastjson)  # as the environment has it, for the tests after this one


def backend(monkeypatch: pytest.MonkeyPatch, *, orjson: bool, pure: bool = False) -> ModuleType:
    if not orjson:
        monkeypatch.setitem(sys.modules, "orjson", None)  # import orjson -> ImportError
    if pure:
        monkeypatch.setenv("BLINK_WATCHER_PURE_JSON", "1")
    else:
        monkeypatch.delenv("BLINK_WATCHER_PURE_JSON", raising=False)
    return importlib.reload(fastjson)


@pytest.mark.usefixtures("reload_fastjson")
def test_without_orjson_the_standard_library_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    module = backend(monkeypatch, orjson=False)
    assert module.BACKEND == "json"
    assert module.loads is json.loads
    assert module.loads(BODY) == json.loads(BODY)


@pytest.mark.usefixtures("reload_fastjson")
def test_the_environment_can_force_the_standard_library(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("orjson")
    assert backend(monkeypatch, orjson=True, pure=True).BACKEND == "json"


@pytest.mark.usefixtures("reload_fastjson")
@pytest.mark.parametrize(
    "body",
    [
        BODY,
        b'{"display_name": "\\ud800"}',  # a lone surrogate escape: orjson refuses, json takes it
        b'{"duration": 1e400, "id": "x"}',
    ],
)
def test_orjson_decodes_what_json_does(monkeypatch: pytest.MonkeyPatch, body: bytes) -> None:
    pytest.importorskip("orjson")
    module = backend(monkeypatch, orjson=True)
    assert module.BACKEND == "orjson"
    assert module.loads(body) == json.loads(body)


@pytest.mark.usefixtures("reload_fastjson")
def test_what_only_json_accepts_is_decoded_by_json(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("orjson")
    module = backend(monkeypatch, orjson=True)
    assert module.loads(b'{"duration": NaN}')["duration"] != 0  # NaN, as json reads it
    # The one documented difference: an integer beyond 64 bits comes back as a float.
    big = module.loads(b'{"execution_number": 123456789012345678901234567890}')
    assert big["execution_number"] == pytest.approx(1.2345678901234568e29)


@pytest.mark.usefixtures("reload_fastjson")
@pytest.mark.parametrize("orjson", [True, False])
@pytest.mark.parametrize(
    ("body", "reason"),
    [(b'{"state": "Running"', "not JSON"), (b'{"state": "\xff"}', "not UTF-8")],
)
def test_a_malformed_body_gets_the_same_diagnostic_either_way(
    monkeypatch: pytest.MonkeyPatch, orjson: bool, body: bytes, reason: str
) -> None:
    if orjson:
        pytest.importorskip("orjson")
    module = backend(monkeypatch, orjson=orjson)
    monkeypatch.setattr("watcher.blink.loads", module.loads)
    client = BlinkClient(BlinkConfig(api_key=Secret("k")))
    with pytest.raises(TransientApiError, match=reason):
        client._parse(body)


def test_without_uvloop_the_daemon_runs_on_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    monkeypatch.delenv("BLINK_WATCHER_EVENT_LOOP", raising=False)
    assert eventloop.loop_factory() == ("asyncio", None)
    assert eventloop.run(_loop_module()) == "asyncio"


def test_the_environment_can_force_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.setenv("BLINK_WATCHER_EVENT_LOOP", "asyncio")
    assert eventloop.run(_loop_module()) == "asyncio"


def test_with_uvloop_installed_the_daemon_runs_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv("BLINK_WATCHER_EVENT_LOOP", raising=False)
    assert eventloop.loop_factory()[0] == "uvloop"
    assert eventloop.run(_loop_module()) == "uvloop"


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_trimming_the_heap_is_safe_to_call_anywhere() -> None:
    # glibc returns free pages; elsewhere it is a no-op. Either way nothing breaks.
    assert memtrim.trim() is (memtrim._malloc_trim() is not None)
    if sys.platform.startswith("linux") and "musl" not in sys.version:
        assert memtrim._malloc_trim() is not None
