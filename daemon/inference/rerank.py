"""What a rerank request asks and how its logits become an answer, once for every rerank route.

The score's activation, the order (best first, ties in request order) and `top_n` are done here; the pairs
themselves go through the model's lane like texts, so embeddings and reranks share the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from daemon.inference.errors import InferenceFailed


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


def rank(logits: np.ndarray, activation: str, options: RerankOptions) -> list[Ranked]:
    """One logit per document in request order -> the documents best first, cut to `top_n`."""
    scores = scores_of(logits, activation, options.raw_scores)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties keep request order
    if options.top_n > 0:
        order = order[: options.top_n]
    return [Ranked(i, float(scores[i])) for i in order]
