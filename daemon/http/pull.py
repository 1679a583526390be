"""POST /api/pull: Ollama's NDJSON progress stream, or one final object with `stream: false`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from daemon.http.disconnect import unless_disconnected
from daemon.http.errors import Err, as_api_error
from daemon.http.lookup import name_field, parse_model
from daemon.http.request import read_fields
from daemon.http.responses import OllamaJSON
from daemon.http.state import pulls_of
from daemon.shared_pulls import PullOutcome
from modelstore.names import ModelName


async def _messages(request: Request, name: ModelName) -> AsyncIterator[dict[str, Any] | PullOutcome]:
    async with pulls_of(request).follow(name) as queue:
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
                yield orjson.dumps({"error": as_api_error(message.error).message}) + b"\n"
            return
        yield orjson.dumps(message) + b"\n"


async def _last(messages: AsyncIterator[dict[str, Any] | PullOutcome]) -> Response:
    """The final status object; a failed pull answers with its error's own status, as Ollama does."""
    last: dict[str, Any] = {}
    async for message in messages:
        if isinstance(message, PullOutcome):
            if message.error is not None:
                raise message.error
            return OllamaJSON(last)
        last = message
    raise Err.REQUEST_CANCELED()


async def pull(request: Request) -> Response:
    fields = await read_fields(request, "PullRequest")
    name = parse_model(name_field(fields), empty=Err.INVALID_MODEL_NAME, invalid=Err.INVALID_MODEL_NAME)
    stream = fields.boolean("stream")
    messages = _messages(request, name)
    if stream is not False:
        return StreamingResponse(_ndjson(messages), media_type="application/x-ndjson")
    # Without a stream the client only waits; leaving early must still release the pull.
    return await unless_disconnected(request, _last(messages))


ROUTES = [Route("/api/pull", pull, methods=["POST"])]
