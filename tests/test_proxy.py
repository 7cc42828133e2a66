"""HTTP(S)_PROXY and NO_PROXY: how they are read, and both clients through a real proxy.

The whole daemon behind a proxy, and https through a CONNECT tunnel, are in
tests/integration/test_network.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.forward_proxy import ForwardProxy, dead_proxy_port
from watcher.blink import BlinkClient
from watcher.config import BlinkConfig, Secret, WebhookSinkConfig, load_config
from watcher.errors import ConfigError, DeliveryError, TransientApiError
from watcher.proxy import Proxy, bypasses, proxy_for
from watcher.redact import scrub
from watcher.sim import Simulator
from watcher.sinks.webhook import WebhookSink

API_KEY = "bk_live_proxytest_5d4c3b2a19"
WS = "ws-main"
PROXY_USER = "svc-watcher"
PROXY_PASSWORD = "Pr0xy-pa55w0rd-zz"
EVENT_ID = "evt_0123456789abcdef0123456789abcdef"
BODY = json.dumps({"event": "execution.finished", "state": "Completed"}).encode()


# --- reading the variables -------------------------------------------------------------------


def test_https_urls_use_https_proxy_and_http_urls_http_proxy() -> None:
    env = {"HTTPS_PROXY": "http://secure.corp:3128", "HTTP_PROXY": "http://plain.corp:8080"}
    https = proxy_for("https://app.blinkops.com/api/v1", env)
    http = proxy_for("http://127.0.0.1:8080/api/v1", env)
    assert https == Proxy("http://secure.corp:3128", "HTTPS_PROXY")
    assert http == Proxy("http://plain.corp:8080", "HTTP_PROXY")
    assert proxy_for("https://app.blinkops.com", {"HTTP_PROXY": "http://plain.corp:8080"}) is None


def test_lower_case_wins_and_empty_means_unset() -> None:
    env = {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:2"}
    assert proxy_for("https://h", env) == Proxy("http://lower:1", "https_proxy")
    assert proxy_for("https://h", {"https_proxy": " ", "HTTPS_PROXY": "http://upper:2"}) == Proxy(
        "http://upper:2", "HTTPS_PROXY"
    )
    assert proxy_for("https://h", {"HTTPS_PROXY": ""}) is None


def test_a_proxy_without_scheme_or_port_is_http_on_port_80() -> None:
    assert proxy_for("https://h", {"HTTPS_PROXY": "proxy.corp"}) == Proxy(
        "http://proxy.corp:80", "HTTPS_PROXY"
    )
    assert proxy_for("https://h", {"HTTPS_PROXY": "proxy.corp:3128"}) == Proxy(
        "http://proxy.corp:3128", "HTTPS_PROXY"
    )


def test_credentials_leave_the_url_and_are_never_shown() -> None:
    value = f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy.corp:3128"
    proxy = proxy_for("https://h", {"HTTPS_PROXY": value})
    assert proxy is not None
    assert proxy.url == "http://proxy.corp:3128"
    assert (proxy.username, proxy.password) == (PROXY_USER, PROXY_PASSWORD)
    for shown in (repr(proxy), str(proxy), proxy.describe()):
        assert PROXY_PASSWORD not in shown
    assert proxy.describe() == "http://proxy.corp:3128 (from HTTPS_PROXY)"
    # Registered with the one scrubber: a library message quoting them is cleaned.
    assert PROXY_PASSWORD not in scrub(f"error talking to {value}")
    assert f"{PROXY_USER}:{PROXY_PASSWORD}" not in scrub(f"auth {PROXY_USER}:{PROXY_PASSWORD}")


def test_percent_encoded_credentials_are_decoded_and_both_forms_scrubbed() -> None:
    proxy = proxy_for("https://h", {"HTTPS_PROXY": "http://me:p%40ss%3Aword9@proxy:3128"})
    assert proxy is not None
    assert proxy.password == "p@ss:word9"
    assert "p@ss:word9" not in scrub("p@ss:word9")
    assert "p%40ss%3Aword9" not in scrub("p%40ss%3Aword9")


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("socks5://proxy.corp:1080", "uses socks5://; only http:// proxies"),
        ("https://proxy.corp:3128", "uses https://; only http:// proxies"),
        ("http://proxy.corp:port", "is not a valid proxy URL"),
        ("http://:3128", "names no host"),
    ],
)
def test_an_unusable_proxy_is_an_error_naming_the_variable(value: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        proxy_for("https://h", {"HTTPS_PROXY": value})
    assert isinstance(info.value, ConfigError)  # exit 78, like a bad config file
    assert str(info.value).startswith("environment: HTTPS_PROXY: ")
    assert says in str(info.value)


def test_an_unusable_proxy_variable_stops_the_config_from_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Going direct instead would be the very failure a proxy setting is there to prevent.
    path = tmp_path / "config.toml"
    path.write_text('[watch]\nexecutions = ["ws/ex"]\n', encoding="utf-8")
    monkeypatch.setenv("BLINK_API_KEY", API_KEY)
    monkeypatch.setenv("HTTPS_PROXY", f"socks5://{PROXY_USER}:{PROXY_PASSWORD}@proxy:1080")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith("environment: HTTPS_PROXY: uses socks5://")
    assert PROXY_PASSWORD not in str(info.value)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    assert load_config(path).executions == (("ws", "ex"),)


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypassed"),
    [
        ("*", "anything.example", 443, True),
        ("corp.example", "corp.example", 443, True),
        ("corp.example", "api.corp.example", 443, True),
        ("corp.example", "notcorp.example", 443, False),
        (".corp.example", "api.corp.example", 443, True),
        (".corp.example", "corp.example", 443, True),
        ("*.corp.example", "api.corp.example", 443, True),
        (" other.example , CORP.example ", "api.corp.example", 443, True),
        ("corp.example", "API.Corp.Example.", 443, True),
        ("api.corp.example:8443", "api.corp.example", 443, False),
        ("api.corp.example:8443", "api.corp.example", 8443, True),
        ("127.0.0.1", "127.0.0.1", 8080, True),
        ("127.0.0.1", "127.0.0.2", 8080, False),
        ("10.0.0.0/8", "10.20.30.40", 443, True),
        ("10.0.0.0/8", "11.0.0.1", 443, False),
        ("::1", "::1", 443, True),
        ("[::1]:8080", "::1", 8080, True),
        ("[::1]:8080", "::1", 8081, False),
        ("localhost", "127.0.0.1", 80, False),  # names are not resolved
        ("example", "127.0.0.1", 80, False),
        (",,", "api.corp.example", 443, False),
    ],
)
def test_no_proxy_entries(no_proxy: str, host: str, port: int, bypassed: bool) -> None:
    assert bypasses(no_proxy, host, port) is bypassed


def test_no_proxy_sends_the_named_host_direct_and_the_rest_through_the_proxy() -> None:
    env = {"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": "hooks.corp.example"}
    assert proxy_for("https://hooks.corp.example/x", env) is None
    assert proxy_for("https://app.blinkops.com/api/v1", env) is not None
    # The default port counts when an entry names one.
    assert (
        proxy_for("https://app.blinkops.com", {**env, "no_proxy": "app.blinkops.com:443"}) is None
    )


# --- the clients through a real proxy --------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    scripts = [{"workspace_id": WS, "execution_id": "ex-1", "steps": ["Completed"]}]
    async with Simulator(api_key=API_KEY, scripts=scripts) as running:
        yield running


@pytest.fixture
async def proxy() -> AsyncIterator[ForwardProxy]:
    async with ForwardProxy(credentials=(PROXY_USER, PROXY_PASSWORD)) as running:
        yield running


def blink_config(sim: Simulator) -> BlinkConfig:
    return BlinkConfig(
        base_url=sim.base_url,
        api_key=Secret(API_KEY),
        rate_limit_per_s=0.0,
        retry_attempts=1,
        request_timeout_s=5.0,
    )


def webhook_sink(sim: Simulator) -> WebhookSink:
    return WebhookSink(WebhookSinkConfig(name="main", url=sim.hook_url("main"), timeout_s=5.0))


async def test_polls_and_deliveries_go_through_http_proxy(
    sim: Simulator, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url(PROXY_USER, PROXY_PASSWORD))
    async with BlinkClient(blink_config(sim)) as client:
        execution = await client.get_execution((WS, "ex-1"))
    sink = webhook_sink(sim)
    try:
        await sink.deliver(EVENT_ID, BODY)
    finally:
        await sink.close()

    assert execution.state == "Completed"
    assert proxy.forwarded_to(f"/workspace/{WS}/executions/ex-1") == 1
    assert proxy.forwarded_to("/hooks/main") == 1
    assert sim.total_requests == 1
    assert [d.body for d in sim.deliveries] == [BODY]
    assert proxy.refused == 0  # the credentials were sent as Proxy-Authorization
    assert b"Proxy-Authorization: Basic " in proxy.clear


async def test_no_proxy_for_the_target_host_bypasses_the_proxy(
    sim: Simulator, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url(PROXY_USER, PROXY_PASSWORD))
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    async with BlinkClient(blink_config(sim)) as client:
        assert client.proxy is None
        execution = await client.get_execution((WS, "ex-1"))
    sink = webhook_sink(sim)
    try:
        await sink.deliver(EVENT_ID, BODY)
    finally:
        await sink.close()

    assert execution.state == "Completed"
    assert len(sim.deliveries) == 1
    assert proxy.requests == 0
    assert proxy.clear == b""


async def test_dead_proxy_is_a_transient_failure_naming_the_proxy_not_its_password(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dead_proxy_port() as port:
        monkeypatch.setenv("HTTP_PROXY", f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}")
        async with BlinkClient(blink_config(sim)) as client:
            with pytest.raises(TransientApiError) as poll:
                await client.get_execution((WS, "ex-1"))
        sink = webhook_sink(sim)
        try:
            with pytest.raises(DeliveryError) as delivery:
                await sink.deliver(EVENT_ID, BODY)
        finally:
            await sink.close()

    expected = f"cannot connect to the proxy http://127.0.0.1:{port} (from HTTP_PROXY): "
    assert str(poll.value).startswith(expected), poll.value
    assert str(delivery.value).startswith(expected), delivery.value
    assert delivery.value.retryable
    for text in (str(poll.value), str(delivery.value)):
        assert PROXY_PASSWORD not in text
        assert PROXY_USER not in text
    assert sim.total_requests == 0  # nothing went direct instead


async def test_rejected_proxy_credentials_say_so(
    sim: Simulator, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url(PROXY_USER, "wrong-password-123"))
    async with BlinkClient(blink_config(sim)) as client:
        with pytest.raises(TransientApiError) as poll:
            await client.get_execution((WS, "ex-1"))
    sink = webhook_sink(sim)
    try:
        with pytest.raises(DeliveryError) as delivery:
            await sink.deliver(EVENT_ID, BODY)
    finally:
        await sink.close()

    where = f"the proxy http://127.0.0.1:{proxy.port} (from HTTP_PROXY)"
    assert f"HTTP 407 from {where}" in str(poll.value)
    assert f"HTTP 407 from {where}" in str(delivery.value)
    assert "wrong-password-123" not in str(poll.value) + str(delivery.value)
    assert proxy.refused == 2
    assert sim.total_requests == 0


async def test_netrc_logins_are_never_sent(
    sim: Simulator, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # What aiohttp's trust_env=True would do: send a ~/.netrc login for the receiver's host.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password netrc-pa55word\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTP_PROXY", proxy.url(PROXY_USER, PROXY_PASSWORD))
    sink = webhook_sink(sim)
    try:
        await sink.deliver(EVENT_ID, BODY)
    finally:
        await sink.close()

    [delivery] = sim.deliveries
    assert "authorization" not in {k.lower() for k in delivery.headers}
    assert b"Authorization: Basic" not in proxy.clear.replace(b"Proxy-Authorization", b"")
