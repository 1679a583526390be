"""The reranking step: a query and its candidate documents in, the documents' relevance scores out, best first.

Every rerank route comes through here, as every embedding route comes through embed.py: the context limit,
truncation, the score's activation, the order and `top_n` are done once. The pairs go through the model's
lane, so they are batched with every other request's, embeddings and reranks alike share the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from daemon.inference.embed import context_limit
from daemon.inference.errors import InferenceFailed, WrongTask
from daemon.inference.gate import Gate
from daemon.metrics import EMBEDDED_TOKENS, RERANKED_PAIRS
from modelstore.spec import RERANK
from modelstore.store import ModelRecord


@dataclass(frozen=True)
class RerankOptions:
    """What a request asks of the reranking step, already validated by the edge."""

    keep_alive: float | None = None
    truncate: bool = True
    num_ctx: int = 0
    top_n: int = 0  # how many of the best to return; 0 returns all
    raw_scores: bool = False  # the logits, without the model's activation (TEI's raw_scores)


@dataclass(frozen=True)
class Ranked:
    index: int  # the document's place in the request
    score: float


@dataclass(frozen=True)
class Reranked:
    """The documents best first (ties in request order), the tokens they cost, the time spent loading."""

    results: list[Ranked]
    token_count: int
    load_seconds: float


def scores_of(logits: np.ndarray, activation: str, raw: bool) -> np.ndarray:
    """CrossEncoder's scores: sigmoid of the logit, unless the model says identity or the request asks raw."""
    logits = logits.astype(np.float64)
    if not np.isfinite(logits).all():
        raise InferenceFailed("the network produced NaN or infinite scores")
    return logits if raw or activation == "identity" else 1.0 / (1.0 + np.exp(-logits))


class Reranker:
    """The gate, the model's lane and the ordering, in the order a request meets them."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def rerank(
        self, record: ModelRecord, query: str, documents: Sequence[str], options: RerankOptions
    ) -> Reranked:
        """The documents by relevance to `query`; an empty list only loads the model.

        Raises WrongTask for an embedding model, Stopping when the shutdown bound ends it.
        """
        if record.spec.task != RERANK:
            raise WrongTask(record.name.display, "rerank")
        return await self.gate.run(self._rerank(record, query, documents, options))

    async def _rerank(
        self, record: ModelRecord, query: str, documents: Sequence[str], options: RerankOptions
    ) -> Reranked:
        limit = context_limit(record, options.num_ctx)
        async with self.gate.lane(record, options.keep_alive, len(documents)) as (lane, load_seconds):
            if not documents:
                return Reranked([], 0, load_seconds)
            result = await lane.rerank(query, documents, limit, options.truncate)
        RERANKED_PAIRS.inc(len(documents))
        EMBEDDED_TOKENS.inc(result.token_count)
        scores = scores_of(result.vectors[:, 0], record.spec.score_activation, options.raw_scores)
        order = sorted(range(len(documents)), key=lambda i: -scores[i])  # stable: ties keep request order
        if options.top_n > 0:
            order = order[: options.top_n]
        return Reranked([Ranked(i, float(scores[i])) for i in order], result.token_count, load_seconds)
