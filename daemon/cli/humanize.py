"""Ollama's CLI formats for times and tables, so `ovembed list` reads like `ollama list` (sizes: modelstore.sizes)."""

from __future__ import annotations

from datetime import UTC, datetime


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "Less than a second"
    if seconds < 2:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = seconds / 60
    if minutes < 2:
        return "About a minute"
    if minutes < 60:
        return f"{int(minutes)} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 336:
        return f"{hours // 24} days"
    if hours < 1440:
        return f"{hours // 24 // 7} weeks"
    if hours < 17520:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def human_time(moment: datetime, now: datetime | None = None) -> str:
    """`2 minutes ago`, `4 minutes from now`, or `Forever` for a keep_alive that never ends."""
    now = now or datetime.now(UTC)
    delta = (moment - now).total_seconds()
    if delta > 20 * 365 * 86400:
        return "Forever"
    if delta > 0:
        return f"{_duration(delta)} from now"
    return f"{_duration(-delta)} ago"


def table(rows: list[list[str]]) -> str:
    """Left-aligned columns separated by four spaces, as Ollama's tablewriter prints them."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["    ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)
