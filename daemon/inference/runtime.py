"""The one front every embedding and rerank request calls, as TEI's `Infer` and Ollama's scheduler are one.

A request meets, in this order: the shutdown bound, its input count (OVEMBED_MAX_INPUTS), a place in
OLLAMA_MAX_QUEUE (held from before its model loads, as Ollama's scheduler counts pending requests), its model's
lane through residency (an embedding's texts through the vector cache first: only those it does not hold reach
the lane), and its task's finishing step. Routes call one method per task and nothing else below the edge;
preload is a `load`, not an empty request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import numpy as np

from daemon.inference.batcher import Lane
from daemon.inference.embed import Embedded, EmbedOptions, finish
from daemon.inference.engine import Engine
from daemon.inference.errors import NoDenseOutput, QueueFull, Stopping, TooManyInputs, WrongTask
from daemon.inference.health import Health, Preloading
from daemon.inference.rerank import Reranked, RerankOptions, rank
from daemon.inference.residency import Residency, Resident
from daemon.inference.shutdown import Shutdown
from daemon.inference.vector_cache import VectorCache
from daemon.metrics import (
    EMBEDDED_OUTPUTS,
    EMBEDDED_TEXTS,
    EMBEDDED_TOKENS,
    RERANKED_PAIRS,
    RERANKED_TOKENS,
    WAITING_REQUESTS,
)
from modelstore.spec import DENSE, EMBED, OUTPUTS, RERANK
from modelstore.store import ModelRecord, ModelStore

_STOPPED = "the shutdown bound passed before the request was done"


def _check_outputs(record: ModelRecord, extras: frozenset[str], texts: Sequence[str]) -> None:
    """Raises WrongTask for a model that does not embed or lacks an output asked for, NoDenseOutput for a plain
    request with texts to one without a dense vector (without texts, it loads or unloads the model)."""
    spec = record.spec
    if spec.task != EMBED:
        raise WrongTask(record.name.display, "embedding")
    for output in OUTPUTS:
        if output in extras and output not in spec.outputs:
            raise WrongTask(record.name.display, output)
    if texts and not extras and DENSE not in spec.outputs:
        raise NoDenseOutput(record.name.display, spec.outputs)


def _limit(record: ModelRecord, num_ctx: int) -> int:
    """The model's context, lowered by a positive `num_ctx` option as Ollama does, never raised."""
    limit = record.spec.context_length
    return min(limit, num_ctx) if num_ctx > 0 else limit


