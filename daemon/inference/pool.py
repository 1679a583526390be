"""The pool of one model's waiting inputs, and the requests (jobs) they belong to.

Inputs wait bucketed by token length. A batch is anchored on the next request in round-robin order, so a
5,000-text job and a one-text query take turns and the small one waits a batch or two, not the whole job; it is
filled with inputs of the nearest lengths from any request, under a token budget and a cap on padding. The lane
(batcher.py) takes batches from here and delivers each input's row to its job.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from daemon.inference.engine import Rows
from daemon.inference.tokenize import TokenizedText
from modelstore.network_io import SparseVector

# Padding may take at most this share of a batch's tokens before a nearer-length batch is preferred;
# scripts/bench measured 0.1 at 6-10% more throughput than 0.3 on medium texts.
MAX_PADDING_SHARE = 0.1


@dataclass(frozen=True)
class BatchLimits:
    """How large a batch may grow: padded tokens and texts; how many bytes of float32 token vectors one
    request may ask for, so an answer of multi-vectors stays within memory (OVEMBED_MAX_MULTIVECTOR_MB); and the
    least seconds the watchdog gives a batch before it abandons it (OVEMBED_INFERENCE_TIMEOUT)."""

    max_tokens: int
    max_texts: int
    max_multivector_bytes: int = 64 << 20
    inference_timeout: float = 30.0


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
class Waiting:
    """One input of a job, waiting in the pool until a batch takes it."""

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
        self._buckets: dict[int, deque[Waiting]] = {}
        self._lengths: list[int] = []
        self._jobs: deque[tuple[Job, deque[Waiting]]] = deque()

    def add(self, job: Job) -> None:
        items = [Waiting(job, i) for i in sorted(range(len(job.inputs)), key=lambda i: len(job.inputs[i]))]
        for item in items:
            bucket = self._buckets.get(item.length)
            if bucket is None:
                bucket = self._buckets[item.length] = deque()
                bisect.insort(self._lengths, item.length)
            bucket.append(item)
        self._jobs.append((job, deque(items)))

    def _next_anchor(self) -> Waiting | None:
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

    def _peek(self, length: int) -> Waiting | None:
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

    def take(self, limits: BatchLimits) -> list[Waiting]:
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
