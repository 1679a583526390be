"""The continuous batcher: every request's inputs meet here and leave as well-shaped batches.

Each loaded model has one lane (owned by its resident entry in residency.py). The inputs of all requests
for the model (texts to embed, a reranker's (query, document) pairs) wait in the lane's pool, bucketed by
token length. Each of the model's inference slots (OpenVINO's optimal number of requests) takes a batch the
moment it is free:
- the batch is anchored on the next request in round-robin order, so a 5,000-text job and a one-text
  query take turns and the small one waits a batch or two, not the whole job;
- it is filled with inputs of the nearest lengths from any request, under a token budget and a cap on
  padding, so little compute goes to padding.

An input's row does not depend on its neighbours: padding is masked, pooling skips it, and
normalization happens per vector afterwards.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daemon.inference.engine import LoadedModel, Rows
from daemon.inference.errors import ContextTooSmall, InferenceFailed, InputTooLong, MultivectorTooLarge
from daemon.inference.tokenize import TokenizedText
from daemon.metrics import BATCH_PADDING, BATCH_TEXTS, INFERENCE_SECONDS
from modelstore.convert import openvino_reason
from modelstore.network_io import SparseVector
from modelstore.spec import DENSE, EMBED, MULTIVECTOR, SPARSE

log = logging.getLogger(__name__)

# Padding may take at most this share of a batch's tokens before a nearer-length batch is preferred;
# scripts/bench measured 0.1 at 6-10% more throughput than 0.3 on medium texts.
MAX_PADDING_SHARE = 0.1
# Below this many characters, tokenizing on the event loop costs less than handing it to a thread.
INLINE_TOKENIZE_CHARS = 4096


@dataclass(frozen=True)
class BatchLimits:
    """How large a batch may grow: padded tokens and texts; and how many bytes of float32 token vectors one
    request may ask for, so an answer of multi-vectors stays within memory (OVEMBED_MAX_MULTIVECTOR_MB)."""

    max_tokens: int
    max_texts: int
    max_multivector_bytes: int = 64 << 20


@dataclass(frozen=True)
class Pooled:
    """An embedding model's output: each text's pooled vector (after its Dense layers, not normalized; none for
    a model without dense vectors), in input order, and each text's tokens that went through the network (the
    vector cache keeps them with it); with each text's sparse vector and token vectors where asked."""

    vectors: np.ndarray
    lengths: list[int]
    sparse: list[SparseVector] | None = None
    multivector: list[np.ndarray] | None = None

    @property
    def token_count(self) -> int:
        return sum(self.lengths)


@dataclass(frozen=True)
class Logits:
    """A reranker's output: one logit per (query, document) pair in input order, and the tokens it cost."""

    logits: np.ndarray
    token_count: int


@dataclass(eq=False)
class Job:
    """One request's inputs; finished when every input has its row of the network's output, and the outputs
    it asked for beside it (`wanted`: sparse, multivector)."""

    inputs: list[TokenizedText]
    future: asyncio.Future[Job]
    rows: np.ndarray
    wanted: frozenset[str] = frozenset()
    remaining: int = 0
    cancelled: bool = False
    sparse: list[SparseVector | None] = field(default_factory=list)
    multivector: list[np.ndarray | None] = field(default_factory=list)

    def deliver(self, index: int, rows: Rows, position: int) -> None:
        """Input `index` of this job is row `position` of a batch's `rows`."""
        if self.future.done():
            return
        if self.rows.shape[1]:
            self.rows[index] = rows.rows[position]
        if rows.extras is not None and self.wanted:
            self.sparse[index] = rows.extras.sparse[position]
            self.multivector[index] = rows.extras.multivector[position]
        self.remaining -= 1
        if self.remaining == 0:
            self.future.set_result(self)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


@dataclass(eq=False)
class _Item:
    job: Job
    index: int
    taken: bool = False

    @property
    def length(self) -> int:
        return len(self.job.inputs[self.index])

    @property
    def live(self) -> bool:
        return not self.taken and not self.job.cancelled


