"""The one path from a route to vectors: resolve limits, hold a place in the queue and the model, embed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from daemon.engine import ContextTooSmall, InputTooLong
from daemon.errors import Err
from daemon.services import Services
from modelstore.store import ModelRecord


@dataclass(frozen=True)
class Embedded:
    """Raw pooled vectors in input order, the tokens they cost, and the time spent loading."""

    vectors: np.ndarray
    token_count: int
    load_seconds: float


def context_limit(record: ModelRecord, num_ctx: int) -> int:
    """The model's context, lowered by a positive `num_ctx` option as Ollama does, never raised."""
    limit = record.spec.context_length
    return min(limit, num_ctx) if num_ctx > 0 else limit


async def embed_texts(
    services: Services,
    record: ModelRecord,
    texts: Sequence[str],
    *,
    keep_alive: float | None,
    truncate: bool,
    limit: int,
) -> Embedded:
    """Vectors for `texts`; an empty list only loads the model, which is Ollama's preload idiom.

    The request holds its place in the queue from before its model loads, as Ollama's scheduler counts it.
    """
    with services.batcher.admit():
        async with services.residency.use(record, keep_alive) as (model, load_seconds):
            if not texts:
                return Embedded(np.zeros((0, record.spec.dimension), dtype=np.float32), 0, load_seconds)
            try:
                result = await services.batcher.embed(model, texts, limit, truncate)
            except InputTooLong:
                raise Err.INPUT_TOO_LONG() from None
            except ContextTooSmall:
                raise Err.CONTEXT_TOO_SMALL() from None
            except Exception as exc:  # an inference failure is ours, not the caller's
                raise Err.RUNNER_FAILED(detail=f"inference failed: {exc}") from exc
            return Embedded(result.vectors, result.token_count, load_seconds)
