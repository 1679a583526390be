"""OpenAI's /v1/embeddings and /v1/models, as Ollama's compatibility layer answers them.

As in Ollama, only model, input, dimensions and encoding_format count: truncation is always on, and
keep_alive and options are not read. The OpenAI SDK asks for base64 by default.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from daemon import views
from daemon.disconnect import unless_disconnected
from daemon.embedding import context_limit, embed_texts
from daemon.errors import ApiError, Err
from daemon.payload import parse_body
from daemon.responses import OpenAIJSON, openai_error
from daemon.routes_api import find_record, get_only, installed, parse_embed_model, services_of
from daemon.vectors import all_finite, shorten, to_base64
from modelstore.names import InvalidName, parse_name

_FORMATS = ("float", "base64")


def _inputs(value: Any) -> list[str]:
    """`""` is one empty text here (unlike /api/embed); nothing and `[]` are refused."""
    if value is None or value == []:
        raise Err.INVALID_INPUT()
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise Err.INVALID_INPUT_TYPE()


async def embeddings(request: Request) -> Response:
    services = services_of(request)
    try:
        fields = parse_body(await request.body(), "EmbedRequest")
        model_text = fields.string("model")
        dimensions = fields.integer("dimensions")
        encoding = fields.string("encoding_format") or "float"
        if encoding.lower() not in _FORMATS:
            raise Err.BAD_ENCODING_FORMAT(value=encoding)
        texts = _inputs(fields.raw("input"))
        name = parse_embed_model(model_text)
        record = installed(services, name, Err.MODEL_NOT_FOUND_PULL, model_text)
        limit = context_limit(record, 0)
        work = embed_texts(services, record, texts, keep_alive=None, truncate=True, limit=limit)
        result = await unless_disconnected(request, work)
        vectors = shorten(result.vectors, dimensions)
        if not all_finite(vectors):
            raise Err.NAN_OUTPUT()
    except ApiError as error:
        return openai_error(error)
    as_base64 = encoding.lower() == "base64"
    data = [
        {"object": "embedding", "embedding": to_base64(v) if as_base64 else v, "index": i}
        for i, v in enumerate(vectors)
    ]
    usage = {"prompt_tokens": result.token_count, "total_tokens": result.token_count}
    return OpenAIJSON({"object": "list", "data": data, "model": model_text, "usage": usage})


async def models(request: Request) -> Response:
    records = services_of(request).store.list()
    # Ollama answers `"data": null` when nothing is installed, and clients cope with it.
    return OpenAIJSON({"object": "list", "data": [views.openai_model(r) for r in records] or None})


async def model(request: Request) -> Response:
    model_id = request.path_params["model"]
    try:
        name = parse_name(model_id)
    except InvalidName:
        name = None
    record = find_record(services_of(request), name) if name is not None else None
    if record is None:
        return openai_error(Err.MODEL_NOT_FOUND(name=model_id))
    return OpenAIJSON(views.openai_model(record, model_id))


ROUTES = [
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    get_only("/v1/models", models),
    get_only("/v1/models/{model:path}", model),
]
