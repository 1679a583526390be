"""The hub as a pull asks it: a revision's commit, a commit's files, one file into the download cache.

Every huggingface_hub error comes out as a typed pull error with the repo, revision or file it concerns, and
what a failed download leaves for the next pull.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx2
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from huggingface_hub.errors import RevisionNotFoundError as HubRevisionNotFound
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import tqdm as hub_tqdm

from modelstore.diskspace import disk_full_message, is_disk_full
from modelstore.downloads import kept_size
from modelstore.hubfiles import RemoteFile
from modelstore.layout import StoreLayout
from modelstore.pull_errors import (
    ConnectionBroke,
    DiskFilled,
    FileNotFound,
    HubOffline,
    HubRefused,
    PullCancelled,
    RepoGated,
    RepoNotFound,
    RevisionNotFound,
)

T = TypeVar("T")


def _progress_bar(report: Callable[[int], None]) -> type[hub_tqdm]:
    """A tqdm class for huggingface_hub that forwards the bytes done to `report` instead of drawing."""

    class Bar(hub_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            self.done = int(kwargs.get("initial") or 0)
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)
            report(self.done)
            return None

    return Bar


class Hub:
    """One hub endpoint, downloading into one store's download cache; blocking."""

    def __init__(self, layout: StoreLayout, endpoint: str | None = None, token: str | None = None) -> None:
        self.layout = layout
        self.endpoint = endpoint
        self.token = token
        self.api = HfApi(endpoint=endpoint, token=token)

    def commit(self, repo: str, revision: str) -> str:
        """The commit a branch, tag or commit names now."""
        return self._call(repo, revision, lambda: str(self.api.model_info(repo, revision=revision).sha))

    def files(self, repo: str, commit: str) -> list[RemoteFile]:
        """Every file of the repo at the commit, with the hashes the hub knows."""
        entries = self._call(repo, commit, lambda: list(self.api.list_repo_tree(repo, revision=commit, recursive=True)))
        return [
            RemoteFile(e.path, int(e.size), e.lfs.sha256 if e.lfs else None, e.blob_id)
            for e in entries
            if isinstance(e, RepoFile)
        ]

    def download(self, repo: str, commit: str, path: str, progress: Callable[[int], None] | None = None) -> Path:
        """One file of the repo into the download cache (at once if it is there already); `progress` is told the
        bytes done as they arrive, and may raise PullCancelled to stop."""
        call = partial(
            hf_hub_download,
            repo,
            path,
            revision=commit,
            cache_dir=self.layout.downloads,
            endpoint=self.endpoint,
            token=self.token,
            tqdm_class=None if progress is None else _progress_bar(progress),
        )
        return Path(self._call(repo, commit, call, path))

    def _call(self, repo: str, revision: str, call: Callable[[], T], file: str | None = None) -> T:
        """Run one huggingface_hub call, its errors turned into typed pull errors."""
        try:
            return call()
        except PullCancelled:
            raise
        except GatedRepoError as exc:
            raise RepoGated(repo) from exc
        except RepositoryNotFoundError as exc:
            raise RepoNotFound(repo) from exc
        except HubRevisionNotFound as exc:
            raise RevisionNotFound(repo, revision) from exc
        except EntryNotFoundError as exc:
            raise FileNotFound(repo, revision, file or "") from exc
        except OfflineModeIsEnabled as exc:
            raise HubOffline() from exc
        except HfHubHTTPError as exc:
            raise HubRefused(repo, file, exc.response.status_code if exc.response is not None else None) from exc
        except (httpx2.TransportError, ConnectionError) as exc:
            raise ConnectionBroke(repo, file, str(exc), kept_size(self.layout, repo)) from exc
        except OSError as exc:
            if is_disk_full(exc, self.layout.root):
                where = f"downloading {file} from hf.co/{repo}"
                raise DiskFilled(disk_full_message(where, self.layout.root), kept_size(self.layout, repo)) from exc
            raise
