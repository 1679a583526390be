"""The Starlette application: routes, the guard, and one exception handler for every error answer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from daemon.http import health, metrics, ollama, openai, pull, rerank, tei, upstream
from daemon.http.auth import Auth
from daemon.http.errors import HANDLED, answer
from daemon.http.guard import Guard
from daemon.http.observe import Observe
from daemon.http.upstream import Upstream
from daemon.startup import Parts


async def _routing_error(request: Request, exc: Exception) -> Response:
    """Gin's plain-text answers for an unknown path and a wrong method."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    text = {404: "404 page not found", 405: "405 method not allowed"}.get(status, str(exc))
    return PlainTextResponse(text, status_code=status)


def create_app(parts: Parts) -> Starlette:
    """The app around parts built beforehand, so a bad device or store fails before the socket opens."""
    settings = parts.settings
    beside = Upstream(settings.upstream) if settings.upstream else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings, app.state.store = settings, parts.store
        app.state.runtime, app.state.pulls = parts.runtime, parts.pulls
        app.state.upstream = beside
        preloading = asyncio.create_task(parts.preload())  # in the background: the socket opens at once
        try:
            yield
        finally:
            preloading.cancel()
            await parts.close()
            if beside is not None:
                await beside.close()

    handle = answer if beside is None else beside.handler(answer)
    handlers = {404: _routing_error, 405: _routing_error, Exception: handle, **dict.fromkeys(HANDLED, handle)}
    routes = [
        *health.ROUTES,
        *ollama.ROUTES,
        *pull.ROUTES,
        *openai.ROUTES,
        *rerank.ROUTES,
        *tei.ROUTES,
        *metrics.ROUTES,
    ]
    if beside is not None:  # last: what no route of ovembed's takes
        routes += upstream.ROUTES
    # Outermost first: observe counts and logs every answer (a refusal too), the guard checks the Host and answers
    # CORS preflights, then the API key, when one is set.
    middleware = [
        Middleware(Observe, routes=[route.path for route in routes]),
        Middleware(Guard, listen=settings.listen, extra_origins=settings.extra_origins),
    ]
    if settings.api_key:
        middleware.append(Middleware(Auth, key=settings.api_key, metrics_open=settings.metrics_open))
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=handlers,
        lifespan=lifespan,
    )
