"""The pulls' download cache: kept after a failed pull so the next one resumes, removed on demand.

A pull holds an advisory lock on its repo's download for as long as it runs, so `ovembed pull --prune`,
run from a terminal beside the daemon, removes only downloads no pull is using.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from modelstore.layout import REPO_DOWNLOAD_PREFIX, StoreLayout


@dataclass(frozen=True)
class KeptDownload:
    repo: str  # "org/name"
    size: int  # bytes of finished files


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def kept_size(layout: StoreLayout, repo: str) -> int:
    """Bytes a pull of `repo` has downloaded and kept, 0 when nothing is kept."""
    folder = layout.repo_download(repo)
    return _folder_size(folder) if folder.is_dir() else 0


def kept_downloads(layout: StoreLayout) -> list[KeptDownload]:
    """Every repo with files kept in the download cache."""
    if not layout.downloads.is_dir():
        return []
    folders = sorted(p for p in layout.downloads.iterdir() if p.is_dir() and p.name.startswith(REPO_DOWNLOAD_PREFIX))
    repos = [f.name.removeprefix(REPO_DOWNLOAD_PREFIX).replace("--", "/") for f in folders]
    return [KeptDownload(repo, _folder_size(folder)) for repo, folder in zip(repos, folders, strict=True)]


@contextlib.contextmanager
def _lock(layout: StoreLayout, repo: str, *, wait: bool) -> Iterator[bool]:
    """The repo's pull lock; yields whether it was taken (always, when `wait`)."""
    path = layout.download_lock(repo)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def pulling(layout: StoreLayout, repo: str) -> Iterator[None]:
    """Held by a pull from its first download to the end of its conversion."""
    with _lock(layout, repo, wait=True):
        yield


def prune(layout: StoreLayout) -> tuple[list[KeptDownload], list[KeptDownload]]:
    """Remove every kept download no running pull holds; returns (removed, in use)."""
    removed: list[KeptDownload] = []
    in_use: list[KeptDownload] = []
    for kept in kept_downloads(layout):
        with _lock(layout, kept.repo, wait=False) as taken:
            if not taken:
                in_use.append(kept)
                continue
            shutil.rmtree(layout.repo_download(kept.repo), ignore_errors=True)
            shutil.rmtree(layout.hub_locks(kept.repo), ignore_errors=True)
            removed.append(kept)
    return removed, in_use


def sweep_partials(layout: StoreLayout) -> None:
    """Remove partial files a killed pull left behind; finished files stay for the next pull."""
    if layout.downloads.is_dir():
        for partial in layout.downloads.rglob("*.incomplete"):
            partial.unlink(missing_ok=True)
