"""The API key: with OVEMBED_API_KEY (or OVEMBED_API_KEY_FILE) set, every route but the open ones wants it.

Clients send it as `Authorization: Bearer <key>`, as the OpenAI SDK's `api_key=`, Open WebUI's per-connection
key and ollama-python's OLLAMA_API_KEY do. It is compared in constant time and never logged or echoed; a
refusal is 401 in the API family's own error shape, with `WWW-Authenticate: Bearer`.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from daemon.http.errors import Err, answer

# What a client may ask without the key: the liveness and readiness checks clients and load balancers poll.
OPEN_ROUTES = frozenset(
    {
        ("GET", "/"),
        ("HEAD", "/"),
        ("GET", "/api/version"),
        ("HEAD", "/api/version"),
        ("GET", "/health"),
        ("HEAD", "/health"),
    }
)
METRICS_ROUTES = frozenset({("GET", "/metrics")})  # opened by OVEMBED_METRICS_OPEN, for a Prometheus scraper


def _bearer(scope: Scope) -> bytes | None:
    """The token of the request's first Authorization header, if its scheme is Bearer (in any case)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else None
    return None


class Auth:
    """ASGI middleware inside the guard: the Host check and CORS preflights come first, then the key."""

    def __init__(self, app: ASGIApp, key: str, metrics_open: bool) -> None:
        self.app = app
        self.key = key.encode()
        self.open = OPEN_ROUTES | (METRICS_ROUTES if metrics_open else frozenset())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in self.open:
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        if token is not None and hmac.compare_digest(token, self.key):
            await self.app(scope, receive, send)
            return
        response = await answer(Request(scope), Err.UNAUTHORIZED())
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)
