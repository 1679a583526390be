"""Sizes as Ollama writes them, for the store's messages and the CLI's tables and bars."""

from __future__ import annotations

_UNITS = (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3))


def human_bytes(size: int) -> str:
    """Decimal units; whole numbers from 10 up, one decimal below ("45 MB", "9.9 MB")."""
    for unit, scale in _UNITS:
        if size >= scale:
            value = size / scale
            if value >= 10 or value.is_integer():
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{size} B"
