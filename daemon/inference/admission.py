"""OLLAMA_MAX_QUEUE: how many requests may wait at once, counted from before their model loads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from daemon.inference.errors import QueueFull
from daemon.metrics import WAITING_REQUESTS


class Admission:
    """Places in the queue, shared by every model, as Ollama's scheduler counts pending requests."""

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self._waiting = 0

    @contextlib.contextmanager
    def place(self) -> Iterator[None]:
        """Hold one place until the request is answered; QueueFull when every place is taken."""
        if self._waiting >= self.max_queue:
            raise QueueFull(f"{self._waiting} requests are already waiting")
        self._waiting += 1
        WAITING_REQUESTS.inc()
        try:
            yield
        finally:
            self._waiting -= 1
            WAITING_REQUESTS.dec()