class Pool:
    """Waiting inputs of one model: by length for grouping, by request for round-robin fairness."""

    def __init__(self) -> None:
        self._buckets: dict[int, deque[_Item]] = {}
        self._lengths: list[int] = []
        self._jobs: deque[tuple[Job, deque[_Item]]] = deque()

    def add(self, job: Job) -> None:
        items = [_Item(job, i) for i in sorted(range(len(job.inputs)), key=lambda i: len(job.inputs[i]))]
        for item in items:
            bucket = self._buckets.get(item.length)
            if bucket is None:
                bucket = self._buckets[item.length] = deque()
                bisect.insort(self._lengths, item.length)
            bucket.append(item)
        self._jobs.append((job, deque(items)))

    def _next_anchor(self) -> _Item | None:
        """The next live input of the next request in turn; requests with nothing left leave the rotation."""
        while self._jobs:
            _, items = self._jobs[0]
            while items and not items[0].live:
                items.popleft()
            if not items:
                self._jobs.popleft()
                continue
            self._jobs.rotate(-1)
            return items.popleft()
        return None

    def _peek(self, length: int) -> _Item | None:
        bucket = self._buckets.get(length)
        while bucket and not bucket[0].live:
            bucket.popleft()
        return bucket[0] if bucket else None

    def _lengths_nearest(self, width: int) -> Iterator[int]:
        """Waiting lengths in order of distance from `width`; on a tie the shorter, which adds no padding."""
        lengths = list(self._lengths)
        above = bisect.bisect_left(lengths, width)
        below = above - 1
        while below >= 0 or above < len(lengths):
            if above < len(lengths) and (below < 0 or lengths[above] - width < width - lengths[below]):
                yield lengths[above]
                above += 1
            else:
                yield lengths[below]
                below -= 1

    def take(self, limits: BatchLimits) -> list[_Item]:
        """A batch around the next anchor, widened to the nearest lengths while it stays within budget."""
        anchor = self._next_anchor()
        if anchor is None:
            return []
        anchor.taken = True
        batch = [anchor]
        width = real = anchor.length
        for length in self._lengths_nearest(width):
            while len(batch) < limits.max_texts:
                new_width = max(width, length)
                count = len(batch) + 1
                if count * new_width > limits.max_tokens:
                    break
                if real + length < (1.0 - MAX_PADDING_SHARE) * count * new_width:
                    break
                item = self._peek(length)
                if item is None:
                    break
                item.taken = True
                batch.append(item)
                width, real = new_width, real + length
            if len(batch) >= limits.max_texts:
                break
        self._prune()
        return batch

    def _prune(self) -> None:
        for length in [n for n in self._lengths if self._peek(n) is None]:
            del self._buckets[length]
            self._lengths.remove(length)

    def __bool__(self) -> bool:
        return bool(self._jobs)


def _filled(outputs: list[Any], asked: bool) -> list[Any] | None:
    """A job's outputs of one kind, when its request asked for that kind (every input then has one)."""
    return list(outputs) if asked else None


def _token_count(tokenized: list[TokenizedText]) -> int:
    return sum(len(t) for t in tokenized)


async def _tokenized(chars: int, tokenize: Callable[..., list[TokenizedText]], *args: Any) -> list[TokenizedText]:
    """Tokenize on the event loop when it is quick, on a thread when it is not."""
    try:
        if chars <= INLINE_TOKENIZE_CHARS:
            return tokenize(*args)
        return await asyncio.to_thread(tokenize, *args)
    except (InputTooLong, ContextTooSmall):
        raise
    except Exception as exc:  # the tokenizers library raises its own Exception type
        raise InferenceFailed(f"tokenizing failed: {exc}") from exc


