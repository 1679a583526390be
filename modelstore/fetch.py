"""One model fetched once, however many pulls want it: downloaded, verified and converted into the store.

As Ollama's download.go keeps one download per digest, a fetch is keyed by what it makes, a `HubModel`
(repo, commit, weight format): a pull of this process that wants a model being fetched follows that fetch,
seeing each file where it stands and then every event, instead of fetching again. Pulls in other processes on
the same store meet at the download's file lock (`downloads.pulling`), and whoever comes second finds the
model stored. A fetch runs on a daemon thread of its own, so it outlives any one pull following it and never
holds the process's exit; it stops, keeping finished files, once every pull following it has gone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelstore.architectures import builder_for
from modelstore.catalog import CatalogEntry
from modelstore.create import CreateError, DiskFull, create_from_folder
from modelstore.diskspace import disk_full_message, free_bytes
from modelstore.downloads import kept_size, pulling
from modelstore.hub import Hub
from modelstore.hubfiles import DownloadPlan, RemoteFile, plan_download, with_shards
from modelstore.layout import is_checkpoint, is_checkpoint_index
from modelstore.names import ModelName
from modelstore.pull_errors import (
    ArchitectureUnsupported,
    ConversionFailed,
    DigestMismatch,
    DiskFilled,
    DiskTooSmall,
    IndexDamaged,
    NothingToConvert,
    PullCancelled,
    ShardsMissing,
)
from modelstore.pull_events import Converting, FileProgress, PullEvent, Quantizing, Report, Verifying, slot
from modelstore.quantize import Candidate, Tried
from modelstore.spec import ModelDescription
from modelstore.store import HubModel, Layer, ModelRecord, ModelStore, Provenance, file_sha256

log = logging.getLogger(__name__)

# A few updates a second per file is smooth for a progress bar and cheap for the stream.
_REPORT_INTERVAL = 0.2
# How often a pull following a fetch looks whether it should still follow.
_FOLLOW_POLL_SECONDS = 0.2
# Conversion writes a second copy of the network beside the download, with room to spare.
_CONVERTED_FACTOR = 1.2
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Wanted:
    """What a fetch makes: the model, and the catalog's entry for the name that asked for it, if any."""

    model: HubModel
    entry: CatalogEntry | None = None

    @property
    def fallback(self) -> ModelDescription | None:
        """The catalog's description, used only where the repo's own configs are silent."""
        return self.entry.description if self.entry else None


@dataclass(frozen=True)
class Route:
    """Where a model's files come from: its own repo or the catalog's mirror of it, at a commit, and which."""

    repo: str
    commit: str
    plan: DownloadPlan
    listed: tuple[RemoteFile, ...]  # every file of the repo at the commit: a checkpoint's shards are among them


def replay(record: ModelRecord, report: Report) -> None:
    """A stored model's files reported once each, complete, then its check, as Ollama reports a model it has."""
    for layer in record.provenance.layers if record.provenance else ():
        report(FileProgress(layer.digest, layer.size, layer.size))
    report(Verifying())


def _throttled(forward: Callable[[int, int], None], cancelled: Callable[[], bool]) -> Callable[[int, int], None]:
    """Progress at most every _REPORT_INTERVAL (and at the end); PullCancelled once the fetch is cancelled."""
    last = 0.0

    def step(done: int, total: int) -> None:
        nonlocal last
        if cancelled():
            raise PullCancelled()
        now = time.monotonic()
        if done >= total or now - last >= _REPORT_INTERVAL:
            last = now
            forward(done, total)

    return step


def _quantizing(report: Report, cancelled: Callable[[], bool]) -> Tried:
    """Each int8 candidate reported as it starts; PullCancelled between candidates once the fetch is cancelled."""

    def heard(candidate: Candidate) -> None:
        if cancelled():
            raise PullCancelled()
        report(Quantizing(candidate.kept_in_float))

    return heard


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    digest.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(eq=False)
class _Follower:
    name: ModelName
    report: Report
    cancelled: Callable[[], bool]


