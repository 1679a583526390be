"""The composition root: the store opened and checked, the runtime and the pulls built, once at start.

The app puts each part on its state for the routes that need it; no route sees them as one bag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from dataclasses import dataclass

from daemon.config import Settings
from daemon.inference.engine import Engine
from daemon.inference.pool import BatchLimits
from daemon.inference.pulls import Pulls
from daemon.inference.residency import Residency
from daemon.inference.runtime import Runtime
from daemon.inference.shutdown import Shutdown
from modelstore.downloads import kept_downloads, sweep_partials
from modelstore.names import InvalidName, parse_name
from modelstore.store import ModelStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Parts:
    """What a running daemon is made of: its settings, its store, its runtime, its pulls in flight, and the one
    record of its stopping that the last two read."""

    settings: Settings
    store: ModelStore
    runtime: Runtime
    pulls: Pulls
    shutdown: Shutdown

    @classmethod
    def start(cls, settings: Settings) -> Parts:
        """Open the store and the device; a bad device or store raises here, before any socket opens."""
        store = ModelStore(settings.models_dir)
        store.sweep_staging()
        sweep_partials(store.layout)
        kept = kept_downloads(store.layout)
        if kept:
            log.info(
                "%.0f MB of downloads from unfinished pulls (%s) are kept so pulling again resumes; "
                "`OVEMBED_MODELS=%s ovembed pull --prune` removes them",
                sum(k.size for k in kept) / 1e6,
                ", ".join(k.repo for k in kept),
                store.root,
            )
        engine = Engine(settings.device, settings.precision, settings.performance_hint, settings.compile_cache)
        records = store.list()
        engine.prune_cache({r.digest for r in records})  # models removed while the daemon was down
        for record in records:  # a cheap check: names and sizes, no hashes (ovembed verify reads those)
            missing = store.missing_files(record)
            if missing:
                log.warning(
                    "%s is damaged: %s missing or empty in %s; pull or create it again, or `ovembed rm` it",
                    record.name.display,
                    ", ".join(missing),
                    record.path,
                )
        limits = BatchLimits(
            max_tokens=settings.batch_tokens,
            max_texts=settings.batch_size,
            max_multivector_bytes=settings.max_multivector_mb << 20,
            inference_timeout=settings.inference_timeout,
        )
        residency = Residency(engine, store, limits, settings.keep_alive, settings.max_loaded_models)
        cache_bytes = settings.vector_cache_mb << 20
        shutdown = Shutdown()
        runtime = Runtime(
            engine,
            store,
            residency,
            settings.max_inputs,
            settings.max_queue,
            cache_bytes,
            shutdown=shutdown,
            preload=settings.preload,
        )
        pulls = Pulls(store, settings.hf_endpoint, settings.hf_token, shutdown)
        return cls(settings, store, runtime, pulls, shutdown)

    async def preload(self) -> None:
        """OVEMBED_PRELOAD's models, loaded one after another and kept; a name that fails is logged, not fatal.
        Its progress is kept for /health: a failed name counts as done (logged, and the others serve)."""
        progress = self.runtime.preloading
        for text in self.settings.preload:
            record = None
            with contextlib.suppress(InvalidName):
                record = self.store.get(parse_name(text))
            if record is None:
                log.warning("OVEMBED_PRELOAD names %s, which is not in the store; pull it first", text)
                progress.failed.append(text)
                progress.done += 1
                continue
            progress.now = record.name.display
            try:
                await self.runtime.load(record, keep_alive=math.inf)
            except Exception as exc:  # one bad model must not stop the others, nor the daemon
                log.warning("OVEMBED_PRELOAD could not load %s: %s", text, exc)
                progress.failed.append(text)
            else:
                log.info("preloaded %s", record.name.display)
            finally:
                progress.now = None
                progress.done += 1

    def begin_stop(self) -> None:
        """The first signal: pulls end now, and embeddings and reranks still running after
        OVEMBED_SHUTDOWN_TIMEOUT end with Stopping, so each is answered rather than cut off."""
        self.shutdown.begun = True
        asyncio.get_running_loop().call_later(self.settings.shutdown_timeout, self.runtime.end_running)

    async def close(self) -> None:
        await self.pulls.close()
        await self.runtime.close()
