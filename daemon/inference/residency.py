"""Which models are loaded, for how long: Ollama's keep_alive, without Ollama's one-request-at-a-time runner.

A model loads on first use. Its keep_alive clock starts when its last request finishes: `0` unloads it
then, a negative value keeps it for good, and the default comes from OLLAMA_KEEP_ALIVE. Each loaded model
owns its batching lane: the lane is made with the resident entry and closed when the entry goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from daemon.inference.batcher import Lane
from daemon.inference.engine import Engine, LoadedModel
from daemon.inference.errors import ModelDamaged, ModelDeleted, ModelLoadFailed
from daemon.inference.pool import BatchLimits
from daemon.metrics import LOAD_SECONDS, LOADED_MODELS, MODEL_LOADS, MODEL_UNLOADS
from modelstore.convert import openvino_reason
from modelstore.store import ModelRecord, ModelStore

log = logging.getLogger(__name__)

# A keep_alive this long is "forever": far enough ahead to read so, near enough for every client's date parser.
FOREVER_SECONDS = 100 * 365 * 86400.0

_Key = tuple[tuple[str, str, str, str], str]


@dataclass(eq=False)
class Resident:
    """A loaded model with its lane, its users and its expiry: `keep_alive` seconds after `last_used`, when
    `timer` (set while it is idle) unloads it."""

    record: ModelRecord
    lane: Lane
    keep_alive: float
    users: int = 0
    last_used: float = field(default_factory=time.monotonic)  # also orders OLLAMA_MAX_LOADED_MODELS' eviction
    timer: asyncio.TimerHandle | None = None
    retired: bool = False  # deleted from the store: unload as soon as the last request ends

    @property
    def forever(self) -> bool:
        return self.keep_alive >= FOREVER_SECONDS

    @property
    def expires_at(self) -> datetime:
        """The expiry on the wall clock, as /api/ps shows it."""
        left = self.last_used + min(self.keep_alive, FOREVER_SECONDS) - time.monotonic()
        return datetime.now(UTC).astimezone() + timedelta(seconds=left)

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _key(record: ModelRecord) -> _Key:
    """A name re-created with new content is a different model; the old one unloads when idle."""
    return record.name.key, record.digest


class Residency:
    """Loads, shares and unloads models; the only owner of loaded models and their lanes."""

    def __init__(
        self, engine: Engine, store: ModelStore, limits: BatchLimits, default_keep_alive: float, max_loaded: int
    ) -> None:
        self.engine = engine
        self.store = store
        self.limits = limits
        self.default_keep_alive = default_keep_alive
        self.max_loaded = max_loaded
        self._failed: dict[str, tuple[tuple[tuple[str, int, int], ...], str]] = {}  # digest -> (files, reason)
        self._residents: dict[_Key, Resident] = {}
        self._loading: dict[_Key, asyncio.Task[LoadedModel]] = {}
        self._unloading: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def use(self, record: ModelRecord, keep_alive: float | None) -> AsyncIterator[tuple[Lane, float]]:
        """The model's lane and the seconds this call spent loading it; the keep_alive clock starts on exit.

        Raises ModelLoadFailed when the model cannot be loaded, ModelDeleted when it was deleted meanwhile.
        """
        started = time.perf_counter()
        resident = await self._acquire(record)
        load_seconds = time.perf_counter() - started
        # As Ollama's scheduler: a request that sends no keep_alive keeps the one in force.
        if keep_alive is not None:
            resident.keep_alive = keep_alive
        try:
            yield resident.lane, load_seconds
        finally:
            self._release(resident)

    async def _acquire(self, record: ModelRecord) -> Resident:
        key = _key(record)
        resident = self._residents.get(key)
        if resident is None:
            task = self._loading.get(key)
            if task is None:
                self._trim(room_for=1)
                task = self._loading[key] = asyncio.create_task(self._load(record))
                # A finished load leaves at once: if every waiter hung up, its model is dropped, not kept unseen.
                task.add_done_callback(lambda done: self._loading.pop(key) if self._loading.get(key) is done else None)
            model = await asyncio.shield(task)
            resident = self._residents.get(key)
            if resident is None:
                # A delete may land between the load and this line; the store says whether the name still holds.
                if not self.store.holds(record):
                    raise ModelDeleted(record.name.display)
                try:
                    lane = Lane(model, self.limits, reload=lambda: self.engine.load(record))
                except Exception as exc:
                    raise ModelLoadFailed(record.name.display, openvino_reason(exc)) from exc
                resident = self._residents[key] = Resident(record, lane, self.default_keep_alive)
                LOADED_MODELS.set(len(self._residents))
        resident.stop_timer()
        resident.users += 1
        return resident

    async def _load(self, record: ModelRecord) -> LoadedModel:
        """Raises ModelDamaged for missing files, ModelLoadFailed for files OpenVINO or the tokenizer refuse.

        A failed load is remembered until the model's files change, so a client retrying a broken model gets
        the same answer at once instead of a compile each time.
        """
        missing = self.store.missing_files(record)
        if missing:
            raise ModelDamaged(record.name.display, missing)
        files = self.store.files_signature(record)
        failed = self._failed.get(record.digest)
        if failed is not None and failed[0] == files:
            raise ModelLoadFailed(record.name.display, failed[1])
        try:
            with LOAD_SECONDS.time():
                model = await asyncio.to_thread(self.engine.load, record)
        except Exception as exc:
            if not self.store.holds(record):
                raise ModelDeleted(record.name.display) from exc
            reason = openvino_reason(exc)
            log.warning("cannot load %s from %s: %s", record.name.display, record.path, reason)
            self._failed[record.digest] = (files, reason)
            raise ModelLoadFailed(record.name.display, reason) from exc
        self._failed.pop(record.digest, None)
        MODEL_LOADS.inc()
        return model

    def _release(self, resident: Resident) -> None:
        resident.users -= 1
        resident.touch()
        if resident.users > 0:
            return
        if resident.retired:
            self._unload(resident)
            return
        self._trim(room_for=0)
        still_loaded = self._residents.get(_key(resident.record)) is resident
        if still_loaded and not resident.forever:
            loop = asyncio.get_running_loop()
            resident.timer = loop.call_later(max(0.0, resident.keep_alive), self._expire, resident)

    def _trim(self, room_for: int) -> None:
        """Unload idle models, least recently used first, until `room_for` more fit under OLLAMA_MAX_LOADED_MODELS.

        Busy models are never unloaded: with all of them busy a load goes over the limit rather than wait, and
        the next model to fall idle makes up for it.
        """
        excess = len(self._residents) + len(self._loading) + room_for - self.max_loaded
        idle = sorted((r for r in self._residents.values() if r.users == 0), key=lambda r: r.last_used)
        for resident in idle[: max(0, excess)]:
            name = resident.record.name.display
            log.info("unloading %s to make room (OLLAMA_MAX_LOADED_MODELS=%d)", name, self.max_loaded)
            self._unload(resident)

    def _expire(self, resident: Resident) -> None:
        resident.timer = None
        if resident.users == 0:
            self._unload(resident)

    def _unload(self, resident: Resident) -> None:
        """Forget the model now and close its lane in a task that close() waits for."""
        self._forget(resident)
        MODEL_UNLOADS.inc()
        resident.stop_timer()
        task = asyncio.get_running_loop().create_task(resident.lane.close())
        self._unloading.add(task)
        task.add_done_callback(self._unloading.discard)

    def _forget(self, resident: Resident) -> None:
        """Out of the loaded models (and /api/ps); its lane stays open for the requests still using it."""
        key = _key(resident.record)
        if self._residents.get(key) is resident:
            del self._residents[key]
        LOADED_MODELS.set(len(self._residents))

    def running(self) -> list[Resident]:
        """Loaded models, the longest time left first, as Ollama's /api/ps sorts them."""
        return sorted(
            self._residents.values(), key=lambda r: r.last_used + min(r.keep_alive, FOREVER_SECONDS), reverse=True
        )

    def retire(self, record: ModelRecord) -> None:
        """A deleted model leaves /api/ps at once; an idle one unloads now, a busy one after its last request."""
        for resident in [r for r in self._residents.values() if r.record.name.key == record.name.key]:
            self._forget(resident)
            resident.retired = True
            if resident.users == 0:
                self._unload(resident)

    async def close(self) -> None:
        for task in self._loading.values():
            task.cancel()
        for resident in list(self._residents.values()):
            self._unload(resident)
        await asyncio.gather(*self._loading.values(), *self._unloading, return_exceptions=True)
        self._loading.clear()
