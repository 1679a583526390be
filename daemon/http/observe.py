"""ASGI middleware that counts each answered request and its time for /metrics, and logs one line for it.

The access line says what Ollama's GIN line says (method, path, status, time) and, for the embedding routes,
the texts and tokens; it is logged at INFO, or at DEBUG for the health checks clients poll (`/`, `/health`,
version, tags, ps, metrics), which OLLAMA_DEBUG shows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daemon.http.state import work_of
from daemon.metrics import REQUEST_SECONDS, REQUESTS

log = logging.getLogger("ovembed.access")
_POLLED = frozenset({"/", "/health", "/api/version", "/api/tags", "/api/ps", "/metrics"})


class Observe:
    """Outermost, so even the guard's refusals are counted; paths outside `routes` count as "other"."""

    def __init__(self, app: ASGIApp, routes: Iterable[str]) -> None:
        self.app = app
        self.routes = frozenset(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            seconds = time.perf_counter() - started
            route = scope["path"] if scope["path"] in self.routes else "other"
            code = str(status or 499)  # no answer started: the client left first
            REQUESTS.labels(route, code).inc()
            REQUEST_SECONDS.labels(route).observe(seconds)
            level = logging.DEBUG if route in _POLLED else logging.INFO
            if log.isEnabledFor(level):
                log.log(
                    level, "%s %s %s %.1f ms%s", scope["method"], scope["path"], code, seconds * 1000, work_of(scope)
                )
