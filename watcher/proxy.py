"""The outbound proxy for a URL, from the standard ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``.

Both HTTP clients (``blink.py``, ``sinks/webhook.py``) ask here once, when
they are built, and hand the answer to aiohttp per request. We read the
variables ourselves instead of passing ``trust_env=True`` to aiohttp: that
flag also makes aiohttp read ``~/.netrc`` (or ``$NETRC``) and send its
credentials as Basic auth to any host listed there, so a webhook receiver could
be handed a login nobody configured for blink-watcher (and a configured
``Authorization`` webhook header would then make every delivery fail with
"Cannot combine AUTHORIZATION header with AUTH argument"). It also looks the
variables and the netrc file up again in a thread on every request.
docs/network.md describes the variables for operators.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from watcher.errors import ConfigError
from watcher.redact import register_secret


class ProxyError(ConfigError):
    """A proxy variable holds something we cannot use: exit 78, like a bad config file.

    ``str()`` is ``environment: HTTPS_PROXY: what is wrong``; never the value,
    which may hold a password.
    """

    def __init__(self, variable: str, message: str) -> None:
        super().__init__("environment", variable, message)


@dataclass(frozen=True, slots=True)
class Proxy:
    """Where to send a client's requests instead of the target host.

    ``url`` never carries credentials: they are apart in ``username`` and
    ``password``, and ``repr`` does not show the password.
    """

    url: str  # http://HOST:PORT
    source: str  # the variable it came from, e.g. "HTTPS_PROXY"
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        login = ", with credentials" if self.username is not None else ""
        return f"Proxy({self.url!r} from {self.source}{login})"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    def describe(self) -> str:
        """For diagnostics: the proxy and where it was configured, never its credentials."""
        return f"{self.url} (from {self.source})"


def _variable(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    # Lower case first, as urllib, requests and curl read them; empty means unset.
    for key in (name.lower(), name.upper()):
        value = environ.get(key, "").strip()
        if value:
            return key, value
    return None


def parse_proxy(value: str, source: str) -> Proxy:
    """``value`` of the variable ``source`` as a ``Proxy``; ``ProxyError`` if unusable.

    Like curl, ``proxy.corp:3128`` without a scheme means ``http://``. The
    credentials in ``http://user:pass@proxy:3128`` are registered with the
    scrubber here, before anything could log them.
    """
    text = value if "://" in value else f"http://{value}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ProxyError(source, f"is not a valid proxy URL ({exc})") from None
    if parts.password:
        register_secret(parts.password)
        register_secret(unquote(parts.password))
        register_secret(parts.netloc.rpartition("@")[0])  # user:pass as it was written
    if parts.scheme != "http":
        # An https:// or socks5:// proxy is not what a corporate HTTP proxy usually is,
        # and going direct instead (what aiohttp does with it) is the bug this prevents.
        raise ProxyError(
            source,
            f"uses {parts.scheme}://; only http:// proxies are supported "
            "(https:// targets still go through them, TLS end to end in a tunnel)",
        )
    host = parts.hostname
    if not host:
        raise ProxyError(source, "names no host")
    netloc = f"[{host}]" if ":" in host else host
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return Proxy(f"http://{netloc}:{port or 80}", source, username, password)


def proxy_for(url: str, environ: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy requests to ``url`` go through, or None to connect directly.

    ``HTTPS_PROXY`` for https URLs, ``HTTP_PROXY`` for http ones, unless
    ``NO_PROXY`` covers the host (see ``bypasses``).
    """
    env = os.environ if environ is None else environ
    parts = urlsplit(url)
    found = _variable(env, f"{parts.scheme}_proxy")
    if found is None:
        return None
    source, value = found
    proxy = parse_proxy(value, source)  # even when bypassed: a bad value is reported
    no_proxy = _variable(env, "no_proxy")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if no_proxy is not None and bypasses(no_proxy[1], parts.hostname or "", port):
        return None
    return proxy


def bypasses(no_proxy: str, host: str, port: int) -> bool:
    """Whether the ``NO_PROXY`` value ``no_proxy`` sends requests to ``host:port`` direct.

    Entries are comma-separated: ``*`` (everything); a domain, with or without a
    leading ``.`` or ``*.``, covering itself and its subdomains; an IP address;
    a CIDR range (``10.0.0.0/8``); any of these with ``:PORT`` to cover that port
    only (an IPv6 address with a port in brackets: ``[::1]:8080``). The same
    reading as curl's and Go's.
    """
    host = host.lower().rstrip(".").strip("[]")
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        name, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        if _host_matches(host, name):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [v6] or [v6]:port
        name, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":")
        return name, int(port) if port.isdigit() else None
    if entry.count(":") == 1:  # more than one: a bare IPv6 address
        name, _, port = entry.partition(":")
        return name, int(port) if port.isdigit() else None
    return entry, None


def _host_matches(host: str, name: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        try:
            return address in ipaddress.ip_network(name, strict=False)  # an address or a range
        except ValueError:
            return False  # a domain entry never covers an IP address
    domain = name.removeprefix("*").lstrip(".")
    return bool(domain) and (host == domain or host.endswith("." + domain))


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """``ProxyError`` if a proxy variable is set to something unusable (checked at start)."""
    env = os.environ if environ is None else environ
    for scheme in ("https", "http"):
        found = _variable(env, f"{scheme}_proxy")
        if found is not None:
            parse_proxy(found[1], found[0])
