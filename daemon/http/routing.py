"""Route helpers for Ollama's method rules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def get_only(path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> Route:
    """A GET route without the HEAD that Starlette adds by itself; Ollama answers HEAD there with 405."""
    route = Route(path, endpoint, methods=["GET"])
    assert route.methods is not None
    route.methods.discard("HEAD")
    return route
