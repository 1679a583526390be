"""POST /api/pull: Ollama's NDJSON progress stream, or one final object with `stream: false`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from daemon.errors import ApiError, Err
from daemon.payload import parse_body
from daemon.pulls import PullOutcome
from daemon.responses import OllamaJSON, ollama_error
from daemon.routes_api import name_field, parse_model, services_of

# Ollama answers a failed non-streamed pull with the error's own status; these are ovembed's kinds.
_STATUS_BY_KIND = {"not_found": 404, "unsupported": 400, "unreachable": 502, "canceled": 499, "failed": 500}


async def _messages(request: Request, name: Any) -> AsyncIterator[dict[str, Any] | PullOutcome]:
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


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


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
    answer = asyncio.ensure_future(_last(messages))
    gone = asyncio.ensure_future(_until_disconnect(request))
    await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
    gone.cancel()
    if not answer.done():
        answer.cancel()
        await asyncio.gather(answer, return_exceptions=True)
        await messages.aclose()
        return ollama_error(Err.REQUEST_CANCELED())
    return answer.result()


ROUTES = [Route("/api/pull", pull, methods=["POST"])]
