"""ASGI middleware that counts each answered request and its time, for /metrics."""

from __future__ import annotations

import time
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daemon.metrics import REQUEST_SECONDS, REQUESTS


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
            route = scope["path"] if scope["path"] in self.routes else "other"
            REQUESTS.labels(route, str(status or 499)).inc()  # no answer started: the client left first
            REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
