"""`GET /metrics`: the daemon's counters in Prometheus' text format (Ollama has none; ollama#3144)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from daemon.http.routing import get_only
from daemon.metrics import REGISTRY


async def metrics(request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


ROUTES = [get_only("/metrics", metrics)]
