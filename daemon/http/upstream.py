"""The user's own Ollama behind ovembed (OVEMBED_UPSTREAM): one address for chat and embeddings.

What ovembed does not serve goes to the upstream as it comes, both ways: a request body is streamed up as the
client sends it, and an answer (NDJSON, SSE, a blob) streams back as the upstream writes it, with no timeout
that could cut a long generation. That is every route ovembed lacks (`/api/generate`, `/api/chat`,
`/v1/chat/completions`, anything new) and every request naming a model only the upstream holds; the model
lists are merged. An upstream that does not answer gets a 502 that names it, ovembed's own models keep
working, and the log says so once per outage.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
import orjson
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from daemon.http.errors import ApiError, Err, ModelElsewhere

log = logging.getLogger(__name__)

# RFC 9110's hop-by-hop fields, which a proxy never passes on, and Host, which names the proxy. Authorization is
# ovembed's (OVEMBED_API_KEY) and never leaves it; Ollama takes none.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "authorization",
    }
)
# Connecting fails fast; a generation may take as long as it takes, and so may a client's upload.
_TIMEOUT = httpx.Timeout(connect=5.0, read=None, write=None, pool=None)
# The model lists ask the upstream with a bound, so a stuck upstream cannot hold ovembed's own lists.
_LIST_TIMEOUT = httpx.Timeout(10.0, connect=2.0)
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# RFC 9110's Via, as a proxy adds it: a request that comes back with it has gone round in a circle (an upstream
# address that is ovembed's own).
_VIA = "1.1 ovembed"
# The routes both serve that name a model: a model only the upstream holds is its to answer there. On ovembed's
# own routes (rerank, TEI's /embed_sparse), which Ollama lacks, such a name is answered here as not found.
_SHARED_MODEL_ROUTES = frozenset(
    {"/api/embed", "/api/embeddings", "/api/show", "/api/delete", "/api/copy", "/api/pull", "/v1/embeddings"}
)
_SHARED_MODEL_PREFIX = "/v1/models/"
# Go writes nanoseconds; Python reads at most microseconds.
_FRACTION = re.compile(r"(\.\d{6})\d+")

Handler = Callable[[Request, Exception], Awaitable[Response]]


def _moment(value: Any) -> float:
    """A time from Ollama's JSON as a timestamp, for ordering: RFC 3339, or seconds as OpenAI's `created`;
    0 for anything unreadable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return datetime.fromisoformat(_FRACTION.sub(r"\1", str(value)).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


class Upstream:
    """The upstream's address, one connection pool to it, and whether it answered last time."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.url, timeout=_TIMEOUT)
        self._answering = True

    async def close(self) -> None:
        await self._client.aclose()

    def _down(self, exc: httpx.HTTPError) -> ApiError:
        """The 502 for an upstream that did not answer; the log says so once, until it answers again."""
        reason = str(exc) or type(exc).__name__
        if self._answering:
            log.warning("the Ollama at %s (OVEMBED_UPSTREAM) does not answer: %s", self.url, reason)
            self._answering = False
        return Err.UPSTREAM_DOWN(address=self.url, reason=reason)

    def _up(self) -> None:
        if not self._answering:
            log.info("the Ollama at %s (OVEMBED_UPSTREAM) answers again", self.url)
            self._answering = True

    async def forward(self, request: Request, body: bytes | None = None) -> Response:
        """The request sent on as the client sent it (`body` when ovembed has read it already), and the
        upstream's answer streamed back. Raises the 502 ApiError when the upstream cannot be reached."""
        if _looped(request):
            raise Err.UPSTREAM_LOOP(address=self.url)
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        headers.append(("via", _VIA))
        sends_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
        content = body if body is not None else request.stream() if sends_body else None
        sent = self._client.build_request(
            request.method, request.url.path, params=request.url.query, headers=headers, content=content
        )
        try:
            answer = await self._client.send(sent, stream=True)
        except httpx.HTTPError as exc:
            raise self._down(exc) from exc
        self._up()
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
        return StreamingResponse(
            self._relayed(answer),
            status_code=answer.status_code,
            headers=kept,
            background=BackgroundTask(answer.aclose),
        )

    async def _relayed(self, answer: httpx.Response) -> AsyncIterator[bytes]:
        """The answer's bytes as they come; a stream the upstream breaks ends with an error in its own format
        (an NDJSON line, an SSE event), as Ollama ends a stream that fails.

        The answer is closed here as well as by the response's background task: Starlette skips that task when
        the client has gone (ASGI 2.4), and this generator's `finally` still runs when it is finalized."""
        try:
            async for chunk in answer.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            log.warning("the Ollama at %s broke off an answer: %s", self.url, exc)
            message = f"the Ollama at {self.url} (OVEMBED_UPSTREAM) broke off its answer: {exc or type(exc).__name__}"
            kind = answer.headers.get("content-type", "")
            if "x-ndjson" in kind:
                yield orjson.dumps({"error": message}) + b"\n"
            elif "event-stream" in kind:
                yield b"data: " + orjson.dumps({"error": {"message": message}}) + b"\n\n"
        finally:
            await answer.aclose()

    async def _json(self, path: str) -> dict[str, Any]:
        """A small GET's JSON object, within a bound; empty when the upstream does not answer or answers
        something else."""
        try:
            answer = await self._client.get(path, timeout=_LIST_TIMEOUT, headers={"via": _VIA})
        except httpx.HTTPError as exc:
            self._down(exc)
            return {}
        self._up()
        if answer.status_code != 200:
            return {}
        try:
            data = orjson.loads(answer.content)
        except orjson.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}

    async def listed(self, path: str, field: str) -> list[dict[str, Any]]:
        """The upstream's entries of a model list (`models` of /api/tags and /api/ps, `data` of /v1/models);
        none when it does not answer."""
        entries = (await self._json(path)).get(field)
        return [entry for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []

    async def version(self) -> str | None:
        """The upstream's version, or None when it does not answer."""
        version = (await self._json("/api/version")).get("version")
        return str(version) if version else None

    def handler(self, answer: Handler) -> Handler:
        """The exception handler with the upstream in it: a model ovembed does not hold, named on a route Ollama
        also serves, is the upstream's."""

        async def handle(request: Request, exc: Exception) -> Response:
            path = request.url.path
            shared = path in _SHARED_MODEL_ROUTES or path.startswith(_SHARED_MODEL_PREFIX)
            if isinstance(exc, ModelElsewhere) and shared:
                try:
                    return await self.forward(request, getattr(request.state, "body", None))
                except ApiError as down:
                    return await answer(request, down)
            return await answer(request, exc)

        return handle


def _looped(request: Request) -> bool:
    return _VIA in request.headers.getlist("via")


def upstream_of(request: Request) -> Upstream | None:
    """The upstream, for a request that has not come back from it (one that has is answered as if there were
    none, so a list or a version asks round the circle once, not for ever)."""
    return None if _looped(request) else getattr(request.app.state, "upstream", None)


async def with_upstreams(
    request: Request, own: list[dict[str, Any]], path: str, field: str, key: str, order: str
) -> list[dict[str, Any]]:
    """A model list (`field` of `path`) with the upstream's entries in it, in Ollama's order (`order`, a time,
    latest first); ovembed's entry stands where a name (`key`) is on both, and the upstream's keep every field
    they have. Without an upstream, or with one that does not answer, ovembed's own."""
    upstream = upstream_of(request)
    if upstream is None:
        return own
    names = {entry.get(key) for entry in own}
    both = [*own, *(entry for entry in await upstream.listed(path, field) if entry.get(key) not in names)]
    return sorted(both, key=lambda entry: _moment(entry.get(order)), reverse=True)


async def _everything_else(request: Request) -> Response:
    upstream: Upstream = request.app.state.upstream  # the route exists only beside one
    return await upstream.forward(request)


# Last in the table: every path ovembed does not serve, with any method.
ROUTES = [Route("/{path:path}", _everything_else, methods=_METHODS)]
