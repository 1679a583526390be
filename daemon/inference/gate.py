"""What every embedding and rerank request passes on its way to its model's lane, and the shutdown bound.

The input count, a place in OLLAMA_MAX_QUEUE (held from before the model loads, as Ollama's scheduler counts
it), the model loaded; and a record of the requests running, so that the shutdown bound can end each with
an answer (Stopping) instead of a cut connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from daemon.inference.admission import Admission
from daemon.inference.batcher import Lane
from daemon.inference.errors import Stopping, TooManyInputs
from daemon.inference.residency import Residency
from modelstore.store import ModelRecord

T = TypeVar("T")


class Gate:
    def __init__(self, admission: Admission, residency: Residency, max_inputs: int) -> None:
        self.admission = admission
        self.residency = residency
        self.max_inputs = max_inputs
        self._running: set[asyncio.Task[object]] = set()
        self._stopped: set[asyncio.Task[object]] = set()
        self._stopping = False

    @contextlib.asynccontextmanager
    async def lane(
        self, record: ModelRecord, keep_alive: float | None, count: int
    ) -> AsyncIterator[tuple[Lane, float]]:
        """The model's lane for `count` inputs, and the seconds spent loading it. Raises TooManyInputs, QueueFull,
        and what loading raises."""
        if count > self.max_inputs:
            raise TooManyInputs(count, self.max_inputs)
        with self.admission.place():
            async with self.residency.use(record, keep_alive) as used:
                yield used

    async def run(self, work: Awaitable[T]) -> T:
        """Await `work` in the caller's task; Stopping when stop() ends it, or has already passed."""
        if self._stopping:  # a request that reached here after the bound (its body was still arriving)
            if asyncio.iscoroutine(work):
                work.close()
            raise Stopping("the shutdown bound passed before the request was done")
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            return await work
        except asyncio.CancelledError:
            if task not in self._stopped:
                raise  # the client left, or the loop is closing: not ours to answer
            task.uncancel()
            raise Stopping("the shutdown bound passed before the request was done") from None
        finally:
            self._running.discard(task)
            self._stopped.discard(task)

    def stop(self) -> None:
        """End every request still running, and any that comes after: the shutdown bound has passed."""
        self._stopping = True
        for task in self._running:
            self._stopped.add(task)
            task.cancel()
