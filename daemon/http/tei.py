"""TEI's sparse embedding route, so TEI's clients get bge-m3's and SPLADE's sparse vectors as TEI gives SPLADE's.

`POST /embed_sparse` `{"inputs", "truncate"?, "model"?}` -> `[[{"index", "value"}, ...], ...]`. TEI serves one
model; `model` is ovembed's addition, and without it the store's only model with sparse vectors answers. As
TEI, truncation is off unless asked for. (TEI's /rerank is in rerank.py, with the other rerank shapes.)
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from daemon.http.disconnect import cancelled_on_disconnect
from daemon.http.errors import Err
from daemon.http.lookup import installed, only_model, parse_embed_model
from daemon.http.request import read_fields, required_texts
from daemon.http.responses import PlainJSON
from daemon.http.state import note_work, runtime_of, store_of
from daemon.http.vectors import tei_sparse
from daemon.inference.embed import EmbedOptions
from modelstore.spec import EMBED, SPARSE


async def embed_sparse(request: Request) -> Response:
    fields = await read_fields(request, "EmbedSparseRequest")
    model_text = fields.string("model")
    texts = required_texts(fields.raw("inputs"), Err.INPUTS_EMPTY)
    truncate = fields.boolean("truncate") is True
    store = store_of(request)
    if model_text:
        record = installed(store, parse_embed_model(model_text), Err.MODEL_NOT_FOUND_PULL, model_text)
    else:
        sparse = [r for r in store.list() if r.spec.task == EMBED and SPARSE in r.spec.outputs]
        record = only_model(sparse, Err.NO_SPARSE_MODEL, Err.SPARSE_UNNAMED)
    async with cancelled_on_disconnect(request):
        result = await runtime_of(request).embed(
            record, texts, EmbedOptions(truncate=truncate, extras=frozenset({SPARSE}))
        )
    note_work(request, len(texts), result.token_count)
    return PlainJSON([tei_sparse(vector) for vector in result.sparse])


ROUTES = [Route("/embed_sparse", embed_sparse, methods=["POST"])]
