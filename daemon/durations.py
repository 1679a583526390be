"""Go's time.ParseDuration and Ollama's keep_alive rules, for the keep_alive field and OLLAMA_KEEP_ALIVE."""

from __future__ import annotations

import math
import re

_UNIT_NANOSECONDS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_PART = re.compile(r"(\d*\.?\d*)([^\d.]*)")
# A Go time.Duration is an int64 of nanoseconds: about 292 years.
MAX_DURATION_SECONDS = (2**63 - 1) / 1e9


class DurationError(ValueError):
    """Carries Go's own message, which Ollama returns to the client verbatim."""


def parse_go_duration(text: str) -> float:
    """Seconds for a Go duration such as `5m`, `1h30m`, `-1s` or `300ms`; past int64 nanoseconds is an error."""
    rest = text
    sign = 1.0
    if rest[:1] in ("+", "-"):
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise DurationError(f'time: invalid duration "{text}"')
    nanoseconds = 0.0
    while rest:
        match = _PART.match(rest)  # always matches, possibly empty
        assert match is not None
        number, unit = match.groups()
        if number in ("", "."):
            raise DurationError(f'time: invalid duration "{text}"')
        if not unit:
            raise DurationError(f'time: missing unit in duration "{text}"')
        if unit not in _UNIT_NANOSECONDS:
            raise DurationError(f'time: unknown unit "{unit}" in duration "{text}"')
        nanoseconds += float(number) * _UNIT_NANOSECONDS[unit]
        rest = rest[match.end() :]
    if nanoseconds > (2**63 if sign < 0 else 2**63 - 1):
        raise DurationError(f'time: invalid duration "{text}"')
    return sign * nanoseconds / 1e9


def keep_alive_seconds(seconds: float) -> float:
    """Ollama's reading of a keep_alive: negative is forever, and so is anything past Go's longest duration."""
    if seconds < 0 or seconds > MAX_DURATION_SECONDS:
        return math.inf
    return seconds
