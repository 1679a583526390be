"""Reranking in the three shapes clients send: Ollama-style /api/rerank, Cohere's and Jina's /v1 and /v2
/rerank (Open WebUI's external reranker, the cohere SDK, LangChain and LlamaIndex), and TEI's /rerank.

Each parses its shape and calls the reranking step (daemon/inference/rerank.py); errors are raised, and
daemon/http/errors.py answers them in the shape of the path.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from daemon.http import views
from daemon.http.disconnect import cancelled_on_disconnect
from daemon.http.errors import Err
from daemon.http.lookup import installed, only_model, parse_embed_model
from daemon.http.request import Fields, check_options, read_fields
from daemon.http.responses import OllamaJSON, PlainJSON
from daemon.http.state import note_work, runtime_of, store_of
from daemon.inference.rerank import Reranked, RerankOptions
from modelstore.spec import RERANK
from modelstore.store import ModelRecord


def _documents(value: Any, field: str, *, objects: bool) -> list[str]:
    """A list of strings; with `objects`, Cohere's and Jina's `{"text": ...}` too."""
    if value is None:
        return []
    if isinstance(value, list):
        texts = [_text(v) if objects else v for v in value]
        if all(isinstance(t, str) for t in texts):
            return texts
    kinds = 'strings or {"text": ...} objects' if objects else "strings"
    raise Err.DOCUMENTS_TYPE(field=field, kinds=kinds)


def _text(value: Any) -> Any:
    return value.get("text") if isinstance(value, dict) else value


def _top_n(fields: Fields, name: str = "top_n") -> int:
    top_n = fields.integer(name)
    if top_n < 0:
        raise Err.TOP_N_NEGATIVE(field=name, value=top_n)
    return top_n


def _query(fields: Fields, documents: list[str]) -> str:
    query = fields.string("query")
    if documents and not query:
        raise Err.QUERY_REQUIRED()
    return query


async def _rerank(
    request: Request, record: ModelRecord, query: str, documents: list[str], options: RerankOptions
) -> Reranked:
    async with cancelled_on_disconnect(request):
        reranked = await runtime_of(request).rerank(record, query, documents, options)
    note_work(request, len(documents), reranked.token_count)
    return reranked


async def ollama_rerank(request: Request) -> Response:
    """`{"model", "query", "documents", "top_n"?, "return_documents"?, "truncate"?, "keep_alive"?, "options"?}`."""
    started = time.perf_counter()
    fields = await read_fields(request, "RerankRequest")
    model_text = fields.string("model")
    name = parse_embed_model(model_text)
    documents = _documents(fields.raw("documents"), "documents", objects=False)
    query = _query(fields, documents)
    options = RerankOptions(
        keep_alive=fields.keep_alive(),
        truncate=fields.boolean("truncate") is not False,
        num_ctx=check_options(fields.options()).get("num_ctx", 0),
        top_n=_top_n(fields),
    )
    with_documents = fields.boolean("return_documents") is True
    record = installed(store_of(request), name, Err.MODEL_NOT_FOUND_PULL, model_text)
    reranked = await _rerank(request, record, query, documents, options)
    results = [
        {"index": r.index, "relevance_score": r.score, **({"document": documents[r.index]} if with_documents else {})}
        for r in reranked.results
    ]
    timings = views.timings(started, reranked.load_seconds, reranked.token_count)
    return OllamaJSON({"model": model_text, "results": results, **timings})


async def cohere_rerank(request: Request) -> Response:
    """Cohere's v1 or v2 shape (the path says which) and Jina's: documents as strings or `{"text"}`,
    `max_tokens_per_doc`, `usage`."""
    version = "1" if request.url.path.startswith("/v1/") else "2"
    fields = await read_fields(request, "RerankRequest")
    model_text = fields.string("model")
    name = parse_embed_model(model_text)
    documents = _documents(fields.raw("documents"), "documents", objects=True)
    query = _query(fields, documents)
    options = RerankOptions(num_ctx=fields.integer("max_tokens_per_doc"), top_n=_top_n(fields))
    with_documents = fields.boolean("return_documents") is True
    record = installed(store_of(request), name, Err.MODEL_NOT_FOUND_PULL, model_text)
    reranked = await _rerank(request, record, query, documents, options)
    results = [
        {
            "index": r.index,
            "relevance_score": r.score,
            **({"document": {"text": documents[r.index]}} if with_documents else {}),
        }
        for r in reranked.results
    ]
    tokens = reranked.token_count
    return PlainJSON(
        {
            "id": str(uuid.uuid4()),
            "model": model_text,
            "results": results,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "meta": {"api_version": {"version": version}, "billed_units": {"search_units": 1}},
        }
    )


async def tei_rerank(request: Request) -> Response:
    """TEI's `{"query", "texts", "raw_scores"?, "return_text"?, "truncate"?}` -> `[{"index", "score", "text"?}]`.

    As TEI, truncation is off unless asked for; `model` is ovembed's addition (TEI serves one model).
    """
    fields = await read_fields(request, "RerankRequest")
    model_text = fields.string("model")
    texts = _documents(fields.raw("texts"), "texts", objects=False)
    query = _query(fields, texts)
    options = RerankOptions(
        truncate=fields.boolean("truncate") is True, raw_scores=fields.boolean("raw_scores") is True
    )
    with_text = fields.boolean("return_text") is True
    if model_text:
        record = installed(store_of(request), parse_embed_model(model_text), Err.MODEL_NOT_FOUND_PULL, model_text)
    else:
        rerankers = [r for r in store_of(request).list() if r.spec.task == RERANK]
        record = only_model(rerankers, Err.NO_RERANKER, Err.RERANKER_UNNAMED)
    reranked = await _rerank(request, record, query, texts, options)
    return PlainJSON(
        [
            {"index": r.index, "score": r.score, **({"text": texts[r.index]} if with_text else {})}
            for r in reranked.results
        ]
    )


ROUTES = [
    Route("/api/rerank", ollama_rerank, methods=["POST"]),
    Route("/v1/rerank", cohere_rerank, methods=["POST"]),
    Route("/v2/rerank", cohere_rerank, methods=["POST"]),
    Route("/rerank", tei_rerank, methods=["POST"]),
]
