"""What an embedding request asks and how its vectors are finished, once for every route that embeds.

Normalization, `dimensions` and the non-finite check are done here, as TEI does them in its core, not in
each endpoint; the engine hands over pooled vectors untouched, because /api/embeddings answers them raw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from daemon.inference.errors import NonFiniteEmbedding
from modelstore.network_io import SparseVector

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
    extras: frozenset[str] = frozenset()  # outputs asked beside the dense vectors: sparse, multivector
    queries: bool = False  # the texts are a ColBERT model's queries, not documents (no other model tells them apart)


@dataclass(frozen=True)
class Embedded:
    """Float32 vectors in input order (none for a model without dense output), the tokens they cost, and the
    time spent loading the model; each input's sparse vector and L2-normalized token vectors where asked."""

    vectors: np.ndarray
    token_count: int
    load_seconds: float
    sparse: list[SparseVector] = field(default_factory=list)
    multivector: list[np.ndarray] = field(default_factory=list)


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
