"""The composition root: the objects a running daemon shares between requests, built once at start."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.config import Settings
from daemon.inference.admission import Admission
from daemon.inference.batcher import BatchLimits
from daemon.inference.embed import Embedder
from daemon.inference.engine import Engine
from daemon.inference.residency import Residency
from daemon.shared_pulls import SharedPulls
from modelstore.pull import Puller, sweep_downloads
from modelstore.store import ModelRecord, ModelStore


@dataclass
class Services:
    settings: Settings
    store: ModelStore
    engine: Engine
    residency: Residency
    embedder: Embedder
    pulls: SharedPulls

    @classmethod
    def start(cls, settings: Settings) -> Services:
        store = ModelStore(settings.models_dir)
        store.sweep_staging()
        sweep_downloads(store)
        engine = Engine(settings.device, settings.precision, settings.performance_hint, settings.compile_cache)
        engine.prune_cache({r.digest for r in store.list()})  # models removed while the daemon was down
        limits = BatchLimits(max_tokens=settings.batch_tokens, max_texts=settings.batch_size)
        residency = Residency(engine, store, limits, settings.keep_alive)
        embedder = Embedder(Admission(settings.max_queue), residency, settings.max_inputs)
        pulls = SharedPulls(Puller(store, settings.hf_endpoint, settings.hf_token))
        return cls(settings, store, engine, residency, embedder, pulls)

    def delete(self, record: ModelRecord) -> None:
        """Remove a name; its folder and compile cache go with the last name for them."""
        self.store.delete(record)
        self.residency.retire(record)
        self.engine.prune_cache({r.digest for r in self.store.list()})

    async def close(self) -> None:
        await self.pulls.close()
        await self.residency.close()
