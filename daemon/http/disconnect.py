"""Ending a request's work when its client hangs up, so nothing waits on its behalf."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from daemon.http.errors import Err

T = TypeVar("T")


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it when the client disconnects so its queued texts are dropped.

    The 499 that follows is never read; it only ends the handler the way Ollama's does.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise Err.REQUEST_CANCELED()
    return task.result()


async def _disconnected(request: Request) -> None:
    """After the body is read, the next ASGI message is the disconnect, if it ever comes."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
