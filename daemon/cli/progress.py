"""The progress `ovembed pull` prints on stderr, drawn as the ollama CLI draws it.

Formatting (`spinner_line`, `bar_line`, `format_eta`) is pure so tests can check exact strings; `PullProgress`
keeps the lines' state and does the writing, with the clock injected so tests need neither a daemon nor sleeps.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from modelstore.sizes import human_bytes

SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
REDRAW_SECONDS = 0.1
DEFAULT_WIDTH = 80  # Ollama's width when stderr is not a terminal
RATE_BUCKETS = 10  # one sample a second: the rate is over the last ten seconds, as Ollama's bar has it
DONE_PADDING = 25  # the done suffix keeps the width of a running one's "  999 MB/s  99h99m"

HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
CURSOR_UP, LINE_START, ERASE_LINE = "\x1b[A", "\x1b[1G", "\x1b[K"


def format_eta(seconds: int) -> str:
    """Go's Duration.String for whole seconds ("1m30s", "12s"), hours as "2h5m", and "99h+" beyond."""
    if seconds >= 100 * 3600:
        return "99h+"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds // 60 % 60}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60}s"
    return f"{max(seconds, 0)}s"


def spinner_line(status: str, frame: int | None) -> str:
    """`"<status> ⠋ "` while running, `"<status> "` once stopped (frame None)."""
    line = f"{status.strip()} "
    return line if frame is None else f"{line}{SPINNER_FRAMES[frame % len(SPINNER_FRAMES)]} "


def bar_line(label: str, total: int, completed: int, width: int, rate: float = 0.0, done: bool = False) -> str:
    """One bar sized to `width` columns: `label  50% ▕███   ▏ 137 MB/274 MB  12 MB/s  11s`."""
    completed = min(completed, total)
    percent = completed / total * 100 if total > 0 else 0.0
    prefix = f"{label} {percent:3.0f}%"
    if done:
        suffix = f"{human_bytes(total):>6}" + " " * DONE_PADDING
    else:
        suffix = f"{human_bytes(completed):>6}/{human_bytes(total):>6}"
        if rate > 0:
            suffix += f"  {human_bytes(int(rate))}/s  {format_eta(int((total - completed) / rate))}"
    room = width - len(prefix) - len(suffix) - 5  # the two bar ends and a space either side
    filled = max(int(room * percent / 100), 0)
    return f"{prefix} ▕{'█' * filled}{' ' * (room - filled)}▏ {suffix}"


@dataclass
class Spinner:
    """A plain status line; its frame follows the clock so a fake clock gives a known frame."""

    status: str
    started: float
    stopped: bool = False

    def render(self, now: float) -> str:
        frame = None if self.stopped else int((now - self.started) / REDRAW_SECONDS + 1e-9)
        return spinner_line(self.status, frame)


@dataclass
class Bar:
    """One layer's download: samples at most once a second feed the rate, as in Ollama's progress.Bar."""

    label: str
    total: int
    completed: int = 0
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=RATE_BUCKETS))
    printed_step: int = -1  # the last quarter written when not on a terminal

    @property
    def done(self) -> bool:
        return self.completed >= self.total

    @property
    def percent(self) -> float:
        return self.completed / self.total * 100 if self.total > 0 else 0.0

    def set(self, completed: int, now: float) -> None:
        self.completed = min(completed, self.total)
        if not self.samples or now - self.samples[-1][0] >= 1.0 - 1e-9:
            self.samples.append((now, self.completed))

    def rate(self) -> float:
        (first_time, first_value), (last_time, last_value) = self.samples[0], self.samples[-1]
        return (last_value - first_value) / (last_time - first_time) if last_time > first_time else 0.0

    def render(self, width: int) -> str:
        return bar_line(self.label, self.total, self.completed, width, 0.0 if self.done else self.rate(), self.done)


def _layer_label(digest: str) -> str:
    """`pulling 970aa74c0a90:`: the first 12 hex digits after the algorithm (sha256, or sha1 for small files)."""
    return f"pulling {digest.rpartition(':')[2].strip()[:12]}:"


