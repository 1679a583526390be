"""The pulls' download cache: kept after a failed pull so the next one resumes, removed on demand.

A pull holds an advisory lock on its repo's download for as long as it runs, so `ovembed pull --prune`,
run from a terminal beside the daemon, removes only downloads no pull is using.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from modelstore.layout import REPO_DOWNLOAD_PREFIX, StoreLayout

# How often a pull waiting for another pull of the same repo looks whether it should still wait.
_LOCK_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class KeptDownload:
    repo: str  # "org/name"
    size: int  # bytes of finished files


def _folder_size(folder: Path) -> int:
    """Bytes of the files in `folder`; a file a running pull renames meanwhile counts as gone."""
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(FileNotFoundError):
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total


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
def pulling(layout: StoreLayout, repo: str, waiting: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Held by a pull from its first download to the end of its conversion. While another pull of the same
    repo holds it, `waiting` is called every fraction of a second: raising from it stops the wait."""
    path = layout.download_lock(repo)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        while not _try_lock(handle):
            waiting()
            time.sleep(_LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def prune(layout: StoreLayout) -> tuple[list[KeptDownload], list[KeptDownload]]:
    """Remove every kept download no running pull holds; returns (removed, in use)."""
    removed: list[KeptDownload] = []
    in_use: list[KeptDownload] = []
    for kept in kept_downloads(layout):
        lock = layout.download_lock(kept.repo)
        # No lock file: no pull has run since the lock files came in, and none creates its download without it.
        # Never created here, so a prune run as root leaves nothing the service's own user cannot open.
        with contextlib.ExitStack() as held:
            if lock.is_file():
                handle = held.enter_context(lock.open("a"))
                if not _try_lock(handle):
                    in_use.append(kept)
                    continue
                held.callback(fcntl.flock, handle, fcntl.LOCK_UN)
            shutil.rmtree(layout.repo_download(kept.repo))  # a failure says why, rather than "removed"
            shutil.rmtree(layout.hub_locks(kept.repo), ignore_errors=True)
            removed.append(kept)
    return removed, in_use


def sweep_partials(layout: StoreLayout) -> None:
    """Remove partial files a killed pull left behind; finished files stay for the next pull."""
    if layout.downloads.is_dir():
        for partial in layout.downloads.rglob("*.incomplete"):
            partial.unlink(missing_ok=True)
