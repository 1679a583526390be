"""Pulls in flight: one download per model however many clients ask, each client fed the same progress.

The blocking pull runs on a worker thread and reports through the event loop to every subscriber's
queue. When the last subscriber leaves, the pull is cancelled; the files that finished stay in the
download cache for the next pull.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from modelstore.names import ModelName
from modelstore.pull import PullCancelled, Puller, PullError, PullStatus

log = logging.getLogger(__name__)

# A slow reader skips progress updates rather than holding memory; the final message always gets through.
_QUEUE_LIMIT = 256


@dataclass(frozen=True)
class PullOutcome:
    """How a pull ended: the error that stopped it, or none for success."""

    error: PullError | PullCancelled | None = None


def status_message(status: PullStatus) -> dict[str, Any]:
    """Ollama's progress object: absent fields are left out, as Go's omitempty does."""
    return {k: v for k, v in asdict(status).items() if v is not None}


@dataclass(eq=False)
class _Job:
    name: ModelName
    cancel: threading.Event = field(default_factory=threading.Event)
    subscribers: set[asyncio.Queue[dict[str, Any] | PullOutcome]] = field(default_factory=set)
    history: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def publish(self, message: dict[str, Any] | PullOutcome) -> None:
        if isinstance(message, dict):
            self.history = [m for m in self.history if m.get("status") != message.get("status")] + [message]
        for queue in self.subscribers:
            if isinstance(message, PullOutcome) or queue.qsize() < _QUEUE_LIMIT:
                queue.put_nowait(message)


class SharedPulls:
    """The daemon's pulls, keyed by model name without regard to case."""

    def __init__(self, puller: Puller) -> None:
        self.puller = puller
        self._jobs: dict[tuple[str, str, str, str], _Job] = {}

    @contextlib.asynccontextmanager
    async def follow(self, name: ModelName) -> AsyncIterator[asyncio.Queue[dict[str, Any] | PullOutcome]]:
        """Progress messages of the pull of `name`, starting it unless one is running, then its outcome."""
        job = self._jobs.get(name.key)
        queue: asyncio.Queue[dict[str, Any] | PullOutcome] = asyncio.Queue()
        if job is None:
            job = self._jobs[name.key] = _Job(name)
            job.subscribers.add(queue)
            job.task = asyncio.create_task(self._run(job))
        else:
            # A late joiner sees where each layer stands now, then follows along. If the last client has just
            # left, the pull is still winding down: the joiner takes it over rather than inherit "pull canceled".
            job.cancel.clear()
            for message in job.history:
                queue.put_nowait(message)
            job.subscribers.add(queue)
        try:
            yield queue
        finally:
            job.subscribers.discard(queue)
            if not job.subscribers:
                job.cancel.set()

    async def _run(self, job: _Job) -> None:
        loop = asyncio.get_running_loop()

        def report(status: PullStatus) -> None:
            loop.call_soon_threadsafe(job.publish, status_message(status))

        try:
            while True:
                try:
                    await asyncio.to_thread(self.puller.pull, job.name, report, job.cancel.is_set)
                    break
                except PullCancelled:
                    # A client joined after the worker had already stopped (see follow): start again for it.
                    if not job.subscribers or job.cancel.is_set():
                        raise
            outcome = PullOutcome()
        except (PullCancelled, PullError) as exc:
            outcome = PullOutcome(exc)
        except Exception as exc:  # a bug must end the pull with a message, never hang its clients
            log.exception("pull of %s failed", job.name.display)
            outcome = PullOutcome(PullError(f"pull failed: {exc}"))
        finally:
            self._jobs.pop(job.name.key, None)
        job.publish(outcome)

    async def close(self) -> None:
        for job in list(self._jobs.values()):
            job.cancel.set()
            if job.task is not None:
                with contextlib.suppress(Exception):
                    await job.task
