"""Whether the daemon can serve now, as plain facts for the edge to word: the preload's progress, the stop, and
the lanes the watchdog found stuck. Read from what is held in memory, so a balancer may poll it every second."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Preloading:
    """OVEMBED_PRELOAD's progress, kept by the preload as it goes: a name is done once loaded or failed."""

    names: tuple[str, ...] = ()
    done: int = 0
    now: str | None = None  # the model loading now, as its record names it
    failed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Health:
    """A snapshot: the preload's names and progress, whether a stop has begun, and the models whose lane is
    stuck (a batch abandoned, the model being compiled again); `loaded` are the models loaded now."""

    preload: tuple[str, ...]
    preloaded: int
    loading: str | None
    preload_failed: tuple[str, ...]
    draining: bool
    stuck: tuple[str, ...]
    loaded: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return self.preloaded >= len(self.preload) and not self.draining and not self.stuck
