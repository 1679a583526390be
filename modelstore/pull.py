"""`ollama pull` for Hugging Face: resolve the name to a repo and commit, have the model fetched (or find it
stored), and keep it under the name pulled.

Downloads go through huggingface_hub into a cache under the store, so a pull cut off by a hub error, a
disconnect or a SIGKILL keeps the files that finished and the next pull fetches only the rest. The model
enters the store through `create_from_folder`, the same atomic path as `ovembed create` (see fetch.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from modelstore.catalog import QUANTIZED_SUFFIX, CatalogEntry, lookup
from modelstore.fetch import Fetcher, Wanted, replay
from modelstore.hub import Hub
from modelstore.names import ModelName
from modelstore.pull_errors import HubUnreachable, UnknownName
from modelstore.pull_events import Done, Report, Resolving, Writing
from modelstore.store import HubModel, ModelRecord, ModelStore

log = logging.getLogger(__name__)


def _unobserved() -> Report:
    """No one counts a fetch's progress."""
    return lambda event: None


@dataclass(frozen=True)
class HubSource:
    """Where a name's files come from: a repo at a revision, and the catalog's entry for the name, if any."""

    repo: str
    revision: str
    entry: CatalogEntry | None
    quantize: str | None = None

    @property
    def weights(self) -> str | None:
        """The catalog's weight format for a converted checkpoint; None is the converter's default."""
        return self.entry.weights if self.entry else None


def resolve_source(name: ModelName) -> HubSource:
    """The Hugging Face repo behind a name: `hf.co/ORG/REPO[:REVISION]`, or an Ollama library name.

    `hf.co/ORG/REPO:q8_0` is the repo's main revision made int8, as Ollama's `:Q8_0` picks a repo's 8-bit file.
    """
    if name.is_huggingface:
        assert name.hf_repo is not None
        level = QUANTIZED_SUFFIX if name.tag.casefold() == QUANTIZED_SUFFIX else None
        revision = "main" if name.tag.lower() == "latest" or level else name.tag
        return HubSource(name.hf_repo, revision, None, level)
    entry = lookup(name)
    if entry is None:
        raise UnknownName(name.display)
    return HubSource(entry.repo, entry.revision, entry, entry.quantize)


class Puller:
    """Pulls into one store from one hub endpoint; blocking, meant for a worker thread of each pull's own.

    `observe` is called as each fetch starts; what it returns sees that fetch's events once, however many pulls
    follow it (the daemon counts the bytes pulled).
    """

    def __init__(
        self,
        store: ModelStore,
        endpoint: str | None = None,
        token: str | None = None,
        observe: Callable[[], Report] = _unobserved,
    ) -> None:
        self.store = store
        self.hub = Hub(store.layout, endpoint, token)
        self.fetcher = Fetcher(store, self.hub, observe)

    def pull(self, name: ModelName, report: Report, cancelled: Callable[[], bool] = lambda: False) -> ModelRecord:
        report(Resolving())
        source = resolve_source(name)
        try:
            commit = self.hub.commit(source.repo, source.revision)
        except HubUnreachable as error:
            record = self.store.get(name)
            if record is None:
                raise
            log.warning("hub unreachable; %s is already present: %s", name.display, error)
            replay(record, report)
        else:
            wanted = Wanted(HubModel(source.repo, commit, source.weights, source.quantize), source.entry)
            record = self.fetcher.fetch(wanted, name, report, cancelled)
        report(Writing())
        record = self._named(name, record)
        report(Done())
        return record

    def _named(self, name: ModelName, record: ModelRecord) -> ModelRecord:
        """The model under the name pulled: the name's own manifest if it names the same folder, else a second
        manifest for it, as `ollama cp` writes."""
        own = self.store.get(name)
        if own is not None and own.digest == record.digest:
            return own
        return self.store.copy(record, name)