class Runtime:
    """Inference for the whole daemon: the models loaded, the requests admitted, the bound that ends them."""

    def __init__(
        self,
        engine: Engine,
        store: ModelStore,
        residency: Residency,
        max_inputs: int,
        max_queue: int,
        cache_bytes: int = 0,
        shutdown: Shutdown | None = None,
        preload: tuple[str, ...] = (),
    ):
        self.engine = engine
        self.store = store
        self.residency = residency
        self.max_inputs = max_inputs
        self.max_queue = max_queue
        self.cache = VectorCache(cache_bytes)  # shared by every embedding route and request; 0 is off
        self._waiting = 0
        self._running: set[asyncio.Task[object]] = set()
        self._ended: set[asyncio.Task[object]] = set()  # running when the bound passed: answered Stopping
        self.shutdown = shutdown or Shutdown()
        self.preloading = Preloading(preload)  # filled in by the preload as it loads OVEMBED_PRELOAD's models

    async def embed(self, record: ModelRecord, texts: Sequence[str], options: EmbedOptions) -> Embedded:
        """Vectors for `texts`, with the outputs `options.extras` asks beside them; an empty list only loads the
        model, Ollama's preload idiom.

        Texts the vector cache holds are answered from it; the rest go to the lane, each distinct text once.
        A request answered from the cache alone still takes its place in the queue and loads its model: the
        key needs the precision the loaded model computes in, and keep_alive counts from every request. The
        cache holds dense vectors only: a request that asks for more sends all its texts to the lane.

        Raises WrongTask for a model that does not embed or lacks an output asked for, NoDenseOutput for a plain
        request to a model without a dense vector, and what admission, loading and the lane raise.
        """
        _check_outputs(record, options.extras, texts)
        pooled = None
        async with self._admitted(record, options.keep_alive, len(texts)) as (lane, load_seconds):
            if not texts:
                return Embedded(np.zeros((0, lane.dense_width), dtype=np.float32), 0, load_seconds)
            limit = _limit(record, options.num_ctx)
            if options.extras:
                pooled = await lane.embed(texts, limit, options.truncate, options.extras, options.queries)
                EMBEDDED_TOKENS.inc(pooled.token_count)
                vectors, token_count = pooled.vectors, pooled.token_count
            else:
                vectors, token_count = await self._through_cache(record, lane, texts, limit, options.truncate)
        EMBEDDED_TEXTS.inc(len(texts))
        for output in options.extras:
            EMBEDDED_OUTPUTS.labels(output).inc(len(texts))
        extras = (pooled.sparse or [], pooled.multivector or []) if pooled else ([], [])
        return Embedded(finish(vectors, options), token_count, load_seconds, *extras)

    async def _through_cache(
        self, record: ModelRecord, lane: Lane, texts: Sequence[str], limit: int, truncate: bool
    ) -> tuple[np.ndarray, int]:
        """Dense vectors for `texts` and the tokens they cost, only the cache's misses run, each once."""
        lookup = self.cache.look_up(record.digest, lane.model.precision, limit, truncate, texts)
        if lookup.missing:
            pooled = await lane.embed(lookup.missing, limit, truncate)
            self.cache.add(lookup, pooled.vectors, pooled.lengths, lane.model.precision)
            EMBEDDED_TOKENS.inc(pooled.token_count)
        return lookup.answer()

    async def rerank(
        self, record: ModelRecord, query: str, documents: Sequence[str], options: RerankOptions
    ) -> Reranked:
        """The documents by relevance to `query`, best first; an empty list only loads the model.

        Raises WrongTask for a model that does not rerank, and what admission, loading and the lane raise.
        """
        if record.spec.task != RERANK:
            raise WrongTask(record.name.display, "rerank")
        async with self._admitted(record, options.keep_alive, len(documents)) as (lane, load_seconds):
            if not documents:
                return Reranked([], 0, load_seconds)
            logits = await lane.rerank(query, documents, _limit(record, options.num_ctx), options.truncate)
        RERANKED_PAIRS.inc(len(documents))
        RERANKED_TOKENS.inc(logits.token_count)
        ranked = rank(logits.logits, record.spec.score_activation, options)
        return Reranked(ranked, logits.token_count, load_seconds)

    async def load(self, record: ModelRecord, keep_alive: float | None) -> float:
        """Load the model (OVEMBED_PRELOAD, or a request with no inputs) and set its keep_alive; the seconds
        spent loading."""
        async with self._admitted(record, keep_alive, 0) as (_, load_seconds):
            return load_seconds

    @contextlib.asynccontextmanager
    async def _admitted(
        self, record: ModelRecord, keep_alive: float | None, count: int
    ) -> AsyncIterator[tuple[Lane, float]]:
        """The model's lane for `count` inputs and the seconds spent loading it, while the request holds its
        place in the queue. Raises Stopping, TooManyInputs, QueueFull, and what loading raises."""
        if self.shutdown.bound_passed:  # a request that reached here after the bound (its body was still arriving)
            raise Stopping(_STOPPED)
        if count > self.max_inputs:
            raise TooManyInputs(count, self.max_inputs)
        if self._waiting >= self.max_queue:
            raise QueueFull(f"{self._waiting} requests are already waiting")
        task = asyncio.current_task()
        assert task is not None
        self._waiting += 1
        WAITING_REQUESTS.inc()
        self._running.add(task)
        try:
            async with self.residency.use(record, keep_alive) as used:
                yield used
        except asyncio.CancelledError:
            if task not in self._ended:
                raise  # the client left, or the loop is closing: not ours to answer
            task.uncancel()
            raise Stopping(_STOPPED) from None
        finally:
            self._waiting -= 1
            WAITING_REQUESTS.dec()
            self._running.discard(task)
            self._ended.discard(task)

    def end_running(self) -> None:
        """The shutdown bound has passed: end every request still running, and refuse any that comes after."""
        self.shutdown.bound_passed = True
        for task in self._running:
            self._ended.add(task)
            task.cancel()

    def running(self) -> list[Resident]:
        """Loaded models, the longest time left first, as Ollama's /api/ps sorts them."""
        return self.residency.running()

    def health(self) -> Health:
        """Whether the daemon can serve now, from memory alone: no inference, no disk."""
        residents = self.residency.running()
        return Health(
            preload=self.preloading.names,
            preloaded=self.preloading.done,
            loading=self.preloading.now,
            preload_failed=tuple(self.preloading.failed),
            draining=self.shutdown.begun,
            stuck=tuple(r.record.name.display for r in residents if r.lane.stuck),
            loaded=tuple(r.record.name.display for r in residents),
        )

    def precision_of(self, record: ModelRecord) -> str:
        return self.engine.precision_of(record)

    @property
    def on_gpu(self) -> bool:
        return self.engine.device.is_gpu

    def retire(self, record: ModelRecord) -> None:
        """After a delete: unload the name (a busy model after its last request), and drop the compile cache of
        a model no name holds any more. Its cached vectors are left to age out: their key holds its digest, which
        no request can reach again."""
        self.residency.retire(record)
        self.engine.prune_cache({r.digest for r in self.store.list()})

    async def close(self) -> None:
        await self.residency.close()
        self.cache.clear()