class _Fetch:
    """One model being fetched, and the pulls following it."""

    def __init__(self, name: ModelName, observe: Report) -> None:
        self._lock = threading.Lock()
        self._first_name = name
        self._observe = observe
        self._followers: list[_Follower] = []
        self._latest: dict[object, PullEvent] = {}  # the newest event of each file and step, in order
        self.finished = threading.Event()
        self.record: ModelRecord | None = None
        self.error: BaseException | None = None

    def join(self, follower: _Follower) -> None:
        """A pull joining late first sees where each file and step stands."""
        with self._lock:
            for event in self._latest.values():
                follower.report(event)
            self._followers.append(follower)

    def leave(self, follower: _Follower) -> None:
        with self._lock:
            self._followers.remove(follower)

    def report(self, event: PullEvent) -> None:
        """To every pull following, in one order for all; counted once, however many follow."""
        with self._lock:
            self._latest.pop(slot(event), None)
            self._latest[slot(event)] = event
            self._observe(event)
            for follower in self._followers:
                follower.report(event)

    def cancelled(self) -> bool:
        """Every pull following has gone (a pull joining now takes the fetch over)."""
        with self._lock:
            return all(f.cancelled() for f in self._followers)

    def stop_if_cancelled(self) -> None:
        if self.cancelled():
            raise PullCancelled()

    def name(self) -> ModelName:
        """The name the model is stored under: that of a pull still following; the others copy it."""
        with self._lock:
            return next((f.name for f in self._followers if not f.cancelled()), self._first_name)


