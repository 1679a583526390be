"""POST /api/pull: Ollama's NDJSON progress stream, or one final object with `stream: false`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from daemon.disconnect import unless_disconnected
from daemon.errors import ApiError, Err
from daemon.payload import parse_body
from daemon.pulls import PullOutcome
from daemon.responses import OllamaJSON, ollama_error
from daemon.routes_api import name_field, parse_model, services_of
from modelstore.names import ModelName

# Ollama answers a failed non-streamed pull with the error's own status; these are ovembed's kinds.
_STATUS_BY_KIND = {"not_found": 404, "unsupported": 400, "unreachable": 502, "canceled": 499, "failed": 500}


async def _messages(request: Request, name: ModelName) -> AsyncIterator[dict[str, Any] | PullOutcome]:
    async with services_of(request).pulls.follow(name) as queue:
        while True:
            message = await queue.get()
            yield message
            if isinstance(message, PullOutcome):
                return


async def _ndjson(messages: AsyncIterator[dict[str, Any] | PullOutcome]) -> AsyncIterator[bytes]:
    """One JSON object per line; an error after the stream began is a final `{"error": ...}` line."""
    async for message in messages:
        if isinstance(message, PullOutcome):
            if message.error is not None:
                yield orjson.dumps({"error": message.error}) + b"\n"
            return
        yield orjson.dumps(message) + b"\n"


async def _last(messages: AsyncIterator[dict[str, Any] | PullOutcome]) -> Response:
    last: dict[str, Any] = {}
    async for message in messages:
        if isinstance(message, PullOutcome):
            if message.error is not None:
                return ollama_error(ApiError(_STATUS_BY_KIND.get(message.kind, 500), message.error))
            return OllamaJSON(last)
        last = message
    return ollama_error(Err.REQUEST_CANCELED())


async def pull(request: Request) -> Response:
    try:
        fields = parse_body(await request.body(), "PullRequest")
        name = parse_model(name_field(fields), empty=Err.INVALID_MODEL_NAME, invalid=Err.INVALID_MODEL_NAME)
        stream = fields.boolean("stream")
    except ApiError as error:
        return ollama_error(error)
    messages = _messages(request, name)
    if stream is not False:
        return StreamingResponse(_ndjson(messages), media_type="application/x-ndjson")
    # Without a stream the client only waits; leaving early must still release the pull.
    try:
        return await unless_disconnected(request, _last(messages))
    except ApiError as error:
        return ollama_error(error)


ROUTES = [Route("/api/pull", pull, methods=["POST"])]
