"""The embedding step: from a request's texts to the vectors it is answered with.

Every route that embeds comes through here, so the context limit, truncation, `dimensions`, normalization
and the non-finite check are done once, as TEI does them in its core, not in each endpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from daemon.inference.errors import NonFiniteEmbedding, WrongTask
from daemon.inference.gate import Gate
from daemon.metrics import EMBEDDED_TEXTS, EMBEDDED_TOKENS
from modelstore.spec import EMBED
from modelstore.store import ModelRecord

# Ollama divides by max(norm, 1e-12), so an all-zero vector stays zero instead of turning into NaN.
_MIN_NORM = 1e-12


@dataclass(frozen=True)
class EmbedOptions:
    """What a request asks of the embedding step, already validated by the edge."""

    keep_alive: float | None = None  # seconds, math.inf for forever, None keeps the model's current one
    truncate: bool = True
    num_ctx: int = 0  # a positive value lowers the model's context, never raises it
    dimensions: int = 0  # Matryoshka length; values outside 0 < N < length are ignored, as Ollama ignores them
    normalize: bool = True  # /api/embeddings answers the raw pooled vector


@dataclass(frozen=True)
class Embedded:
    """Float32 vectors in input order, the tokens they cost, and the time spent loading the model."""

    vectors: np.ndarray
    token_count: int
    load_seconds: float


def context_limit(record: ModelRecord, num_ctx: int) -> int:
    """The model's context, lowered by a positive `num_ctx` option as Ollama does, never raised."""
    limit = record.spec.context_length
    return min(limit, num_ctx) if num_ctx > 0 else limit


def normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, _MIN_NORM)).astype(np.float32)


def finish(vectors: np.ndarray, options: EmbedOptions) -> np.ndarray:
    """Ollama's post-processing: normalize, keep the first `dimensions`, normalize again; refuse NaN."""
    if options.normalize:
        vectors = normalize(vectors)
        if 0 < options.dimensions < vectors.shape[1]:
            vectors = normalize(vectors[:, : options.dimensions])
    if not np.isfinite(vectors).all():
        raise NonFiniteEmbedding("the network produced NaN or infinite values")
    return vectors


class Embedder:
    """The gate, the model's lane and post-processing, in the order a request meets them."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def embed(self, record: ModelRecord, texts: Sequence[str], options: EmbedOptions) -> Embedded:
        """Vectors for `texts`; an empty list only loads the model, which is Ollama's preload idiom.

        Raises WrongTask for a reranker, Stopping when the shutdown bound ends it.
        """
        if record.spec.task != EMBED:
            raise WrongTask(record.name.display, "embedding")
        return await self.gate.run(self._embed(record, texts, options))

    async def _embed(self, record: ModelRecord, texts: Sequence[str], options: EmbedOptions) -> Embedded:
        limit = context_limit(record, options.num_ctx)
        async with self.gate.lane(record, options.keep_alive, len(texts)) as (lane, load_seconds):
            if not texts:
                return Embedded(np.zeros((0, record.spec.dimension), dtype=np.float32), 0, load_seconds)
            result = await lane.embed(texts, limit, options.truncate)
        EMBEDDED_TEXTS.inc(len(texts))
        EMBEDDED_TOKENS.inc(result.token_count)
        return Embedded(finish(result.vectors, options), result.token_count, load_seconds)
