"""The continuous batcher: every request's inputs meet here and leave as well-shaped batches.

Each loaded model has one lane (owned by its resident entry in residency.py). The inputs of all requests
for the model (texts to embed, a reranker's (query, document) pairs) wait in the lane's pool (pool.py), which
hands out batches fair to every request and near-equal in length. Each of the model's inference slots
(OpenVINO's optimal number of requests) takes a batch the moment it is free and delivers each row to its job.

An input's row does not depend on its neighbours: padding is masked, pooling skips it, and
normalization happens per vector afterwards.

A watchdog times every batch: one that runs far past its expected time (STALL_MULTIPLE) is abandoned, its
requests failed with InferenceStalled, the stuck threads' stacks logged, and the model compiled again on fresh
threads while the lane reads as `stuck`; the stuck thread cannot be stopped, so it is left, and what it
returns one day is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from daemon.inference.engine import LoadedModel, Rows
from daemon.inference.errors import (
    ContextTooSmall,
    InferenceFailed,
    InferenceStalled,
    InputTooLong,
    MultivectorTooLarge,
)
from daemon.inference.pool import BatchLimits, Job, Pool, Waiting
from daemon.inference.tokenize import TokenizedText
from daemon.metrics import BATCH_PADDING, BATCH_TEXTS, INFERENCE_SECONDS, INFERENCE_STALLS
from modelstore.convert import openvino_reason
from modelstore.network_io import SparseVector
from modelstore.spec import DENSE, EMBED, MULTIVECTOR, SPARSE

log = logging.getLogger(__name__)

# Below this many characters, tokenizing on the event loop costs less than handing it to a thread.
INLINE_TOKENIZE_CHARS = 4096
# The watchdog abandons a batch that runs STALL_MULTIPLE times longer than the model's slowest batch seen would
# at its size (the slowest seconds per padded token, times its padded tokens), and never before
# OVEMBED_INFERENCE_TIMEOUT. A busy machine (other models' batches, other processes on the cores) slows a batch a
# few times, and a long text's attention costs more per token than a short one's; no sound batch comes near 20x,
# while a hung device or driver never answers. Until one batch of the model has been timed, the deadline is
# STALL_MULTIPLE times the floor: the first inference's one-off start-up (buffers, a GPU's kernels) is unknown;
# so again after the model is compiled anew.
STALL_MULTIPLE = 20
# The threads left stuck in a device by the watchdog: the interpreter would wait for them at exit, forever.
_abandoned: list[threading.Thread] = []


def stuck_threads() -> list[threading.Thread]:
    """Inference threads abandoned in a stuck device that have still not returned."""
    return [thread for thread in _abandoned if thread.is_alive()]


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


def _dropped(name: str, started: float) -> Callable[[asyncio.Future[Rows]], None]:
    """What an abandoned batch's thread gives, if it ever returns: read (so no error goes unretrieved), said,
    and dropped; its requests were answered when it was abandoned."""

    def drop(running: asyncio.Future[Rows]) -> None:
        failed = running.cancelled() or running.exception() is not None
        outcome = "failed" if failed else "finished"
        log.warning(
            "an abandoned batch of %s %s after %.0f s; its result is dropped", name, outcome, time.monotonic() - started
        )

    return drop


class Lane:
    """One loaded model's pool and its inference slots, each a task that keeps one request in flight.

    Made on the event loop when the model loads, closed when it unloads; requests reach it only through
    the model's resident entry. `reload` compiles the model again, after the watchdog abandoned a batch.
    """

    def __init__(
        self, model: LoadedModel, limits: BatchLimits, reload: Callable[[], LoadedModel] | None = None
    ) -> None:
        self.model = model
        self.limits = limits
        self.pool = Pool()
        self._wake = asyncio.Event()
        # The rows a job keeps: none for a model without dense vectors (SPLADE's would be a vocabulary wide).
        self.dense_width = model.spec.dimension if DENSE in model.spec.outputs or model.spec.task != EMBED else 0
        self._reload = reload
        self.stuck = False  # a batch was abandoned; until the model is compiled again and answering
        self._generation = 0  # the model's compiles since the lane was made: a batch of an older one is past
        self._rebuild: asyncio.Task[None] | None = None
        self._seconds_per_token = 0.0  # the slowest batch seen, per padded token: the watchdog's expectation
        self._busy: dict[int, int] = {}  # thread id -> slot, while the thread runs a batch
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
            tokens = max(map(len, inputs)) * len(inputs)
            BATCH_TEXTS.observe(len(inputs))
            BATCH_PADDING.observe(tokens - sum(map(len, inputs)))
            try:
                model = await self._sound_model()
            except Exception as exc:  # compiling again failed: this batch fails, the next one tries again
                _fail(batch, InferenceFailed(openvino_reason(exc)))
                continue
            generation, started = self._generation, time.monotonic()
            running = loop.run_in_executor(self._executor, self._infer, model, slot % model.slots, inputs, wanted)
            done, _ = await asyncio.wait({running}, timeout=self._deadline(tokens))
            seconds = time.monotonic() - started
            if not done:
                running.add_done_callback(_dropped(model.record.name.display, started))
                self._stalled(batch, seconds, generation)
                continue
            INFERENCE_SECONDS.observe(seconds)
            try:
                rows = running.result()
            except Exception as exc:  # a failed batch fails its requests, never the lane
                _fail(batch, InferenceFailed(openvino_reason(exc)))
                continue
            self._seconds_per_token = max(self._seconds_per_token, seconds / tokens)
            for position, item in enumerate(batch):
                item.job.deliver(item.index, rows, position)

    def _infer(self, model: LoadedModel, slot: int, inputs: list[TokenizedText], wanted: list[frozenset[str]]) -> Rows:
        """On an executor thread: the batch's rows, the thread noted as busy so a stall can show its stack."""
        ident = threading.get_ident()
        self._busy[ident] = slot
        try:
            return model.infer_outputs(slot, inputs, wanted)
        finally:
            self._busy.pop(ident, None)

    def _deadline(self, tokens: int) -> float:
        """Seconds a batch of `tokens` padded tokens may run before the watchdog abandons it."""
        floor = self.limits.inference_timeout
        if not self._seconds_per_token:
            return STALL_MULTIPLE * floor
        return max(floor, STALL_MULTIPLE * self._seconds_per_token * tokens)

    def _stalled(self, batch: list[Waiting], seconds: float, generation: int) -> None:
        """Fail the abandoned batch's requests; the first stall of a compile also logs the stuck threads, counts
        it, leaves the executor to its stuck threads and starts compiling the model again."""
        name = self.model.record.name.display
        _fail(batch, InferenceStalled(name, seconds))
        if generation != self._generation:
            return  # a batch of the compile already abandoned: its stall is said and being repaired
        INFERENCE_STALLS.inc()
        log.error(
            "%s stopped responding: a batch of %d texts ran %.0f s without an answer; it is abandoned, its requests "
            "failed, and the model is being compiled again on fresh threads. The stuck threads:\n%s",
            name,
            len(batch),
            seconds,
            self._stacks(),
        )
        _abandoned.extend(t for t in threading.enumerate() if t.ident in self._busy)
        self.stuck = True
        self._generation += 1
        self._executor.shutdown(wait=False)
        self._executor = ThreadPoolExecutor(
            max_workers=self.model.slots, thread_name_prefix=f"ovembed-infer-{self._generation}"
        )
        self._rebuild = asyncio.create_task(self._rebuilt())
        self._rebuild.add_done_callback(lambda task: task.cancelled() or task.exception())

    def _stacks(self) -> str:
        """The stack of each thread of this lane that is running a batch now."""
        frames = sys._current_frames()
        said = []
        for thread in threading.enumerate():
            slot = self._busy.get(thread.ident or 0)
            frame = frames.get(thread.ident or 0)
            if slot is not None and frame is not None:
                said.append(f"thread {thread.name} (slot {slot}):\n{''.join(traceback.format_stack(frame))}")
        return "\n".join(said) or "(none is running a batch any more)"

    async def _sound_model(self) -> LoadedModel:
        """The model to run a batch on: once the model stuck is compiled again (a failed compile tried anew)."""
        while self.stuck:
            if self._rebuild is None or self._rebuild.done():
                self._rebuild = asyncio.create_task(self._rebuilt())
            await asyncio.shield(self._rebuild)
        return self.model

    async def _rebuilt(self) -> None:
        """The model compiled again on a thread of its own, and the lane answering with it."""
        name = self.model.record.name.display
        if self._reload is None:
            raise InferenceFailed(f"{name} stopped responding and this lane cannot compile it again")
        try:
            model = await asyncio.to_thread(self._reload)
        except Exception as exc:
            log.error("%s could not be compiled again after it stopped responding: %s", name, openvino_reason(exc))
            raise
        # The new compile's first batch has its own start-up to pay: timed afresh, as at the first load.
        self.model, self.stuck, self._seconds_per_token = model, False, 0.0
        log.warning("%s is compiled again and answering", name)
        self._wake.set()

    async def close(self) -> None:
        if self._rebuild is not None:
            self._rebuild.cancel()
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._executor.shutdown(wait=False, cancel_futures=True)


def _fail(batch: list[Waiting], failure: Exception) -> None:
    for item in batch:
        item.job.fail(failure)
