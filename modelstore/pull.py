"""`ollama pull` for Hugging Face: resolve the name, fetch only what converts, verify, and create the model.

Downloads go through huggingface_hub into a cache under the store, so a pull cut off by a hub error, a
disconnect or a SIGKILL keeps the files that finished and the next pull fetches only the rest. The model
enters the store through `create_from_folder`, the same atomic path as `ovembed create`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx2
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import tqdm as hub_tqdm

from modelstore.architectures import builder_for
from modelstore.catalog import CatalogEntry, lookup
from modelstore.create import CreateError, DiskFull, create_from_folder
from modelstore.diskspace import disk_full_message, free_bytes, is_disk_full
from modelstore.downloads import kept_size, pulling
from modelstore.hubfiles import DownloadPlan, RemoteFile, plan_download, with_shards
from modelstore.layout import is_checkpoint, is_checkpoint_index
from modelstore.names import ModelName
from modelstore.sizes import human_bytes
from modelstore.spec import ModelDescription
from modelstore.store import ModelRecord, ModelStore, file_sha256

log = logging.getLogger(__name__)

# A few updates a second per file is smooth for a progress bar and cheap for the stream.
_REPORT_INTERVAL = 0.2
# Conversion writes a second copy of the network beside the download, with room to spare.
_CONVERTED_FACTOR = 1.2
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PullStatus:
    """One progress message, in the shape of Ollama's pull stream."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class PullError(Exception):
    """A pull that cannot finish, said in words a person can act on."""


class PullNotFound(PullError):
    """No such model: an unknown name, or a repo, revision or file the hub does not have or will not give."""


class PullUnsupported(PullError):
    """The model exists but ovembed cannot serve it yet."""


class HubUnreachable(PullError):
    """The hub could not be asked: no connection, or offline mode."""


class PullCancelled(Exception):
    """Every client waiting on the pull went away."""


Report = Callable[[PullStatus], None]


@dataclass(frozen=True)
class HubSource:
    """Where a name's files come from."""

    repo: str
    revision: str
    entry: CatalogEntry | None

    @property
    def weights(self) -> str | None:
        """The catalog's weight format for a converted checkpoint; None is the converter's default."""
        return self.entry.weights if self.entry else None

    @property
    def fallback(self) -> ModelDescription | None:
        """The catalog's description, used only where the repo's own configs are silent."""
        return self.entry.description if self.entry else None


def resolve_source(name: ModelName) -> HubSource:
    """The Hugging Face repo behind a name: `hf.co/ORG/REPO[:REVISION]`, or an Ollama library name."""
    if name.is_huggingface:
        assert name.hf_repo is not None
        revision = "main" if name.tag.lower() == "latest" else name.tag
        return HubSource(name.hf_repo, revision, None)
    entry = lookup(name)
    if entry is None:
        raise PullNotFound(
            f"pull model manifest: file does not exist: ovembed does not know {name.display}; "
            "pull an Ollama embedding model (all-minilm, nomic-embed-text, mxbai-embed-large, bge-m3, ...) "
            "or any sentence-transformers repo as hf.co/ORG/REPO",
        )
    return HubSource(entry.repo, entry.revision, entry)


def _throttled(forward: Callable[[int, int], None], cancelled: Callable[[], bool]) -> Callable[[int, int], None]:
    """Progress at most every _REPORT_INTERVAL (and at the end); PullCancelled once the pull is cancelled."""
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