class Fetcher:
    """The fetches of one store from one hub, each model once at a time."""

    def __init__(self, store: ModelStore, hub: Hub, observe: Callable[[], Report]) -> None:
        self.store = store
        self.hub = hub
        self._observe = observe
        self._lock = threading.Lock()
        self._fetches: dict[HubModel, _Fetch] = {}

    def fetch(self, wanted: Wanted, name: ModelName, report: Report, cancelled: Callable[[], bool]) -> ModelRecord:
        """The model in the store, under `name` or another name: found there, or fetched, or followed while a
        fetch of it runs; PullCancelled once `cancelled` says so."""
        follower = _Follower(name, report, cancelled)
        while True:
            with self._lock:
                fetch = self._fetches.get(wanted.model)
                starting = fetch is None
                if fetch is None:
                    fetch = self._fetches[wanted.model] = _Fetch(name, self._observe())
                # Joined before a new fetch starts: with nobody following, a fetch counts as cancelled.
                fetch.join(follower)
                if starting:
                    threading.Thread(target=self._run, args=(wanted, fetch), name="ovembed-fetch", daemon=True).start()
            try:
                while not fetch.finished.wait(_FOLLOW_POLL_SECONDS):
                    if cancelled():
                        raise PullCancelled()
            finally:
                fetch.leave(follower)
            if fetch.record is not None:
                return fetch.record
            # Joined a fetch that had already stopped for want of followers: fetch again.
            if not (isinstance(fetch.error, PullCancelled) and not cancelled()):
                raise fetch.error or PullCancelled()

    def _run(self, wanted: Wanted, fetch: _Fetch) -> None:
        try:
            fetch.record = self._fetch(wanted, fetch)
        except PullCancelled as exc:
            model = wanted.model
            log.info(
                "fetch of hf.co/%s@%s stopped: no pull follows it; finished files are kept",
                model.repo,
                model.commit[:12],
            )
            fetch.error = exc
        except BaseException as exc:  # handed to every pull following, which raise it
            fetch.error = exc
        finally:
            with self._lock:
                self._fetches.pop(wanted.model, None)
            fetch.finished.set()

    def _fetch(self, wanted: Wanted, fetch: _Fetch) -> ModelRecord:
        stored = self._stored(wanted.model)
        if stored is None:
            route = self._route(wanted)
            with pulling(self.store.layout, route.repo, fetch.stop_if_cancelled):
                # Another process, or a fetch of another weight format of the repo, may have stored it meanwhile.
                stored = self._stored(wanted.model)
                if stored is None:
                    return self._download_and_create(wanted, route, fetch)
        replay(stored, fetch.report)
        return stored

    def _stored(self, model: HubModel) -> ModelRecord | None:
        return next((r for r in self.store.list() if r.provenance and r.provenance.model == model), None)

    def _route(self, wanted: Wanted) -> Route:
        """The repo's own IR or ONNX, else the catalog's pre-converted mirror, else the repo's safetensors."""
        repo, commit = wanted.model.repo, wanted.model.commit
        files = self.hub.files(repo, commit)
        plan = plan_download(files)
        if plan is not None:
            return Route(repo, commit, plan, tuple(files))
        for mirror in wanted.entry.mirrors if wanted.entry else ():
            mirror_commit = self.hub.commit(mirror, "main")
            mirror_files = self.hub.files(mirror, mirror_commit)
            plan = plan_download(mirror_files)
            if plan is not None:
                return Route(mirror, mirror_commit, plan, tuple(mirror_files))
        plan = plan_download(files, checkpoint=True)
        if plan is None:
            raise NothingToConvert(repo)
        return Route(repo, commit, plan, tuple(files))

    def _download_and_create(self, wanted: Wanted, route: Route, fetch: _Fetch) -> ModelRecord:
        plan = self._checked(route)
        self._check_disk(route.repo, plan)
        folder = self._download(route, plan, fetch)
        fetch.report(Verifying())
        self._verify(folder, plan)
        fetch.report(Converting())
        provenance = Provenance(wanted.model, tuple(Layer(f.digest, f.size) for f in plan.files))
        try:
            record = create_from_folder(
                self.store,
                fetch.name(),
                folder,
                f"hf.co/{route.repo}@{route.commit[:12]}",
                fallback=wanted.fallback,
                provenance=provenance,
                weights=wanted.model.weights if is_checkpoint(Path(plan.network)) else None,
                quantize=wanted.model.quantize,
                tried=_quantizing(fetch.report, fetch.cancelled),
                progress=_throttled(lambda done, total: fetch.report(Converting(done, total)), fetch.cancelled),
            )
        except DiskFull as exc:
            raise DiskFilled(str(exc), kept_size(self.store.layout, route.repo)) from exc
        except CreateError as exc:
            raise ConversionFailed(route.repo, str(exc)) from exc
        shutil.rmtree(self.store.layout.repo_download(route.repo), ignore_errors=True)
        return record

    def _checked(self, route: Route) -> DownloadPlan:
        """The route's plan, once a checkpoint's config.json names an architecture ovembed converts and its
        index, if any, has added the shards it names."""
        plan = route.plan
        if not is_checkpoint(Path(plan.network)):
            return plan
        try:
            config = json.loads(self.hub.download(route.repo, route.commit, "config.json").read_text(encoding="utf-8"))
            builder_for(config if isinstance(config, dict) else {})
        except ValueError as exc:  # ArchitectureError, or a config.json that is not JSON
            raise ArchitectureUnsupported(route.repo, str(exc)) from exc
        if not is_checkpoint_index(plan.network):
            return plan
        try:
            index = self.hub.download(route.repo, route.commit, plan.network).read_text(encoding="utf-8")
            shards = {str(shard) for shard in json.loads(index)["weight_map"].values()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IndexDamaged(route.repo, plan.network, str(exc)) from exc
        sharded = with_shards(plan, list(route.listed), shards)
        if sharded is None:
            raise ShardsMissing(route.repo, plan.network)
        return sharded

    def _check_disk(self, repo: str, plan: DownloadPlan) -> None:
        """Room for what is still to download and for the converted model beside it; files already in the
        download cache (a pull cut off before) count as downloaded."""
        cache = self.store.layout.downloads
        cache.mkdir(parents=True, exist_ok=True)
        blobs = self.store.layout.repo_download(repo) / "blobs"
        fetched = sum(f.size for f in plan.files if (blobs / (f.sha256 or f.git_sha1 or "-")).is_file())
        needed = plan.total_size - fetched + int(plan.total_size * _CONVERTED_FACTOR)
        if free_bytes(cache) < needed:
            raise DiskTooSmall(disk_full_message(f"pulling hf.co/{repo}", self.store.root, needed))

    def _download(self, route: Route, plan: DownloadPlan, fetch: _Fetch) -> Path:
        """Every file of the plan, one after another as Ollama shows layers; the folder they are in."""
        folder: Path | None = None
        for remote in plan.files:

            def send(done: int, _total: int = 0, remote: RemoteFile = remote) -> None:
                fetch.report(FileProgress(remote.digest, remote.size, done))

            send(0)
            step = _throttled(send, fetch.cancelled)
            path = self.hub.download(
                route.repo, route.commit, remote.path, lambda done, step=step, size=remote.size: step(done, size)
            )
            send(remote.size)  # a cached file never reaches the progress bar
            folder = path.parents[len(Path(remote.path).parts) - 1]
        assert folder is not None
        return folder

    def _verify(self, folder: Path, plan: DownloadPlan) -> None:
        """Each file against the hub's own hash: sha256 for LFS files, the git blob id for the rest."""
        for remote in plan.files:
            path = folder / remote.path
            actual = file_sha256(path) if remote.sha256 else _git_blob_sha1(path)
            expected = remote.sha256 or remote.git_sha1
            if expected and actual != expected:
                path.resolve().unlink(missing_ok=True)
                path.unlink(missing_ok=True)
                raise DigestMismatch(remote.path)
