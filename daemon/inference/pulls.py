"""The daemon's pulls: each client's pull on a daemon thread, its events handed to the event loop; all of them
ended at once when the daemon stops.

Here, beside inference, rather than in http/: it owns threads and the pulls' part of shutdown, and knows
nothing of HTTP (http/pull.py says its events in Ollama's words). A model is fetched once however many
clients pull it, by name or by another name for it (modelstore/fetch.py); each client follows a pull of its
own, and leaving cancels only that one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from daemon.inference.shutdown import Shutdown
from daemon.metrics import PULL_BYTES
from modelstore.names import ModelName
from modelstore.pull import Puller
from modelstore.pull_errors import PullCancelled, PullError
from modelstore.pull_events import FileProgress, PullEvent, Report
from modelstore.store import ModelStore

log = logging.getLogger(__name__)

T = TypeVar("T")
# How long closing waits for pulls to end: a pull notices the stop within a fraction of a second, unless it is
# still waiting for the hub to name the commit.
_CLOSE_SECONDS = 2.0
# A slow reader skips progress updates rather than holding memory; how the pull ended always gets through.
_QUEUE_LIMIT = 256


class ShuttingDown(PullError):
    """The daemon stopped while the pull ran, or before it could start."""

    log_line: ClassVar[str] = "the daemon is shutting down"


@dataclass(eq=False)
class PullFailed(PullError):
    """A pull broke in a way no other error names: a bug, logged with its traceback."""

    reason: str
    log_line: ClassVar[str] = "the pull broke: {reason}"


@dataclass(frozen=True)
class _Ended:
    error: BaseException | None = None


async def _on_daemon_thread(call: Callable[[], T]) -> T:
    """`call` on a thread of its own that never holds the process's exit: a pull blocked in a read of the hub
    must not keep a stopping daemon alive."""
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


def _pulled_bytes_counter() -> Report:
    """PULL_BYTES for one fetch: each file's bytes as they arrive, however many clients follow it."""
    received: dict[str, int] = {}

    def count(event: PullEvent) -> None:
        if isinstance(event, FileProgress):
            PULL_BYTES.inc(max(0, event.completed - received.get(event.digest, 0)))
            received[event.digest] = max(event.completed, received.get(event.digest, 0))

    return count


def _offer(queue: asyncio.Queue[PullEvent | _Ended], event: PullEvent) -> None:
    if queue.qsize() < _QUEUE_LIMIT:
        queue.put_nowait(event)


class Pulls:
    """Every pull the daemon's clients follow."""

    def __init__(self, store: ModelStore, endpoint: str | None, token: str | None, shutdown: Shutdown) -> None:
        self.puller = Puller(store, endpoint, token, observe=_pulled_bytes_counter)
        # Once it has begun, every pull ends (each reads it within a fraction of a second) and none starts.
        self.shutdown = shutdown
        self._running: set[asyncio.Task[None]] = set()

    async def follow(self, name: ModelName) -> AsyncIterator[PullEvent]:
        """The events of a pull of `name` as they come, then its error raised if it failed. Leaving early (the
        client hung up) cancels this pull; the fetch it follows stops when no pull follows it any more."""
        if self.shutdown.begun:
            raise ShuttingDown()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[PullEvent | _Ended] = asyncio.Queue()
        left = threading.Event()

        def report(event: PullEvent) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody reads any more
                loop.call_soon_threadsafe(_offer, queue, event)

        def cancelled() -> bool:
            return left.is_set() or self.shutdown.begun

        task = asyncio.create_task(self._run(name, report, cancelled, queue))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        try:
            while not isinstance(item := await queue.get(), _Ended):
                yield item
            if item.error is not None:
                raise item.error
        finally:
            left.set()

    async def _run(
        self,
        name: ModelName,
        report: Report,
        cancelled: Callable[[], bool],
        queue: asyncio.Queue[PullEvent | _Ended],
    ) -> None:
        """Run the pull; how it ended goes into the queue after every event it reported."""
        try:
            await _on_daemon_thread(lambda: self.puller.pull(name, report, cancelled))
            ended = _Ended()
        except PullCancelled as exc:
            ended = _Ended(ShuttingDown() if self.shutdown.begun else exc)
        except PullError as exc:
            ended = _Ended(exc)
        except Exception as exc:  # a bug must end the pull with a message, never hang its client
            log.exception("pull of %s failed", name.display)
            ended = _Ended(PullFailed(str(exc)))
        queue.put_nowait(ended)

    async def close(self) -> None:
        """End every pull; wait a little for each to wind down, then leave it (the store stays consistent, as it
        does when the process is killed)."""
        self.shutdown.begun = True
        if self._running:
            _, pending = await asyncio.wait(set(self._running), timeout=_CLOSE_SECONDS)
            for task in pending:
                task.cancel()
