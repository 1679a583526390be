"""Response types with Ollama's exact content types, encoded by orjson."""

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


class OpenAIJSON(OllamaJSON):
    """The OpenAI-compatible endpoints answer plain `application/json`."""

    media_type = "application/json"


def empty_ok() -> Response:
    """Delete and copy succeed with an empty 200 body."""
    return Response(status_code=200)
