"""The objects a running daemon shares between requests, built once at start."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.batcher import Batcher, BatchLimits
from daemon.config import Settings
from daemon.engine import Engine
from daemon.pulls import Pulls
from daemon.residency import Residency
from modelstore.pull import Puller, sweep_downloads
from modelstore.store import ModelStore


@dataclass
class Services:
    settings: Settings
    store: ModelStore
    engine: Engine
    batcher: Batcher
    residency: Residency
    pulls: Pulls

    @classmethod
    def start(cls, settings: Settings) -> Services:
        store = ModelStore(settings.models_dir)
        store.sweep_staging()
        sweep_downloads(store)
        engine = Engine(settings.device, settings.precision, settings.performance_hint, settings.cache_dir)
        batcher = Batcher(BatchLimits(settings.batch_tokens, settings.batch_size, settings.max_queue))
        residency = Residency(engine, batcher, settings.keep_alive)
        pulls = Pulls(Puller(store, settings.hf_endpoint, settings.hf_token))
        return cls(settings, store, engine, batcher, residency, pulls)

    async def close(self) -> None:
        await self.pulls.close()
        await self.residency.close()
        await self.batcher.close()
