"""Response types with Ollama's exact content types, encoded by orjson."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from daemon.errors import ApiError

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class OllamaJSON(Response):
    """Native endpoints answer `application/json; charset=utf-8`, as Ollama's tests assert."""

    media_type = "application/json; charset=utf-8"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS)


class OpenAIJSON(OllamaJSON):
    """The OpenAI-compatible endpoints answer plain `application/json`."""

    media_type = "application/json"


def ollama_error(error: ApiError) -> OllamaJSON:
    return OllamaJSON({"error": error.message}, status_code=error.status)


def openai_error(error: ApiError) -> OpenAIJSON:
    """OpenAI's error form, typed by status as Ollama's middleware types it."""
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(error.status, "api_error")
    body = {"error": {"message": error.message, "type": kind, "param": None, "code": None}}
    return OpenAIJSON(body, status_code=error.status)


def empty_ok() -> Response:
    """Delete and copy succeed with an empty 200 body."""
    return Response(status_code=200)
