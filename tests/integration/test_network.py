"""The real daemon behind a proxy and against a TLS API signed by a private CA.

A forward proxy written for the tests (tests/forward_proxy.py) stands between
the daemon and the simulator; a certificate made with openssl
(tests/tls.py) serves the simulator over https on 127.0.0.1.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.forward_proxy import ForwardProxy, dead_proxy_port
from tests.integration.harness import (
    API_KEY,
    WEBHOOK_SECRET,
    daemon_env,
    webhook_sink,
    write_config,
)
from tests.tls import SelfSigned, make_self_signed
from tests.waiting import until
from watcher.sim import Simulator

WS = "ws-main"
PROXY_USER = "svc-blink"
PROXY_PASSWORD = "c0rp-Proxy-s3cret"
LOG_AND_WEBHOOK = '[[sinks]]\ntype = "log"\n'


def scripts(count: int) -> list[dict[str, Any]]:
    return [
        {"workspace_id": WS, "execution_id": f"ex-{i}", "steps": ["Running", "Completed"]}
        for i in range(count)
    ]


def sinks(sim: Simulator) -> str:
    return LOG_AND_WEBHOOK + webhook_sink(sim, timeout=2.0)


def env_without_ca(**extra: str) -> dict[str, str]:
    """The daemon's environment with none of the machine's CA settings."""
    env = daemon_env(**extra)
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        if name not in extra:
            env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def proxy() -> AsyncIterator[ForwardProxy]:
    async with ForwardProxy(credentials=(PROXY_USER, PROXY_PASSWORD)) as running:
        yield running


def proxy_url(proxy: ForwardProxy) -> str:
    return proxy.url(PROXY_USER, PROXY_PASSWORD)


async def test_polls_and_deliveries_go_through_the_proxy_in_http_proxy(
    tmp_path: Path, run_daemon: Any, proxy: ForwardProxy
) -> None:
    async with Simulator(api_key=API_KEY, scripts=scripts(3)) as sim:
        config = write_config(
            tmp_path / "config.toml", sim, [f"ex-{i}" for i in range(3)], sinks=sinks(sim)
        )
        run = await run_daemon(config, env=daemon_env(HTTP_PROXY=proxy_url(proxy)))

        assert run.returncode == 0, run.stderr[-3000:]
        assert len(run.events) == 3
        assert len(sim.delivered_events()) == 3
        assert proxy.forwarded_to(f"/workspace/{WS}/executions/") == sim.total_requests >= 6
        assert proxy.forwarded_to("/hooks/main") == len(sim.deliveries) == 3
        assert proxy.refused == 0
        where = f"http://127.0.0.1:{proxy.port} (from HTTP_PROXY)"
        assert [d["proxy"] for d in run.diag("api.proxy")] == [where]
        assert [d["proxy"] for d in run.diag("webhook.proxy")] == [where]
        run.assert_no_secrets()
        assert PROXY_PASSWORD not in run.stdout + run.stderr


async def test_no_proxy_sends_the_target_host_direct(
    tmp_path: Path, run_daemon: Any, proxy: ForwardProxy
) -> None:
    async with Simulator(api_key=API_KEY, scripts=scripts(2)) as sim:
        config = write_config(tmp_path / "config.toml", sim, ["ex-0", "ex-1"], sinks=sinks(sim))
        env = daemon_env(HTTP_PROXY=proxy_url(proxy), NO_PROXY="localhost,127.0.0.1")
        run = await run_daemon(config, env=env)

        assert run.returncode == 0, run.stderr[-3000:]
        assert len(run.events) == 2
        assert len(sim.delivered_events()) == 2
        assert proxy.requests == 0
        assert not run.diag("api.proxy")


async def test_dead_proxy_is_a_transient_poll_failure_that_names_it_without_credentials(
    tmp_path: Path, start_daemon: Any
) -> None:
    async with Simulator(api_key=API_KEY, scripts=scripts(1)) as sim:
        config = write_config(tmp_path / "config.toml", sim, ["ex-0"])
        with dead_proxy_port() as port:
            dead = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}"
            daemon = await start_daemon("run", "-c", str(config), env=daemon_env(HTTP_PROXY=dead))
            await until(lambda: daemon.logged("poll.failed"), what="a failed poll")
            await until(lambda: daemon.stderr.count(b'"poll.failed"') >= 2, what="a second one")
            assert daemon.proc.returncode is None  # it keeps polling: the proxy may come back
            daemon.signal(signal.SIGTERM)
            run = await daemon.finish()

        assert run.returncode == 0, run.stderr[-3000:]
        failure = run.diag("poll.failed")[0]
        assert failure["reason"].startswith(
            f"cannot connect to the proxy http://127.0.0.1:{port} (from HTTP_PROXY): "
        )
        assert failure["status"] is None
        assert run.diag("api.retry")  # retried within the poll, as any network failure is
        assert run.events == []
        assert sim.total_requests == 0  # never went direct instead
        run.assert_no_secrets()
        assert PROXY_PASSWORD not in run.stdout + run.stderr
        assert f"{PROXY_USER}:" not in run.stdout + run.stderr


async def test_unusable_proxy_variable_refuses_to_start(tmp_path: Path, run_daemon: Any) -> None:
    async with Simulator(api_key=API_KEY, scripts=scripts(1)) as sim:
        config = write_config(tmp_path / "config.toml", sim, ["ex-0"])
        socks = f"socks5://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:1080"
        run = await run_daemon(config, env=daemon_env(HTTPS_PROXY=socks))

        assert run.returncode == 78
        assert "configuration error: environment: HTTPS_PROXY: uses socks5://" in run.stderr
        assert PROXY_PASSWORD not in run.stderr
        assert sim.total_requests == 0


# --- TLS ------------------------------------------------------------------------------------


async def test_untrusted_certificate_is_a_transient_failure_saying_so(
    tmp_path: Path, start_daemon: Any, cert: SelfSigned
) -> None:
    async with Simulator(
        api_key=API_KEY, scripts=scripts(1), ssl_context=cert.server_context()
    ) as sim:
        assert sim.base_url.startswith("https://127.0.0.1:")
        config = write_config(tmp_path / "config.toml", sim, ["ex-0"])
        daemon = await start_daemon("run", "-c", str(config), env=env_without_ca())
        await until(lambda: daemon.logged("poll.failed"), what="a failed poll")
        assert daemon.proc.returncode is None
        daemon.signal(signal.SIGTERM)
        run = await daemon.finish()

        assert run.returncode == 0, run.stderr[-3000:]
        reason = run.diag("poll.failed")[0]["reason"]
        assert reason.startswith(f"TLS certificate of 127.0.0.1:{sim.port} not trusted: "), reason
        assert "self-signed certificate" in reason
        assert "SSL_CERT_FILE" in reason
        assert run.events == []
        assert sim.total_requests == 0
        run.assert_no_secrets()


async def test_ssl_cert_file_trusts_a_private_ca(
    tmp_path: Path, run_daemon: Any, cert: SelfSigned
) -> None:
    async with Simulator(
        api_key=API_KEY, scripts=scripts(2), ssl_context=cert.server_context()
    ) as sim:
        config = write_config(tmp_path / "config.toml", sim, ["ex-0", "ex-1"], sinks=sinks(sim))
        run = await run_daemon(config, env=env_without_ca(SSL_CERT_FILE=str(cert.cert)))

        assert run.returncode == 0, run.stderr[-3000:]
        assert len(run.events) == 2
        assert len(sim.delivered_events()) == 2  # the https webhook is trusted too
        assert not run.diag("poll.failed")
        run.assert_no_secrets()


async def test_https_goes_through_a_connect_tunnel_that_never_sees_the_secrets(
    tmp_path: Path, run_daemon: Any, proxy: ForwardProxy, cert: SelfSigned
) -> None:
    async with Simulator(
        api_key=API_KEY, scripts=scripts(2), ssl_context=cert.server_context()
    ) as sim:
        config = write_config(tmp_path / "config.toml", sim, ["ex-0", "ex-1"], sinks=sinks(sim))
        env = env_without_ca(SSL_CERT_FILE=str(cert.cert), HTTPS_PROXY=proxy_url(proxy))
        run = await run_daemon(config, env=env)

        assert run.returncode == 0, run.stderr[-3000:]
        assert len(run.events) == 2
        assert len(sim.delivered_events()) == 2
        assert proxy.connects  # the API and the webhook, each through its tunnel
        assert set(proxy.connects) == {f"127.0.0.1:{sim.port}"}
        assert proxy.forwards == []
        assert proxy.tunnelled_bytes > 0
        # All the proxy read in clear were the CONNECT heads, with its own login only.
        clear = bytes(proxy.clear)
        assert clear.count(b"CONNECT ") == len(proxy.connects)
        assert clear.count(b"Proxy-Authorization: Basic ") == len(proxy.connects)
        for secret in (API_KEY, WEBHOOK_SECRET, "/hooks/main", "/executions/"):
            assert secret.encode() not in clear
        assert b"BLINK-API-KEY" not in clear.upper()
        assert b"WEBHOOK-" not in clear.upper()
        # ... and the proxy's login stayed with the proxy, out of the tunnel.
        for delivery in sim.deliveries:
            assert "proxy-authorization" not in {k.lower() for k in delivery.headers}
        run.assert_no_secrets()
        assert PROXY_PASSWORD not in run.stdout + run.stderr
