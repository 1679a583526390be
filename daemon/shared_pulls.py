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
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from daemon.metrics import PULL_BYTES
from modelstore.names import ModelName
from modelstore.pull import PullCancelled, Puller, PullError, PullStatus

log = logging.getLogger(__name__)

T = TypeVar("T")
# How long closing waits for pulls to notice they were cancelled: a download notices at its next callback.
_CLOSE_SECONDS = 2.0

# A slow reader skips progress updates rather than holding memory; the final message always gets through.
_QUEUE_LIMIT = 256


class ShuttingDown(PullError):
    """The daemon stopped while the pull ran, or before it could start."""

    def __init__(self) -> None:
        super().__init__("ovembed is shutting down; the files downloaded so far are kept, and pulling again resumes")


@dataclass(frozen=True)
class PullOutcome:
    """How a pull ended: the error that stopped it, or none for success."""

    error: PullError | PullCancelled | None = None


async def _on_daemon_thread(call: Callable[[], T]) -> T:
    """`call` on a thread of its own that never holds the process's exit: a download blocked in a read (the
    hub client reports progress only every 10 MiB) must not keep a stopping daemon alive."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(lambda: None if future.done() else outcome())

    def run() -> None:
        try:
            result = call()
        except BaseException as exc:  # handed to the awaiting task, which decides
            settle(lambda error=exc: future.set_exception(error))
        else:
            settle(lambda: future.set_result(result))

    threading.Thread(target=run, name="ovembed-pull", daemon=True).start()
    return await future


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
        self._stopping = False

    def stop(self) -> None:
        """The daemon is shutting down: end every pull now and start none. Safe from a signal handler: it only
        sets flags, which the pull threads read at their next progress step."""
        self._stopping = True
        for job in list(self._jobs.values()):
            job.cancel.set()

    @contextlib.asynccontextmanager
    async def follow(self, name: ModelName) -> AsyncIterator[asyncio.Queue[dict[str, Any] | PullOutcome]]:
        """Progress messages of the pull of `name`, starting it unless one is running, then its outcome."""
        job = self._jobs.get(name.key)
        queue: asyncio.Queue[dict[str, Any] | PullOutcome] = asyncio.Queue()
        if self._stopping:
            queue.put_nowait(PullOutcome(ShuttingDown()))
            yield queue
            return
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

        received: dict[str, int] = {}

        def report(status: PullStatus) -> None:
            if status.digest is not None and status.completed is not None:
                PULL_BYTES.inc(max(0, status.completed - received.get(status.digest, 0)))
                received[status.digest] = max(status.completed, received.get(status.digest, 0))
            loop.call_soon_threadsafe(job.publish, status_message(status))

        try:
            while True:
                try:
                    await _on_daemon_thread(lambda: self.puller.pull(job.name, report, job.cancel.is_set))
                    break
                except PullCancelled:
                    # A client joined after the worker had already stopped (see follow): start again for it.
                    if not job.subscribers or job.cancel.is_set():
                        raise
            outcome = PullOutcome()
        except PullCancelled as exc:
            outcome = PullOutcome(ShuttingDown() if self._stopping else exc)
        except PullError as exc:
            outcome = PullOutcome(exc)
        except Exception as exc:  # a bug must end the pull with a message, never hang its clients
            log.exception("pull of %s failed", job.name.display)
            outcome = PullOutcome(PullError(f"pull failed: {exc}"))
        finally:
            self._jobs.pop(job.name.key, None)
        job.publish(outcome)

    async def close(self) -> None:
        """End every pull; wait a little for each to wind down, then leave it (the store stays consistent, as it
        does when the process is killed)."""
        self.stop()
        tasks = {job.task for job in self._jobs.values() if job.task is not None}
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_CLOSE_SECONDS)
            for task in pending:
                task.cancel()
