"""JSON responses with each API's own content type, encoded by orjson."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class OllamaJSON(Response):
    """Native endpoints answer `application/json; charset=utf-8`, as Ollama's tests assert."""

    media_type = "application/json; charset=utf-8"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS)


class PlainJSON(OllamaJSON):
    """OpenAI's, Cohere's and TEI's shapes answer plain `application/json`, as those servers do."""

    media_type = "application/json"


def empty_ok() -> Response:
    """Delete and copy succeed with an empty 200 body."""
    return Response(status_code=200)
