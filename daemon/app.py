"""The Starlette application: routes, Ollama's 404/405 texts, the guard, and the shared services."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from daemon import routes_api, routes_openai, routes_pull
from daemon.guard import Guard
from daemon.services import Services


async def _http_error(request: Request, exc: Exception) -> Response:
    """Gin's plain-text answers for an unknown path and a wrong method."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    text = {404: "404 page not found", 405: "405 method not allowed"}.get(status, str(exc))
    return PlainTextResponse(text, status_code=status)


def create_app(services: Services) -> Starlette:
    """The app around services built beforehand, so a bad device or store fails before the socket opens."""
    settings = services.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.services = services
        try:
            yield
        finally:
            await services.close()

    return Starlette(
        routes=[*routes_api.ROUTES, *routes_pull.ROUTES, *routes_openai.ROUTES],
        middleware=[Middleware(Guard, listen=settings.listen, extra_origins=settings.extra_origins)],
        exception_handlers={404: _http_error, 405: _http_error},
        lifespan=lifespan,
    )
