"""Which models are loaded, for how long: Ollama's keep_alive, without Ollama's one-request-at-a-time runner.

A model loads on first use. Its keep_alive clock starts when its last request finishes: `0` unloads it
then, a negative value keeps it for good, and the default comes from OLLAMA_KEEP_ALIVE.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from daemon.batcher import Batcher
from daemon.engine import Engine, LoadedModel
from daemon.errors import Err
from modelstore.convert import openvino_reason
from modelstore.store import ModelRecord

# Far enough ahead to read as "forever", near enough for every client's datetime parser.
_FOREVER = timedelta(days=365 * 100)


@dataclass(eq=False)
class Resident:
    """A loaded model with its users and its expiry."""

    record: ModelRecord
    model: LoadedModel
    keep_alive: float
    users: int = 0
    expires_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc).astimezone())
    timer: asyncio.TimerHandle | None = None

    def touch(self) -> None:
        ahead = _FOREVER if math.isinf(self.keep_alive) else timedelta(seconds=self.keep_alive)
        self.expires_at = datetime.now(timezone.utc).astimezone() + ahead


def _key(record: ModelRecord) -> tuple[tuple[str, str, str, str], str]:
    """A name re-created with new content is a different model; the old one unloads when idle."""
    return record.name.key, record.digest


class Residency:
    """Loads, shares and unloads models; the only owner of LoadedModel instances."""

    def __init__(self, engine: Engine, batcher: Batcher, default_keep_alive: float) -> None:
        self.engine = engine
        self.batcher = batcher
        self.default_keep_alive = default_keep_alive
        self._residents: dict[tuple[tuple[str, str, str, str], str], Resident] = {}
        self._loading: dict[tuple[tuple[str, str, str, str], str], asyncio.Task[LoadedModel]] = {}

    @contextlib.asynccontextmanager
    async def use(self, record: ModelRecord, keep_alive: float | None) -> AsyncIterator[tuple[LoadedModel, float]]:
        """The loaded model and the seconds this call spent loading it; the keep_alive clock starts on exit."""
        started = time.perf_counter()
        resident = await self._acquire(record)
        load_seconds = time.perf_counter() - started
        # As Ollama's scheduler: a request that sends no keep_alive keeps the one in force.
        if keep_alive is not None:
            resident.keep_alive = keep_alive
        try:
            yield resident.model, load_seconds
        finally:
            self._release(resident)

    async def _acquire(self, record: ModelRecord) -> Resident:
        key = _key(record)
        resident = self._residents.get(key)
        if resident is None:
            task = self._loading.get(key)
            if task is None:
                task = self._loading[key] = asyncio.create_task(asyncio.to_thread(self.engine.load, record))
            try:
                model = await asyncio.shield(task)
            except Exception as exc:
                self._loading.pop(key, None)
                raise Err.MODEL_LOAD_FAILED(name=record.name.display, detail=openvino_reason(exc)) from exc
            self._loading.pop(key, None)
            resident = self._residents.get(key)
            if resident is None:
                resident = self._residents[key] = Resident(record, model, self.default_keep_alive)
                resident.touch()
        if resident.timer is not None:
            resident.timer.cancel()
            resident.timer = None
        resident.users += 1
        return resident

    def _release(self, resident: Resident) -> None:
        resident.users -= 1
        resident.touch()
        if resident.users > 0 or math.isinf(resident.keep_alive):
            return
        loop = asyncio.get_running_loop()
        resident.timer = loop.call_later(max(0.0, resident.keep_alive), self._expire, resident)

    def _expire(self, resident: Resident) -> None:
        resident.timer = None
        if resident.users == 0:
            asyncio.get_running_loop().create_task(self._unload(resident))

    async def _unload(self, resident: Resident) -> None:
        key = _key(resident.record)
        if self._residents.get(key) is resident and resident.users == 0:
            del self._residents[key]
            await self.batcher.release(resident.model)

    def running(self) -> list[Resident]:
        """Loaded models, the longest time left first, as Ollama's /api/ps sorts them."""
        return sorted(self._residents.values(), key=lambda r: r.expires_at, reverse=True)

    async def unload_record(self, record: ModelRecord) -> None:
        """Drop a deleted model if nothing is using it; a busy one goes when its last request ends."""
        for resident in list(self._residents.values()):
            if resident.record.name.key == record.name.key and resident.users == 0:
                if resident.timer is not None:
                    resident.timer.cancel()
                await self._unload(resident)

    async def close(self) -> None:
        for resident in list(self._residents.values()):
            if resident.timer is not None:
                resident.timer.cancel()
            await self.batcher.release(resident.model)
        self._residents.clear()
