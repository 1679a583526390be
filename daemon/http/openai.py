"""OpenAI's /v1/embeddings and /v1/models, as Ollama's compatibility layer answers them.

As in Ollama, only model, input, dimensions and encoding_format count: truncation is always on, and
keep_alive and options are not read. The OpenAI SDK asks for base64 by default. Errors take OpenAI's
shape under /v1 (daemon/http/errors.py).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from daemon.http import views
from daemon.http.disconnect import cancelled_on_disconnect
from daemon.http.errors import Err, ModelElsewhere
from daemon.http.lookup import find_record, installed, parse_embed_model
from daemon.http.request import read_fields, required_texts
from daemon.http.responses import PlainJSON
from daemon.http.routing import get_only
from daemon.http.state import note_work, runtime_of, store_of
from daemon.http.upstream import with_upstreams
from daemon.http.vectors import encoding_format, vectors
from daemon.inference.embed import EmbedOptions
from modelstore.names import InvalidName, parse_name


async def embeddings(request: Request) -> Response:
    fields = await read_fields(request, "EmbedRequest")
    model_text = fields.string("model")
    dimensions = fields.integer("dimensions")
    encoding = encoding_format(fields)
    texts = required_texts(fields.raw("input"), Err.INVALID_INPUT)  # `""` is one text here, unlike /api/embed
    record = installed(store_of(request), parse_embed_model(model_text), Err.MODEL_NOT_FOUND_PULL, model_text)
    async with cancelled_on_disconnect(request):
        result = await runtime_of(request).embed(record, texts, EmbedOptions(dimensions=dimensions))
    note_work(request, len(texts), result.token_count)
    data = [
        {"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors(result.vectors, encoding))
    ]
    usage = {"prompt_tokens": result.token_count, "total_tokens": result.token_count}
    return PlainJSON({"object": "list", "data": data, "model": model_text, "usage": usage})


async def models(request: Request) -> Response:
    own = [views.openai_model(r) for r in store_of(request).list()]
    listed = await with_upstreams(request, own, "/v1/models", "data", "id", "created")
    # Ollama answers `"data": null` when nothing is installed, and clients cope with it.
    return PlainJSON({"object": "list", "data": listed or None})


async def model(request: Request) -> Response:
    model_id = request.path_params["model"]
    try:
        name = parse_name(model_id)
    except InvalidName:
        raise ModelElsewhere(Err.MODEL_NOT_FOUND(name=model_id)) from None
    record = find_record(store_of(request), name)
    if record is None:
        raise ModelElsewhere(Err.MODEL_NOT_FOUND(name=model_id))
    return PlainJSON(views.openai_model(record, model_id))


ROUTES = [
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    get_only("/v1/models", models),
    get_only("/v1/models/{model:path}", model),
]
