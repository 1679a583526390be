"""POST /api/pull: Ollama's NDJSON progress stream, or one final object with `stream: false`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from daemon.http.disconnect import cancelled_on_disconnect
from daemon.http.errors import Err, ModelElsewhere, as_api_error
from daemon.http.lookup import name_field, parse_model
from daemon.http.request import read_fields
from daemon.http.responses import OllamaJSON
from daemon.http.state import pulls_of
from daemon.http.upstream import upstream_of
from modelstore.names import ModelName
from modelstore.pull import resolve_source
from modelstore.pull_errors import UnknownName
from modelstore.pull_events import (
    Converting,
    Done,
    FileProgress,
    PullEvent,
    Quantizing,
    Resolving,
    Verifying,
    Writing,
)

_CONVERTING = "converting to OpenVINO IR"  # ovembed's own step; Ollama's pull has none
_STEPS: dict[type[PullEvent], str] = {
    Resolving: "pulling manifest",
    Verifying: "verifying sha256 digest",
    Converting: _CONVERTING,
    Quantizing: "quantizing to Q8_0",  # as Ollama's create says it
    Writing: "writing manifest",
    Done: "success",
}


def progress_object(event: PullEvent) -> dict[str, Any]:
    """Ollama's progress object for an event: a file is a layer, shown by the first 12 hex digits of its
    digest; absent fields are left out, as Go's omitempty does."""
    if isinstance(event, FileProgress):
        status = f"pulling {event.digest.split(':')[-1][:12]}"
        return {"status": status, "digest": event.digest, "total": event.size, "completed": event.completed}
    if isinstance(event, Converting) and event.total is not None:
        return {"status": _CONVERTING, "total": event.total, "completed": event.done}
    return {"status": _STEPS[type(event)]}


async def _ndjson(events: AsyncIterator[PullEvent]) -> AsyncIterator[bytes]:
    """One JSON object per line; an error after the stream began is a final `{"error": ...}` line."""
    try:
        async for event in events:
            yield orjson.dumps(progress_object(event)) + b"\n"
    except Exception as exc:
        yield orjson.dumps({"error": as_api_error(exc).message}) + b"\n"


async def _last(events: AsyncIterator[PullEvent]) -> Response:
    """The final status object; a failed pull answers with its error's own status, as Ollama does."""
    last: PullEvent | None = None
    async for event in events:
        last = event
    assert last is not None  # a pull that ends without raising has reported Done
    return OllamaJSON(progress_object(last))


def _ours(name: ModelName) -> bool:
    """A name ovembed pulls itself: its catalog's, or a Hugging Face repo; any other is the upstream's."""
    try:
        resolve_source(name)
    except UnknownName:
        return False
    return True


async def pull(request: Request) -> Response:
    fields = await read_fields(request, "PullRequest")
    name = parse_model(name_field(fields), empty=Err.INVALID_MODEL_NAME, invalid=Err.INVALID_MODEL_NAME)
    if upstream_of(request) is not None and not _ours(name):
        raise ModelElsewhere(Err.MODEL_NOT_FOUND(name=name.display))
    stream = fields.boolean("stream")
    events = pulls_of(request).follow(name)
    if stream is not False:
        return StreamingResponse(_ndjson(events), media_type="application/x-ndjson")
    # Without a stream the client only waits; leaving early must still release the pull.
    async with cancelled_on_disconnect(request):
        return await _last(events)


ROUTES = [Route("/api/pull", pull, methods=["POST"])]
