"""Who may call the daemon: Ollama's DNS-rebinding guard and its CORS rules.

A daemon on loopback must not answer a web page that resolved some public name to 127.0.0.1, so the
Host header has to be local. Browsers may call from the origins Ollama allows, plus OLLAMA_ORIGINS.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daemon.config import ListenAddress

_LOCAL_NAMES = ("", "localhost")
# Go's netip.Addr.IsPrivate: RFC 1918 and RFC 4193 only, narrower than Python's is_private.
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")
_DEFAULT_HOSTS = ("localhost", "127.0.0.1", "0.0.0.0")
_APP_SCHEMES = ("app", "file", "tauri", "vscode-webview", "vscode-file")
_ALLOW_METHODS = "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
_ALLOW_HEADERS = ",".join(
    [
        "Authorization",
        "Content-Type",
        "User-Agent",
        "Accept",
        "X-Requested-With",
        "Openai-Beta",
        "X-Stainless-Arch",
        "X-Stainless-Async",
        "X-Stainless-Custom-Poll-Interval",
        "X-Stainless-Helper-Method",
        "X-Stainless-Lang",
        "X-Stainless-Os",
        "X-Stainless-Package-Version",
        "X-Stainless-Poll-Helper",
        "X-Stainless-Retry-Count",
        "X-Stainless-Runtime",
        "X-Stainless-Runtime-Version",
        "X-Stainless-Timeout",
    ]
)
_MAX_AGE = "43200"


def origin_patterns(extra: Iterable[str]) -> list[re.Pattern[str]] | None:
    """Ollama's allowed origins as regexes; None when OLLAMA_ORIGINS has `*`, which allows every origin.

    A default `http://localhost:*` matches only a port after the host, not `http://localhost.evil.com`.
    """
    extra = list(extra)
    if "*" in extra:
        return None
    patterns = [re.escape(o).replace(r"\*", ".*") for o in extra]
    for host in _DEFAULT_HOSTS:
        patterns.append(rf"https?://{re.escape(host)}(:\d+)?")
    patterns.extend(rf"{re.escape(scheme)}://.*" for scheme in _APP_SCHEMES)
    return [re.compile(p, re.IGNORECASE) for p in patterns]


def _strip_port(host: str) -> str:
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 and host[end + 1 :].startswith(":") else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host_header: str) -> bool:
    """Ollama's allowedHost: local, private and unspecified addresses, and local names."""
    host = _strip_port(host_header).lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host in _LOCAL_NAMES or host == socket.gethostname().lower() or host.endswith(_LOCAL_SUFFIXES)
    private = any(address in network for network in _PRIVATE_NETWORKS if network.version == address.version)
    return address.is_loopback or address.is_unspecified or private or _is_own_address(address)


def _is_own_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Ollama's isLocalIP: an address of one of this machine's interfaces."""
    try:
        own = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        return False
    return str(address) in own


class Guard:
    """ASGI middleware: CORS first, then the Host check when listening on loopback."""

    def __init__(self, app: ASGIApp, listen: ListenAddress, extra_origins: Iterable[str]) -> None:
        self.app = app
        self.check_host = listen.is_loopback
        self.origins = origin_patterns(extra_origins)

    def _origin_allowed(self, origin: str) -> bool:
        return self.origins is None or any(p.fullmatch(origin) for p in self.origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        origin = headers.get("origin")
        cross_origin = origin is not None and origin not in (f"http://{host}", f"https://{host}")
        if cross_origin:
            assert origin is not None
            if not self._origin_allowed(origin):
                await _status_only(send, 403)
                return
            if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
                await _status_only(send, 204, _preflight_headers(origin))
                return
        if self.check_host and not host_allowed(host):
            await _status_only(send, 403)
            return
        if not cross_origin:
            await self.app(scope, receive, send)
            return
        allow = [(b"access-control-allow-origin", str(origin).encode()), (b"vary", b"Origin")]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *allow]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _preflight_headers(origin: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-origin", origin.encode()),
        (b"access-control-allow-methods", _ALLOW_METHODS.encode()),
        (b"access-control-allow-headers", _ALLOW_HEADERS.encode()),
        (b"access-control-max-age", _MAX_AGE.encode()),
        (b"vary", b"Origin"),
    ]


async def _status_only(send: Send, status: int, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Ollama aborts these with a bare status and no body."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", b"0"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": b""})