class PullProgress:
    """Renders a stream of /api/pull status objects as the ollama CLI does.

    On a terminal the whole block is redrawn in place every 100 ms with ANSI cursor moves, spinners animating.
    Anywhere else (CI, journald, a pipe) cursor moves would be garbage, so each line is written once instead: a
    status when it starts, and a bar only as it reaches each 0/25/50/75/100 % step, trailing padding stripped.
    """

    def __init__(
        self,
        stream: TextIO,
        is_terminal: bool,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ) -> None:
        self._stream, self._is_terminal, self._clock, self._width = stream, is_terminal, clock, width
        self._lines: list[Spinner | Bar] = []
        self._bars: dict[str, Bar] = {}
        self._spinner: Spinner | None = None
        self._status = ""
        self._drawn_lines = 0
        self._last_draw: float | None = None
        self._finished = False
        self._lock = threading.Lock()

    def update(self, event: dict[str, Any]) -> None:
        """Apply one status object: a digest line moves its bar, a new status starts a spinner, and a status
        with a total (the conversion) turns its spinner into a bar."""
        with self._lock:
            now = self._clock()
            digest, status = event.get("digest") or "", event.get("status") or ""
            total, completed = int(event.get("total") or 0), int(event.get("completed") or 0)
            if digest:
                self._move_bar(digest, _layer_label(digest), total, completed, now)
            elif status and total:
                self._move_bar(status, status, total, completed, now)
            elif status and status != self._status:
                self._stop_spinner()
                self._status = status
                self._spinner = Spinner(status, now)
                self._lines.append(self._spinner)
                if not self._is_terminal:
                    self._write(spinner_line(status, None).rstrip() + "\n")
            self._redraw_if_due(now)

    def tick(self) -> None:
        """Redraw if 100 ms have passed, so spinners turn while the daemon is quiet."""
        with self._lock:
            self._redraw_if_due(self._clock())

    def finish(self) -> None:
        """Stop the spinners, draw the final block and end its line; safe to call twice."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            self._stop_spinner()
            if self._is_terminal and self._lines:
                self._draw(self._clock())
                self._write("\n" + SHOW_CURSOR)

    @contextmanager
    def animated(self, interval: float = REDRAW_SECONDS) -> Iterator[None]:
        """Tick from a background thread while the body blocks reading the stream; only on a terminal."""
        if not self._is_terminal:
            yield
            return
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(interval):
                self.tick()

        thread = threading.Thread(target=run, name="pull-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _stop_spinner(self) -> None:
        if self._spinner is not None:
            self._spinner.stopped = True
            self._spinner = None

    def _move_bar(self, key: str, label: str, total: int, completed: int, now: float) -> None:
        if completed == 0:
            return  # Ollama shows nothing for a layer until bytes arrive
        if self._spinner is not None and self._spinner.status == key:
            self._lines.remove(self._spinner)  # the status's bar takes the place of its spinner
        self._stop_spinner()
        bar = self._bars.get(key)
        if bar is None:
            bar = self._bars[key] = Bar(label, total)
            self._lines.append(bar)
        bar.set(completed, now)
        if not self._is_terminal:
            self._log_bar(bar)

    def _log_bar(self, bar: Bar) -> None:
        step = 4 if bar.done else min(int(bar.percent // 25), 3)
        if step > bar.printed_step:
            bar.printed_step = step
            self._write(bar.render(self._columns()).rstrip() + "\n")

    def _redraw_if_due(self, now: float) -> None:
        due = self._last_draw is None or now - self._last_draw >= REDRAW_SECONDS - 1e-9
        if self._is_terminal and self._lines and not self._finished and due:
            self._draw(now)

    def _draw(self, now: float) -> None:
        columns = self._columns()
        parts = [HIDE_CURSOR] if self._last_draw is None else []
        parts.append(CURSOR_UP * max(self._drawn_lines - 1, 0) + LINE_START)
        # a line wider than the terminal would wrap and throw the cursor-up count off
        texts = (line.render(now) if isinstance(line, Spinner) else line.render(columns) for line in self._lines)
        parts.append("\n".join(text[: columns - 1] + ERASE_LINE for text in texts))
        self._write("".join(parts))
        self._drawn_lines, self._last_draw = len(self._lines), now

    def _columns(self) -> int:
        if self._width is not None:
            return self._width
        if self._is_terminal:
            try:
                return os.get_terminal_size(self._stream.fileno()).columns
            except (AttributeError, OSError, ValueError):
                pass
        return DEFAULT_WIDTH

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()