class Lane:
    """One loaded model's pool and its inference slots, each a task that keeps one request in flight.

    Made on the event loop when the model loads, closed when it unloads; requests reach it only through
    the model's resident entry.
    """

    def __init__(self, model: LoadedModel, limits: BatchLimits) -> None:
        self.model = model
        self.limits = limits
        self.pool = Pool()
        self._wake = asyncio.Event()
        # The rows a job keeps: none for a model without dense vectors (SPLADE's would be a vocabulary wide).
        self.dense_width = model.spec.dimension if DENSE in model.spec.outputs or model.spec.task != EMBED else 0
        self._executor = ThreadPoolExecutor(max_workers=model.slots, thread_name_prefix="ovembed-infer")
        self._workers = [asyncio.create_task(self._work(slot)) for slot in range(model.slots)]

    async def embed(
        self,
        texts: Sequence[str],
        limit: int,
        truncate: bool,
        wanted: frozenset[str] = frozenset(),
        queries: bool = False,
    ) -> Pooled:
        """Pooled vectors for `texts` in order, with the outputs `wanted` beside them (sparse, multivector);
        `queries` marks a ColBERT model's texts as queries. Cancelling the caller drops its waiting texts.

        Raises InputTooLong for an over-long text when truncation is off, ContextTooSmall for a limit
        with no room, MultivectorTooLarge for token vectors over their bound, and InferenceFailed when OpenVINO
        fails a batch.
        """
        chars = sum(len(t) for t in texts)
        tokenized = await _tokenized(chars, self.model.tokens.texts, texts, limit, truncate, queries)
        if MULTIVECTOR in wanted:
            size = _token_count(tokenized) * self.model.multivector_width * 4
            if size > self.limits.max_multivector_bytes:
                raise MultivectorTooLarge(size, self.limits.max_multivector_bytes)
        job = await self._run(tokenized, wanted)
        lengths = [len(t) for t in tokenized]
        if not wanted:
            return Pooled(job.rows, lengths)
        return Pooled(
            job.rows, lengths, _filled(job.sparse, SPARSE in wanted), _filled(job.multivector, MULTIVECTOR in wanted)
        )

    async def rerank(self, query: str, documents: Sequence[str], limit: int, truncate: bool) -> Logits:
        """A reranker's logit for each (query, document) pair, batched with every other request's inputs."""
        chars = len(query) * len(documents) + sum(len(d) for d in documents)
        tokenized = await _tokenized(chars, self.model.tokens.pairs, query, documents, limit, truncate)
        return Logits((await self._run(tokenized)).rows[:, 0], _token_count(tokenized))

    async def _run(self, tokenized: list[TokenizedText], wanted: frozenset[str] = frozenset()) -> Job:
        """The job of `tokenized`, once every batch holding one of its inputs has run: the network's rows in
        order and the outputs `wanted` beside them."""
        count = len(tokenized)
        job = Job(
            inputs=tokenized,
            future=asyncio.get_running_loop().create_future(),
            rows=np.empty((count, self.dense_width), dtype=np.float32),
            wanted=wanted,
            remaining=count,
            sparse=[None] * count if wanted else [],
            multivector=[None] * count if wanted else [],
        )
        self.pool.add(job)
        self._wake.set()
        try:
            return await job.future
        finally:
            job.cancelled = True
            # Cancelling this task cancels the future it awaits, so a cancelled request has a done future.
            if job.remaining and (job.future.cancelled() or not job.future.done()):
                log.info("dropped %d of %d inputs of a cancelled request", job.remaining, len(tokenized))

    async def _work(self, slot: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self.pool.take(self.limits)
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            inputs = [item.job.inputs[item.index] for item in batch]
            wanted = [item.job.wanted for item in batch]
            BATCH_TEXTS.observe(len(inputs))
            BATCH_PADDING.observe(max(map(len, inputs)) * len(inputs) - sum(map(len, inputs)))
            try:
                with INFERENCE_SECONDS.time():
                    rows = await loop.run_in_executor(self._executor, self.model.infer_outputs, slot, inputs, wanted)
            except Exception as exc:  # a failed batch fails its requests, never the lane
                failure = InferenceFailed(openvino_reason(exc))
                for item in batch:
                    item.job.fail(failure)
                continue
            for position, item in enumerate(batch):
                item.job.deliver(item.index, rows, position)

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._executor.shutdown(wait=False, cancel_futures=True)
