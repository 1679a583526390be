"""Ollama's native endpoints: parse and validate as Ollama does, call the layer below, answer in Ollama's JSON.

Errors are raised, never answered here: daemon/http/errors.py turns each into Ollama's status and text.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from daemon.http import views
from daemon.http.disconnect import cancelled_on_disconnect
from daemon.http.errors import Err
from daemon.http.lookup import find_record, installed, name_field, parse_embed_model, parse_model
from daemon.http.request import Fields, check_options, read_fields
from daemon.http.responses import OllamaJSON, empty_ok
from daemon.http.routing import get_only
from daemon.http.state import note_work, runtime_of, store_of
from daemon.http.upstream import upstream_of, with_upstreams
from daemon.http.vectors import encoding_format, sparse_object, vectors
from daemon.inference.embed import Embedded, EmbedOptions
from modelstore.spec import MULTIVECTOR, SPARSE
from modelstore.store import ModelRecord, ModelStore

OLLAMA_VERSION = "0.12.10"


def embed_inputs(value: Any) -> list[str]:
    """Ollama's `input`: a string, a list of strings, or nothing; `""` and `[]` mean "just load"."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise Err.INVALID_INPUT_TYPE()


# `input_type`, as Voyage names it and Cohere too (Cohere's values are the search_ ones): a ColBERT model marks
# and pads queries unlike documents. Documents by default, as fastembed's `embed` (its `query_embed` for queries).
_INPUT_TYPES = {"query": True, "search_query": True, "document": False, "search_document": False}


def _extras(fields: Fields) -> frozenset[str]:
    """ovembed's additions to /api/embed: `"sparse": true` and `"multivector": true` ask for those outputs."""
    return frozenset(output for output in (SPARSE, MULTIVECTOR) if fields.boolean(output) is True)


def _queries(fields: Fields) -> bool:
    """Whether `input_type` says the texts are queries."""
    value = fields.string("input_type") or "document"
    if value.lower() not in _INPUT_TYPES:
        raise Err.INPUT_TYPE(value=value)
    return _INPUT_TYPES[value.lower()]


def _outputs(result: Embedded, encoding: str) -> dict[str, Any]:
    """The answer's vectors: `embeddings` (empty for a model without dense vectors), and the outputs asked."""
    answer: dict[str, Any] = {"embeddings": vectors(result.vectors, encoding) if result.vectors.shape[1] else []}
    if result.sparse:
        answer["sparse_embeddings"] = [sparse_object(v) for v in result.sparse]
    if result.multivector:
        answer["multivector_embeddings"] = [vectors(tokens, encoding) for tokens in result.multivector]
    return answer


async def embed(request: Request) -> Response:
    """Ollama's fields, and ovembed's `sparse`, `multivector` and `encoding_format` (base64, as OpenAI's)."""
    started = time.perf_counter()
    fields = await read_fields(request, "EmbedRequest")
    model_text = fields.string("model")
    truncate = fields.boolean("truncate")
    dimensions = fields.integer("dimensions")
    keep_alive = fields.keep_alive()
    options = fields.options()
    # Ollama's order: the name's grammar, then the input's type, then whether the model is installed; then
    # ovembed's own fields.
    name = parse_embed_model(model_text)
    texts = embed_inputs(fields.raw("input"))
    record = installed(store_of(request), name, Err.MODEL_NOT_FOUND_PULL, model_text)
    extras, encoding, queries = _extras(fields), encoding_format(fields), _queries(fields)
    num_ctx = check_options(options).get("num_ctx", 0)
    asked = EmbedOptions(keep_alive, truncate is not False, num_ctx, dimensions, extras=extras, queries=queries)
    async with cancelled_on_disconnect(request):
        result = await runtime_of(request).embed(record, texts, asked)
    note_work(request, len(texts), result.token_count)
    if not texts:
        return OllamaJSON({"model": model_text, "embeddings": []})
    timings = views.timings(started, result.load_seconds, result.token_count)
    return OllamaJSON({"model": model_text, **_outputs(result, encoding), **timings})


