"""What a pull reports as it goes: one small type a step, so the store says what happens and the edge says it
in Ollama's words."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Resolving:
    """The name is being turned into a repo and a commit."""


@dataclass(frozen=True)
class FileProgress:
    """`completed` of a file's `size` bytes are here; `digest` is the hub's hash of it (sha256:, or sha1: for a
    small file the hub knows only by its git blob id)."""

    digest: str
    size: int
    completed: int


@dataclass(frozen=True)
class Verifying:
    """Every file is here and is being checked against the hub's hash."""


@dataclass(frozen=True)
class Converting:
    """The network is being converted; `done` of `total` checkpoint bytes are read, when a checkpoint is."""

    done: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class Quantizing:
    """The converted network is being made int8; `kept_in_float` says which candidate is being tried."""

    kept_in_float: str


@dataclass(frozen=True)
class Writing:
    """The model is stored; its name is being written."""


@dataclass(frozen=True)
class Done:
    """The model is in the store under the name pulled."""


PullEvent = Resolving | FileProgress | Verifying | Converting | Quantizing | Writing | Done
Report = Callable[[PullEvent], None]


def slot(event: PullEvent) -> object:
    """What a newer event replaces: the same file's progress, or the same step."""
    return event.digest if isinstance(event, FileProgress) else type(event)
