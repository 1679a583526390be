"""Ollama's native endpoints: validate as Ollama does, hand texts to the batcher, answer in Ollama's JSON."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from daemon import views
from daemon.disconnect import unless_disconnected
from daemon.embedding import context_limit, embed_texts
from daemon.errors import ApiError, Err
from daemon.payload import Fields, check_options, parse_body
from daemon.responses import OllamaJSON, empty_ok, ollama_error
from daemon.services import Services
from daemon.vectors import all_finite, shorten
from modelstore.names import InvalidName, ModelName, parse_name
from modelstore.store import ModelRecord

OLLAMA_VERSION = "0.12.10"


def services_of(request: Request) -> Services:
    return request.app.state.services


async def read_fields(request: Request, struct: str) -> Fields:
    return parse_body(await request.body(), struct)


def find_record(services: Services, name: ModelName) -> ModelRecord | None:
    """Installed models only; `:cloud` names go to ollama.com in Ollama, and ovembed has no cloud."""
    return None if name.is_cloud else services.store.get(name)


def parse_model(text: str, *, empty: Err, invalid: Err) -> ModelName:
    """A name from a request; each endpoint has its own errors for an empty and a malformed one."""
    if not text.strip():
        raise empty(name=text)
    try:
        return parse_name(text)
    except InvalidName:
        raise invalid(name=text) from None


def installed(services: Services, name: ModelName, missing: Err, shown: str) -> ModelRecord:
    record = find_record(services, name)
    if record is None:
        raise missing(name=shown)
    return record


def embed_inputs(value: Any) -> list[str]:
    """Ollama's `input`: a string, a list of strings, or nothing; `""` and `[]` mean "just load"."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise Err.INVALID_INPUT_TYPE()


def parse_embed_model(text: str) -> ModelName:
    return parse_model(text, empty=Err.MODEL_EMPTY_NOT_FOUND, invalid=Err.INVALID_MODEL_NAME)


async def embed(request: Request) -> Response:
    started = time.perf_counter()
    services = services_of(request)
    try:
        fields = await read_fields(request, "EmbedRequest")
        model_text = fields.string("model")
        truncate = fields.boolean("truncate")
        dimensions = fields.integer("dimensions")
        keep_alive = fields.keep_alive()
        options = fields.options()
        # Ollama's order: the name's grammar, then the input's type, then whether the model is installed.
        name = parse_embed_model(model_text)
        texts = embed_inputs(fields.raw("input"))
        record = installed(services, name, Err.MODEL_NOT_FOUND_PULL, model_text)
        limit = context_limit(record, check_options(options).get("num_ctx", 0))
        work = embed_texts(services, record, texts, keep_alive=keep_alive, truncate=truncate is not False, limit=limit)
        result = await unless_disconnected(request, work)
        if not texts:
            return OllamaJSON({"model": model_text, "embeddings": []})
        vectors = shorten(result.vectors, dimensions)
        if not all_finite(vectors):
            raise Err.NAN_OUTPUT()
    except ApiError as error:
        return ollama_error(error)
    body: dict[str, Any] = {"model": model_text, "embeddings": vectors}
    body["total_duration"] = int((time.perf_counter() - started) * 1e9)
    if result.load_seconds > 0:
        body["load_duration"] = int(result.load_seconds * 1e9)
    if result.token_count:
        body["prompt_eval_count"] = result.token_count
    return OllamaJSON(body)


async def embeddings(request: Request) -> Response:
    """The legacy endpoint: one prompt, raw (not normalized) float64 values, `model is required` for bad names.

    Over-long prompts are truncated to the context, as sentence-transformers and older Ollama runners did;
    Ollama's current release answers them with a 500 instead.
    """
    services = services_of(request)
    try:
        fields = await read_fields(request, "EmbeddingRequest")
        model_text = fields.string("model")
        prompt = fields.string("prompt")
        keep_alive = fields.keep_alive()
        options = check_options(fields.options())
        name = parse_model(model_text, empty=Err.MODEL_REQUIRED, invalid=Err.MODEL_REQUIRED)
        record = installed(services, name, Err.MODEL_NOT_FOUND_PULL, model_text)
        texts = [prompt] if prompt else []
        limit = context_limit(record, options.get("num_ctx", 0))
        work = embed_texts(services, record, texts, keep_alive=keep_alive, truncate=True, limit=limit)
        result = await unless_disconnected(request, work)
        if not texts:
            return OllamaJSON({"embedding": []})
        if not all_finite(result.vectors):
            raise Err.NAN_OUTPUT()
    except ApiError as error:
        return ollama_error(error)
    return OllamaJSON({"embedding": result.vectors[0].astype(np.float64)})


def name_field(fields: Fields) -> str:
    """Old ollama-python and ollama-js send `name` where current clients send `model`."""
    return fields.string("model") or fields.string("name")


def named_model(services: Services, fields: Fields) -> ModelRecord:
    """/api/show and /api/delete: `model is required`, `name "X" is invalid`, `model 'X:latest' not found`."""
    name = parse_model(name_field(fields), empty=Err.MODEL_REQUIRED, invalid=Err.NAME_INVALID)
    return installed(services, name, Err.MODEL_NOT_FOUND_QUOTED, name.display)


async def tags(request: Request) -> Response:
    if request.method == "HEAD":
        return OllamaJSON(None)
    records = services_of(request).store.list()
    return OllamaJSON({"models": [views.tag_item(r) for r in records]})


async def show(request: Request) -> Response:
    services = services_of(request)
    try:
        record = named_model(services, await read_fields(request, "ShowRequest"))
    except ApiError as error:
        return ollama_error(error)
    return OllamaJSON(views.show(record))


async def ps(request: Request) -> Response:
    services = services_of(request)
    on_gpu = services.engine.device.is_gpu
    return OllamaJSON({"models": [views.ps_item(r, on_gpu) for r in services.residency.running()]})


async def delete(request: Request) -> Response:
    services = services_of(request)
    try:
        record = named_model(services, await read_fields(request, "DeleteRequest"))
    except ApiError as error:
        return ollama_error(error)
    await services.residency.unload_record(record)
    services.store.delete(record)
    return empty_ok()


async def copy(request: Request) -> Response:
    services = services_of(request)
    try:
        fields = await read_fields(request, "CopyRequest")
        source_text, destination_text = fields.string("source"), fields.string("destination")
        source = parse_model(source_text, empty=Err.SOURCE_INVALID, invalid=Err.SOURCE_INVALID)
        destination = parse_model(destination_text, empty=Err.DESTINATION_INVALID, invalid=Err.DESTINATION_INVALID)
        record = installed(services, source, Err.MODEL_NOT_FOUND, source_text)
    except ApiError as error:
        return ollama_error(error)
    services.store.copy(record, destination)
    return empty_ok()


async def version(request: Request) -> Response:
    return OllamaJSON({"version": OLLAMA_VERSION})


async def root(request: Request) -> Response:
    return PlainTextResponse("Ollama is running")


def get_only(path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> Route:
    """A GET route without the HEAD that Starlette adds by itself; Ollama answers HEAD there with 405."""
    route = Route(path, endpoint, methods=["GET"])
    assert route.methods is not None
    route.methods.discard("HEAD")
    return route


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