async def embeddings(request: Request) -> Response:
    """The legacy endpoint: one prompt, raw (not normalized) float64 values, `model is required` for bad names.

    Over-long prompts are truncated to the context, as sentence-transformers and older Ollama runners did;
    Ollama's current release answers them with a 500 instead.
    """
    fields = await read_fields(request, "EmbeddingRequest")
    model_text = fields.string("model")
    prompt = fields.string("prompt")
    keep_alive = fields.keep_alive()
    options = check_options(fields.options())
    name = parse_model(model_text, empty=Err.MODEL_REQUIRED, invalid=Err.MODEL_REQUIRED)
    record = installed(store_of(request), name, Err.MODEL_NOT_FOUND_PULL, model_text)
    texts = [prompt] if prompt else []
    asked = EmbedOptions(keep_alive, truncate=True, num_ctx=options.get("num_ctx", 0), normalize=False)
    async with cancelled_on_disconnect(request):
        result = await runtime_of(request).embed(record, texts, asked)
    note_work(request, len(texts), result.token_count)
    if not texts:
        return OllamaJSON({"embedding": []})
    return OllamaJSON({"embedding": result.vectors[0].astype(np.float64)})


def named_model(store: ModelStore, fields: Fields) -> ModelRecord:
    """/api/show and /api/delete: `model is required`, `name "X" is invalid`, `model 'X:latest' not found`."""
    name = parse_model(name_field(fields), empty=Err.MODEL_REQUIRED, invalid=Err.NAME_INVALID)
    return installed(store, name, Err.MODEL_NOT_FOUND_QUOTED, name.display)


async def tags(request: Request) -> Response:
    if request.method == "HEAD":
        return OllamaJSON(None)
    own = [views.tag_item(r) for r in store_of(request).list()]
    return OllamaJSON({"models": await with_upstreams(request, own, "/api/tags", "models", "name", "modified_at")})


async def show(request: Request) -> Response:
    record = named_model(store_of(request), await read_fields(request, "ShowRequest"))
    return OllamaJSON(views.show(record, runtime_of(request).precision_of(record)))


async def ps(request: Request) -> Response:
    runtime = runtime_of(request)
    own = [views.ps_item(r, runtime.on_gpu) for r in runtime.running()]
    return OllamaJSON({"models": await with_upstreams(request, own, "/api/ps", "models", "name", "expires_at")})


async def delete(request: Request) -> Response:
    store = store_of(request)
    fields = await read_fields(request, "DeleteRequest")
    name = parse_model(name_field(fields), empty=Err.MODEL_REQUIRED, invalid=Err.NAME_INVALID)
    if find_record(store, name) is None and store.remove_unreadable(name):
        return empty_ok()
    record = named_model(store, fields)
    store.delete(record)
    runtime_of(request).retire(record)  # its folder and compile cache go with the last name for them
    return empty_ok()


async def copy(request: Request) -> Response:
    store = store_of(request)
    fields = await read_fields(request, "CopyRequest")
    source_text, destination_text = fields.string("source"), fields.string("destination")
    source = parse_model(source_text, empty=Err.SOURCE_INVALID, invalid=Err.SOURCE_INVALID)
    destination = parse_model(destination_text, empty=Err.DESTINATION_INVALID, invalid=Err.DESTINATION_INVALID)
    record = installed(store, source, Err.MODEL_NOT_FOUND, source_text)
    store.copy(record, destination)
    return empty_ok()


async def version(request: Request) -> Response:
    """Ollama's release whose API ovembed speaks; beside an upstream, the upstream's own, since clients check
    the version for what the upstream serves (chat, tools, thinking)."""
    upstream = upstream_of(request)
    answered = await upstream.version() if upstream is not None else None
    return OllamaJSON({"version": answered or OLLAMA_VERSION})


async def root(request: Request) -> Response:
    return PlainTextResponse("Ollama is running")


ROUTES = [
    Route("/", root, methods=["GET", "HEAD"]),
    Route("/api/version", version, methods=["GET", "HEAD"]),
    Route("/api/embed", embed, methods=["POST"]),
    Route("/api/embeddings", embeddings, methods=["POST"]),
    Route("/api/tags", tags, methods=["GET", "HEAD"]),
    Route("/api/show", show, methods=["POST"]),
    get_only("/api/ps", ps),
    Route("/api/delete", delete, methods=["DELETE"]),
    Route("/api/copy", copy, methods=["POST"]),
]