def _progress_bar(report: Callable[[int, int | None], None]) -> type[hub_tqdm]:
    """A tqdm class for huggingface_hub that forwards bytes to `report` instead of drawing."""

    class Bar(hub_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            self.done = int(kwargs.get("initial") or 0)
            self.size = kwargs.get("total")
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)
            report(self.done, self.size)
            return None

    return Bar


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    digest.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Puller:
    """Pulls into one store from one hub endpoint; blocking, meant for a worker thread."""

    def __init__(self, store: ModelStore, endpoint: str | None = None, token: str | None = None) -> None:
        self.store = store
        self.endpoint = endpoint
        self.token = token
        self.cache = store.layout.downloads
        self.api = HfApi(endpoint=endpoint, token=token)

    def pull(self, name: ModelName, report: Report, cancelled: Callable[[], bool] = lambda: False) -> ModelRecord:
        report(PullStatus("pulling manifest"))
        source = resolve_source(name)
        present = self.store.get(name)
        try:
            commit = self._commit(source)
        except HubUnreachable as error:
            if present is not None:
                log.warning("hub unreachable; %s is already present: %s", name.display, error)
                return self._finish_present(present, report)
            raise
        present = self._fetched(name, source, commit)
        if present is not None:
            return self._finish_present(present, report)

        def waiting() -> None:
            if cancelled():
                raise PullCancelled()

        with pulling(self.store.layout, source.repo, waiting):
            # Another name for the same model may have been pulled while this one waited for the lock.
            present = self._fetched(name, source, commit)
            if present is not None:
                return self._finish_present(present, report)
            repo, fetched_commit, plan = self._plan(source, commit)
            # A mirror's files are downloaded under its own name, so they are held too.
            with pulling(self.store.layout, repo, waiting) if repo != source.repo else contextlib.nullcontext():
                return self._fetch_and_create(name, source, commit, repo, fetched_commit, plan, report, cancelled)

    def _fetched(self, name: ModelName, source: HubSource, commit: str) -> ModelRecord | None:
        """This name, or a copy under it of another name for the same repo, commit and weights, if stored."""
        wanted = (source.repo, commit, source.weights)
        fetched = [
            r
            for r in self.store.list()
            if (r.extra.get("hf_repo"), r.extra.get("hf_commit"), r.extra.get("weights")) == wanted
        ]
        if not fetched:
            return None
        return next((r for r in fetched if r.name.key == name.key), None) or self.store.copy(fetched[0], name)

    def _fetch_and_create(
        self,
        name: ModelName,
        source: HubSource,
        commit: str,
        repo: str,
        fetched_commit: str,
        plan: DownloadPlan,
        report: Report,
        cancelled: Callable[[], bool],
    ) -> ModelRecord:
        self._check_disk(repo, plan)
        folder = self._download(repo, fetched_commit, plan, report, cancelled)
        report(PullStatus("verifying sha256 digest"))
        self._verify(folder, plan)
        converting = "converting to OpenVINO IR"
        report(PullStatus(converting))
        # Keyed on the name's own repo and commit, even when a mirror supplied the files, so the next pull of
        # any tag for them finds this model.
        extra = {
            "hf_repo": source.repo,
            "hf_commit": commit,
            "layers": [{"digest": f.digest, "size": f.size} for f in plan.files],
        }
        if source.weights:  # kept even when the repo's own export was used, so the next pull knows this one
            extra["weights"] = source.weights
        try:
            record = create_from_folder(
                self.store,
                name,
                folder,
                f"hf.co/{repo}@{fetched_commit[:12]}",
                fallback=source.fallback,
                extra=extra,
                weights=source.weights if is_checkpoint(Path(plan.network)) else None,
                progress=_throttled(lambda done, total: report(PullStatus(converting, None, total, done)), cancelled),
            )
        except DiskFull as exc:
            raise PullError(f"{exc} ({self._kept(repo)})") from exc
        except CreateError as exc:
            raise PullError(f"hf.co/{repo} downloaded but could not be converted: {exc}") from exc
        report(PullStatus("writing manifest"))
        shutil.rmtree(self.store.layout.repo_download(repo), ignore_errors=True)
        report(PullStatus("success"))
        return record

    def _finish_present(self, record: ModelRecord, report: Report) -> ModelRecord:
        """Ollama reports each layer of a model it already has once, complete."""
        for layer in record.extra.get("layers", []):
            digest = str(layer["digest"])
            size = int(layer["size"])
            report(PullStatus(f"pulling {digest.split(':')[-1][:12]}", digest, size, size))
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            report(PullStatus(status))
        return record

    def _commit(self, source: HubSource) -> str:
        return self._hub_call(
            source.repo, source.revision, lambda: self.api.model_info(source.repo, revision=source.revision).sha
        )

    def _files(self, repo: str, commit: str) -> list[RemoteFile]:
        entries = self._hub_call(
            repo, commit, lambda: list(self.api.list_repo_tree(repo, revision=commit, recursive=True))
        )
        return [
            RemoteFile(e.path, int(e.size), e.lfs.sha256 if e.lfs else None, e.blob_id)
            for e in entries
            if isinstance(e, RepoFile)
        ]

    def _plan(self, source: HubSource, commit: str) -> tuple[str, str, DownloadPlan]:
        """The repo's own IR or ONNX, else the catalog's pre-converted mirror, else the repo's safetensors."""
        files = self._files(source.repo, commit)
        plan = plan_download(files)
        if plan is not None:
            return source.repo, commit, plan
        for mirror in source.entry.mirrors if source.entry else ():
            mirror_commit = self._hub_call(mirror, "main", lambda m=mirror: self.api.model_info(m, revision="main").sha)
            plan = plan_download(self._files(mirror, mirror_commit))
            if plan is not None:
                return mirror, mirror_commit, plan
        plan = plan_download(files, checkpoint=True)
        if plan is not None:
            self._check_architecture(source.repo, commit)
            if is_checkpoint_index(plan.network):
                shards = self._shards(source.repo, commit, plan.network)
                sharded = with_shards(plan, files, shards)
                if sharded is None:
                    raise PullNotFound(f"hf.co/{source.repo}: {plan.network} names shards the repo does not have")
                plan = sharded
            return source.repo, commit, plan
        raise PullUnsupported(
            f"hf.co/{source.repo} has no OpenVINO IR (openvino/openvino_model.xml), no ONNX export "
            "(onnx/model.onnx) and no safetensors checkpoint (model.safetensors), which are what ovembed "
            "converts without PyTorch. Export one elsewhere with "
            f"`optimum-cli export openvino --task feature-extraction -m {source.repo} DIR`, then run "
            "`ovembed create NAME --from DIR`"
        )

    def _check_architecture(self, repo: str, commit: str) -> None:
        """Before fetching a checkpoint, its config.json must name an architecture ovembed converts."""
        try:
            config = json.loads(self._fetch(repo, commit, "config.json").read_text(encoding="utf-8"))
            builder_for(config if isinstance(config, dict) else {})
        except ValueError as exc:  # ArchitectureError, or a config.json that is not JSON
            raise PullUnsupported(f"hf.co/{repo} has only a safetensors checkpoint, and {exc}") from exc

    def _shards(self, repo: str, commit: str, index: str) -> set[str]:
        """The shard files a checkpoint's index maps its tensors to."""
        try:
            weight_map = json.loads(self._fetch(repo, commit, index).read_text(encoding="utf-8"))["weight_map"]
            return {str(shard) for shard in weight_map.values()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PullUnsupported(f"hf.co/{repo} has a damaged {index}: {exc}") from exc

    def _fetch(self, repo: str, commit: str, path: str, bar: type[hub_tqdm] | None = None) -> Path:
        """One file of the repo into the download cache (at once if it is there already)."""
        call = partial(
            hf_hub_download,
            repo,
            path,
            revision=commit,
            cache_dir=self.cache,
            endpoint=self.endpoint,
            token=self.token,
            tqdm_class=bar,
        )
        return Path(self._hub_call(repo, commit, call, path))

    def _check_disk(self, repo: str, plan: DownloadPlan) -> None:
        """Room for what is still to download and for the converted model beside it; files already in the
        download cache (a pull cut off before) count as downloaded."""
        self.cache.mkdir(parents=True, exist_ok=True)
        blobs = self.store.layout.repo_download(repo) / "blobs"
        fetched = sum(f.size for f in plan.files if (blobs / (f.sha256 or f.git_sha1 or "-")).is_file())
        needed = plan.total_size - fetched + int(plan.total_size * _CONVERTED_FACTOR)
        if free_bytes(self.cache) < needed:
            raise PullError(disk_full_message(f"pulling hf.co/{repo}", self.store.root, needed))

    def _download(
        self, repo: str, commit: str, plan: DownloadPlan, report: Report, cancelled: Callable[[], bool]
    ) -> Path:
        folder: Path | None = None
        for remote in plan.files:
            status = f"pulling {remote.digest.split(':')[-1][:12]}"

            def send(done: int, _total: int, remote: RemoteFile = remote, status: str = status) -> None:
                report(PullStatus(status, remote.digest, remote.size, done))

            send(0, remote.size)
            step = _throttled(send, cancelled)
            path = self._fetch(
                repo, commit, remote.path, _progress_bar(lambda done, _, step=step, size=remote.size: step(done, size))
            )
            send(remote.size, remote.size)  # a cached file never reaches the progress bar
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
                raise PullError(f"digest mismatch for {remote.path}: the download was corrupted; pull again")

    def _hub_call(self, repo: str, revision: str, call: Callable[[], Any], file: str | None = None) -> Any:
        """Run one huggingface_hub call, turning its errors into sentences a person can act on."""
        where = f"hf.co/{repo}"
        try:
            return call()
        except PullCancelled:
            raise
        except GatedRepoError as exc:
            raise PullNotFound(
                f"{where} is gated: accept its terms on Hugging Face, then give the daemon an access token in HF_TOKEN"
            ) from exc
        except RepositoryNotFoundError as exc:
            raise PullNotFound(f"pull model manifest: file does not exist: no repository {where}") from exc
        except RevisionNotFoundError as exc:
            raise PullNotFound(
                f"pull model manifest: file does not exist: {where} has no revision {revision!r}"
            ) from exc
        except EntryNotFoundError as exc:
            raise PullNotFound(f"{where} has no file {file!r} at {revision[:12]}") from exc
        except OfflineModeIsEnabled as exc:
            raise HubUnreachable("the daemon runs with HF_HUB_OFFLINE set, so it cannot download models") from exc
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "an error"
            target = f"{file} from {where}" if file else where
            raise PullError(f"Hugging Face answered {status} for {target}; try the pull again later") from exc
        except (httpx2.TransportError, ConnectionError) as exc:
            target = f"{file} from {where}" if file else where
            raise HubUnreachable(
                f"the connection to Hugging Face broke while fetching {target} ({exc}); {self._kept(repo)}"
            ) from exc
        except OSError as exc:
            if is_disk_full(exc, self.store.root):
                message = disk_full_message(f"downloading {file} from {where}", self.store.root)
                raise PullError(f"{message} ({self._kept(repo)})") from exc
            raise

    def _kept(self, repo: str) -> str:
        """What a failed pull leaves for the next one, and how to be rid of it."""
        size = kept_size(self.store.layout, repo)
        if not size:
            return "pull again to retry"
        kept = f"the {human_bytes(size)} downloaded so far are kept"
        return f"pull again to resume: {kept} (`ovembed pull --prune` removes them)"
