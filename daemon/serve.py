"""`ovembed serve`: build the daemon's parts, then hand the app to uvicorn until a signal stops it.

SIGTERM or SIGINT stops accepting connections, ends running pulls (their finished files stay for the next
pull), lets the requests in flight finish for up to OVEMBED_SHUTDOWN_TIMEOUT seconds, answers those still
running 503, then exits 0. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn

from daemon.config import Settings
from daemon.http.app import create_app
from daemon.http.connection import HeadDeadlineProtocol
from daemon.inference.batcher import stuck_threads
from daemon.startup import Parts

# uvicorn cancels what still runs this long after the daemon's own bound: a backstop that leaves time for the
# requests the bound ended to be answered.
_BACKSTOP_SECONDS = 2


class _Server(uvicorn.Server):
    """uvicorn's server, telling the daemon when shutdown begins, ending with exit status 0, not the signal."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            self.force_exit = True  # uvicorn forces on a second SIGINT only; systemd sends SIGTERM
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_shutdown)  # a signal handler: the loop runs it next
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                # uvicorn raises the captured signal again once it has shut down, so the process would die
                # of it; a clean shutdown is an exit with status 0.
                self._captured_signals.clear()


def serve(settings: Settings) -> None:
    """Run the daemon in this process; a bad device setting raises DeviceError before the socket opens."""
    level = logging.DEBUG if settings.debug else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # huggingface_hub's HTTP client logs every request at INFO; pulls report their own progress.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    parts = Parts.start(settings)
    host = settings.listen.host or "0.0.0.0"
    config = uvicorn.Config(
        create_app(parts),
        host=host,
        port=settings.listen.port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_timeout + _BACKSTOP_SECONDS,
        limit_concurrency=settings.max_connections,
        http=functools.partial(HeadDeadlineProtocol, head_timeout=settings.read_timeout),
    )
    _Server(config, parts.begin_stop).run()
    stuck = stuck_threads()
    if stuck:  # Python joins every executor thread at exit: one stuck in a device would hold the exit for good
        logging.getLogger(__name__).warning("%d inference threads are still stuck; exiting without them", len(stuck))
        logging.shutdown()
        os._exit(0)
