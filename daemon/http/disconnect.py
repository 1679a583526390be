"""Ending a request's work when its client hangs up, so nothing waits on its behalf."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.requests import Request

from daemon.http.errors import Err


@contextlib.asynccontextmanager
async def cancelled_on_disconnect(request: Request) -> AsyncIterator[None]:
    """The work awaited inside is cancelled when the client disconnects, so its queued texts are dropped.

    The work runs in the handler's own task, called by the route itself; only the watcher is a task of its own,
    which cancels the handler on a disconnect (one task per request, not two). The 499 that follows is never
    read; it only ends the handler the way Ollama's does.
    """
    handler = asyncio.current_task()
    assert handler is not None
    watcher = asyncio.ensure_future(_cancel_on_disconnect(request, handler))
    try:
        yield
    except asyncio.CancelledError:
        if not (watcher.done() and not watcher.cancelled()):
            raise  # cancelled from elsewhere (shutdown): not ours to turn into an answer
        handler.uncancel()
        raise Err.REQUEST_CANCELED() from None
    finally:
        watcher.cancel()


async def _cancel_on_disconnect(request: Request, handler: asyncio.Task[object]) -> None:
    """After the body is read, the next ASGI message is the disconnect, if it ever comes."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            handler.cancel()
            return
