"""Go's time.ParseDuration, because Ollama's keep_alive strings are Go durations."""

from __future__ import annotations

import re

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d*\.?\d*)([^\d.]*)")


class DurationError(ValueError):
    """Carries Go's own message, which Ollama returns to the client verbatim."""


def parse_go_duration(text: str) -> float:
    """Seconds for a Go duration such as `5m`, `1h30m`, `-1s` or `300ms`."""
    rest = text
    sign = 1.0
    if rest[:1] in ("+", "-"):
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise DurationError(f'time: invalid duration "{text}"')
    total = 0.0
    while rest:
        match = _PART.match(rest)  # always matches, possibly empty
        assert match is not None
        number, unit = match.groups()
        if number in ("", "."):
            raise DurationError(f'time: invalid duration "{text}"')
        if not unit:
            raise DurationError(f'time: missing unit in duration "{text}"')
        if unit not in _UNITS:
            raise DurationError(f'time: unknown unit "{unit}" in duration "{text}"')
        total += float(number) * _UNITS[unit]
        rest = rest[match.end() :]
    return sign * total
