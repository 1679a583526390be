"""Why a pull stopped, as exceptions carrying fields: the edge words them for clients, `str()` is for logs.

Three families say what the client should do: not found (no such name, repo, revision or file), unsupported
(the model exists but does not convert), unreachable (no connection, or offline mode); any other `PullError`
is a failure along the way. What a failed pull kept for the next one is `kept_bytes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


class PullError(Exception):
    """A pull that cannot finish."""

    log_line: ClassVar[str] = "the pull failed"

    def __str__(self) -> str:
        return self.log_line.format(**vars(self))


class PullNotFound(PullError):
    """No such model: an unknown name, or a repo, revision or file the hub does not have or will not give."""


class PullUnsupported(PullError):
    """The model exists but ovembed cannot serve it yet."""


class HubUnreachable(PullError):
    """The hub could not be asked: no connection, or offline mode."""


@dataclass(eq=False)
class UnknownName(PullNotFound):
    name: str  # as displayed, with its tag
    log_line: ClassVar[str] = "{name} is neither in the catalog nor a hf.co/ name"


@dataclass(eq=False)
class RepoNotFound(PullNotFound):
    repo: str
    log_line: ClassVar[str] = "the hub has no repository {repo}"


@dataclass(eq=False)
class RevisionNotFound(PullNotFound):
    repo: str
    revision: str
    log_line: ClassVar[str] = "the hub has no revision {revision} of {repo}"


@dataclass(eq=False)
class RepoGated(PullNotFound):
    repo: str
    log_line: ClassVar[str] = "{repo} is gated and the token given (if any) may not read it"


@dataclass(eq=False)
class FileNotFound(PullNotFound):
    repo: str
    commit: str
    file: str
    log_line: ClassVar[str] = "the hub has no {file} in {repo} at {commit}"


@dataclass(eq=False)
class ShardsMissing(PullNotFound):
    repo: str
    index: str
    log_line: ClassVar[str] = "{repo}'s {index} names shards the repo does not have"


@dataclass(eq=False)
class NothingToConvert(PullUnsupported):
    repo: str
    log_line: ClassVar[str] = "{repo} has no IR, no ONNX export and no safetensors checkpoint"


@dataclass(eq=False)
class ArchitectureUnsupported(PullUnsupported):
    repo: str
    reason: str
    log_line: ClassVar[str] = "{repo}'s checkpoint does not convert: {reason}"


@dataclass(eq=False)
class IndexDamaged(PullUnsupported):
    repo: str
    index: str
    reason: str
    log_line: ClassVar[str] = "{repo}'s {index} does not read: {reason}"


@dataclass(eq=False)
class HubOffline(HubUnreachable):
    log_line: ClassVar[str] = "HF_HUB_OFFLINE is set"


@dataclass(eq=False)
class ConnectionBroke(HubUnreachable):
    repo: str
    file: str | None  # None: asking about the repo, not fetching a file
    reason: str
    kept_bytes: int
    log_line: ClassVar[str] = "the connection broke fetching {file} of {repo} ({reason}); {kept_bytes} bytes kept"


@dataclass(eq=False)
class HubRefused(PullError):
    repo: str
    file: str | None  # None: asking about the repo, not fetching a file
    status: int | None  # None: an error without a response
    log_line: ClassVar[str] = "the hub answered {status} for {file} of {repo}"


@dataclass(eq=False)
class DigestMismatch(PullError):
    file: str
    log_line: ClassVar[str] = "{file} does not match the hub's hash; it was removed"


@dataclass(eq=False)
class ConversionFailed(PullError):
    repo: str
    reason: str
    log_line: ClassVar[str] = "{repo} was downloaded but does not convert: {reason}"


@dataclass(eq=False)
class DiskTooSmall(PullError):
    """Refused before downloading: what the pull needs does not fit."""

    disk: str  # diskspace.disk_full_message: how much is needed and free, and what to do
    log_line: ClassVar[str] = "{disk}"


@dataclass(eq=False)
class DiskFilled(PullError):
    """The disk filled up while the pull downloaded or converted."""

    disk: str  # diskspace.disk_full_message
    kept_bytes: int
    log_line: ClassVar[str] = "{disk} ({kept_bytes} bytes kept)"


class PullCancelled(Exception):
    """Every pull waiting for the model went away."""
