"""`GET`/`HEAD /health`: 200 when the daemon can serve, else 503 with the reason in words, for a load balancer
(HAProxy's `option httpchk GET /health`), systemd or Kubernetes; TEI's `/health` and OVMS's
`/v2/health/ready` answer the same question. Open without the API key, read from memory, logged at DEBUG."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from daemon.http.responses import PlainJSON
from daemon.http.state import runtime_of
from daemon.inference.health import Health


def _said(health: Health) -> dict[str, Any]:
    """The body: `status` for a machine, `reason` for the person reading the balancer's log."""
    if health.draining:
        return {
            "status": "draining",
            "reason": "ovembed is shutting down: it finishes the requests in flight and takes no new ones",
        }
    if health.stuck:
        return {
            "status": "stuck",
            "reason": f"{' and '.join(health.stuck)} stopped responding; "
            "the model is being compiled again and will answer when it is",
            "stuck": list(health.stuck),
        }
    if not health.ready:
        count = len(health.preload)
        if health.loading is None:  # the preload has not begun yet
            return {"status": "loading", "reason": f"about to load the {count} preloaded models"}
        return {
            "status": "loading",
            "reason": f"loading {health.loading} ({health.preloaded + 1} of {count} preloaded models)",
        }
    body: dict[str, Any] = {"status": "ok", "loaded": list(health.loaded)}
    if health.preload_failed:
        body["preload_failed"] = list(health.preload_failed)
    return body


async def health(request: Request) -> Response:
    snapshot = runtime_of(request).health()
    return PlainJSON(_said(snapshot), status_code=200 if snapshot.ready else 503)


ROUTES = [Route("/health", health, methods=["GET", "HEAD"])]
