"""`ovembed pull`'s progress display, and `ovembed pull` / `scripts/provision` against a real HTTP server."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from daemon.cli.progress import PullProgress, bar_line, format_eta, spinner_line
from tests.conftest import OVEMBED, REPO, free_port

DIGEST_A = "sha256:970aa74c0a90" + "a" * 52
DIGEST_B = "sha256:c71d239df917" + "b" * 52
TOTAL_A = 274_290_656
TOTAL_B = 1_234_567
DONE_PAD = " " * 25


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def screen(output: str) -> list[str]:
    """What a terminal shows after `output`: enough of a VT100 for the moves the renderer uses."""
    rows: list[str] = [""]
    row = col = 0
    for token in re.findall(r"\x1b\[\??[0-9]*[A-Za-z]|\n|[^\x1b\n]+", output):
        if token == "\n":
            row, col = row + 1, 0
            if row == len(rows):
                rows.append("")
        elif token == "\x1b[A":
            row = max(row - 1, 0)
        elif token == "\x1b[1G":
            col = 0
        elif token == "\x1b[K":
            rows[row] = rows[row][:col]
        elif token.startswith("\x1b"):
            continue
        else:
            rows[row] = rows[row][:col].ljust(col) + token + rows[row][col + len(token) :]
            col += len(token)
    return rows


def layer(digest: str, total: int, completed: int | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"status": f"pulling {digest[7:19]}", "digest": digest, "total": total}
    if completed is not None:
        event["completed"] = completed
    return event


# Pure formatting


def test_spinner_line() -> None:
    assert spinner_line("pulling manifest", 0) == "pulling manifest ⠋ "
    assert spinner_line("pulling manifest", 1) == "pulling manifest ⠙ "
    assert spinner_line("pulling manifest", 10) == "pulling manifest ⠋ "
    assert spinner_line("pulling manifest", None) == "pulling manifest "


def test_bar_line_running_and_done() -> None:
    half = bar_line("pulling 970aa74c0a90:", TOTAL_A, TOTAL_A // 2, 80)
    assert half == "pulling 970aa74c0a90:  50% ▕" + "█" * 18 + " " * 18 + "▏ 137 MB/274 MB"
    assert len(half) == 79
    done = bar_line("pulling 970aa74c0a90:", TOTAL_A, TOTAL_A, 80, done=True)
    assert done == "pulling 970aa74c0a90: 100% ▕" + "█" * 18 + "▏ 274 MB" + DONE_PAD
    assert len(done) == 79
    small = bar_line("pulling c71d239df917:", TOTAL_B, 99_000, 80)
    assert small.startswith("pulling c71d239df917:   8% ▕")
    assert small.endswith("▏  99 KB/1.2 MB")


def test_bar_line_rate_and_eta() -> None:
    line = bar_line("pulling x:", 100_000_000, 20_000_000, 80, rate=10_000_000)
    assert line.endswith("▏  20 MB/100 MB  10 MB/s  8s")
    assert len(line) == 79
    assert bar_line("pulling x:", 1_000_000_000, 100_000_000, 80, rate=10_000_000).endswith("  10 MB/s  1m30s")


def test_format_eta() -> None:
    assert [format_eta(s) for s in (0, 12, 60, 90, 3599, 3600, 7500, 360_000)] == [
        "0s",
        "12s",
        "1m0s",
        "1m30s",
        "59m59s",
        "1h0m",
        "2h5m",
        "99h+",
    ]


# Not a terminal: each line once


def sample_stream() -> list[dict[str, Any]]:
    return [
        {"status": "pulling manifest"},
        layer(DIGEST_A, TOTAL_A),
        layer(DIGEST_A, TOTAL_A, 0),
        layer(DIGEST_A, TOTAL_A, TOTAL_A // 2),
        layer(DIGEST_A, TOTAL_A, TOTAL_A),
        layer(DIGEST_B, TOTAL_B, TOTAL_B),
        {"status": "verifying sha256 digest"},
        {"status": "writing manifest"},
        {"status": "converting to OpenVINO IR"},
        {"status": "success"},
    ]


def test_log_mode_sample_stream() -> None:
    out, clock = io.StringIO(), FakeClock()
    progress = PullProgress(out, is_terminal=False, clock=clock)
    for event in sample_stream():
        clock.now += 0.05
        progress.update(event)
    progress.finish()
    assert out.getvalue() == (
        "pulling manifest\n"
        "pulling 970aa74c0a90:  50% ▕██████████████████                  ▏ 137 MB/274 MB\n"
        "pulling 970aa74c0a90: 100% ▕██████████████████▏ 274 MB\n"
        "pulling c71d239df917: 100% ▕██████████████████▏ 1.2 MB\n"
        "verifying sha256 digest\n"
        "writing manifest\n"
        "converting to OpenVINO IR\n"
        "success\n"
    )
    assert "\x1b" not in out.getvalue()


def test_log_mode_prints_quarter_steps_only() -> None:
    out, clock = io.StringIO(), FakeClock()
    progress = PullProgress(out, is_terminal=False, clock=clock)
    for percent in (0, 1, 10, 20, 30, 45, 60, 80, 99, 100):
        clock.now += 0.5
        progress.update(layer(DIGEST_A, 1_000_000_000, percent * 10_000_000))
    progress.finish()
    percents = [int(m) for m in re.findall(r"(\d+)% ▕", out.getvalue())]
    assert percents == [1, 30, 60, 80, 100]


def test_log_mode_repeated_status_is_one_line() -> None:
    out = io.StringIO()
    progress = PullProgress(out, is_terminal=False, clock=FakeClock())
    for status in ("pulling manifest", "pulling manifest", "success", "success"):
        progress.update({"status": status})
    progress.update({"error": "ignored: the CLI turns error lines into `Error: ...`"})
    progress.finish()
    assert out.getvalue() == "pulling manifest\nsuccess\n"


# A terminal: the block is redrawn in place


def test_terminal_spinner_turns_and_stops() -> None:
    out, clock = io.StringIO(), FakeClock()
    progress = PullProgress(out, is_terminal=True, clock=clock, width=80)
    progress.update({"status": "pulling manifest"})
    assert out.getvalue() == "\x1b[?25l\x1b[1Gpulling manifest ⠋ \x1b[K"
    clock.now = 0.05
    progress.tick()
    assert out.getvalue().count("pulling manifest") == 1  # no redraw within 100 ms
    clock.now = 0.1
    progress.tick()
    assert screen(out.getvalue()) == ["pulling manifest ⠙ "]
    clock.now = 0.35
    progress.tick()
    assert screen(out.getvalue()) == ["pulling manifest ⠸ "]
    clock.now = 0.5
    progress.update({"status": "writing manifest"})
    assert screen(out.getvalue()) == ["pulling manifest ", "writing manifest ⠋ "]
    clock.now = 0.6
    progress.update({"status": "success"})
    progress.finish()
    assert screen(out.getvalue()) == ["pulling manifest ", "writing manifest ", "success ", ""]
    assert out.getvalue().endswith("success \x1b[K\n\x1b[?25h")


def test_the_conversion_bar_takes_the_place_of_its_spinner() -> None:
    out, clock = io.StringIO(), FakeClock()
    progress = PullProgress(out, is_terminal=True, clock=clock, width=80)
    converting = "converting to OpenVINO IR"
    progress.update({"status": converting})
    assert screen(out.getvalue()) == ["converting to OpenVINO IR ⠋ "]
    for step, completed in enumerate((0, 500_000_000, 2_000_000_000), 1):
        clock.now = step * 0.2
        progress.update({"status": converting, "total": 2_000_000_000, "completed": completed})
        progress.update({"status": converting})  # a bare repeat changes nothing
    progress.update({"status": "writing manifest"})
    progress.finish()
    lines = screen(out.getvalue())
    assert lines[0].startswith("converting to OpenVINO IR 100% ▕") and lines[0].rstrip().endswith(" 2 GB")
    assert lines[1:] == ["writing manifest ", ""]


def test_log_mode_conversion_bar_in_quarter_steps() -> None:
    out, clock = io.StringIO(), FakeClock()
    progress = PullProgress(out, is_terminal=False, clock=clock)
    progress.update({"status": "converting to OpenVINO IR"})
    for completed in (10, 60, 100):
        clock.now += 1
        progress.update({"status": "converting to OpenVINO IR", "total": 100, "completed": completed})
    progress.finish()
    assert [line.split("▕")[0] for line in out.getvalue().splitlines()] == [
        "converting to OpenVINO IR",
        "converting to OpenVINO IR  10% ",
        "converting to OpenVINO IR  60% ",
        "converting to OpenVINO IR 100% ",
    ]


def test_terminal_bars_for_several_layers() -> None:
    out, clock = io.StringIO(), FakeClock()
    progress = PullProgress(out, is_terminal=True, clock=clock, width=80)
    progress.update({"status": "pulling manifest"})
    clock.now = 0.2
    progress.update(layer(DIGEST_A, TOTAL_A, 0))
    assert screen(out.getvalue()) == ["pulling manifest ⠹ "]  # 0 bytes: no bar yet, the spinner still turns
    clock.now = 0.4
    progress.update(layer(DIGEST_A, TOTAL_A, TOTAL_A // 2))
    clock.now = 0.6
    progress.update(layer(DIGEST_B, TOTAL_B, TOTAL_B))
    assert screen(out.getvalue()) == [
        "pulling manifest ",
        "pulling 970aa74c0a90:  50% ▕██████████████████                  ▏ 137 MB/274 MB",
        "pulling c71d239df917: 100% ▕██████████████████▏ 1.2 MB" + DONE_PAD,
    ]
    clock.now = 1.4
    progress.update(layer(DIGEST_A, TOTAL_A, 205_000_000))  # 67.9 MB in 1 s since the first sample
    bar = screen(out.getvalue())[1]
    assert bar.startswith("pulling 970aa74c0a90:  75% ▕")
    assert bar.endswith("▏ 205 MB/274 MB  67 MB/s  1s")
    assert len(bar) == 79
    clock.now = 1.6
    progress.update(layer(DIGEST_A, TOTAL_A, TOTAL_A))
    for status in ("verifying sha256 digest", "writing manifest", "success"):
        clock.now += 0.1
        progress.update({"status": status})
    progress.finish()
    assert screen(out.getvalue()) == [
        "pulling manifest ",
        "pulling 970aa74c0a90: 100% ▕██████████████████▏ 274 MB" + DONE_PAD,
        "pulling c71d239df917: 100% ▕██████████████████▏ 1.2 MB" + DONE_PAD,
        "verifying sha256 digest ",
        "writing manifest ",
        "success ",
        "",
    ]


def test_terminal_width_follows_the_terminal() -> None:
    out = io.StringIO()
    progress = PullProgress(out, is_terminal=True, clock=FakeClock(), width=60)
    progress.update(layer(DIGEST_A, TOTAL_A, TOTAL_A // 2))
    progress.finish()
    assert screen(out.getvalue())[0] == "pulling 970aa74c0a90:  50% ▕████████        ▏ 137 MB/274 MB"


def test_finish_with_nothing_shown_writes_nothing() -> None:
    for is_terminal in (True, False):
        out = io.StringIO()
        progress = PullProgress(out, is_terminal=is_terminal, clock=FakeClock())
        progress.finish()
        progress.finish()
        assert out.getvalue() == ""


# End to end: the CLI and scripts/provision against a real HTTP server streaming NDJSON

STREAMS: dict[str, list[dict[str, Any]]] = {
    "tiny": sample_stream(),
    "missing": [{"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}],
}


class FakePullHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    requests: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._json(200, {"models": []})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(body)
        if body["model"] not in STREAMS:
            self._json(400, {"error": "invalid model name"})
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in STREAMS[body["model"]]:
            line = json.dumps(event).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()
            time.sleep(0.01)
        self.wfile.write(b"0\r\n\r\n")


class FakeDaemon:
    """Serves /api/pull on a loopback port, optionally only after `delay` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        self.port = free_port()
        self.server: ThreadingHTTPServer | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(delay,), daemon=True)
        self._thread.start()
        FakePullHandler.requests = []

    def _run(self, delay: float) -> None:
        if self._stopped.wait(delay):
            return
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), FakePullHandler)
        self.server.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        self._stopped.set()
        while self._thread.is_alive() and self.server is None:
            time.sleep(0.01)
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self._thread.join(5)

    def env(self) -> dict[str, str]:
        return {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{self.port}", "OVEMBED": " ".join(OVEMBED)}


@pytest.fixture
def fake_daemon() -> Iterator[FakeDaemon]:
    daemon = FakeDaemon()
    yield daemon
    daemon.stop()


def pull(env: dict[str, str], name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OVEMBED, "pull", name], env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


def provision(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "scripts" / "provision"), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_pull_success(fake_daemon: FakeDaemon) -> None:
    result = pull(fake_daemon.env(), "tiny")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "pulling manifest",
        "pulling 970aa74c0a90:  50% ▕██████████████████                  ▏ 137 MB/274 MB",
        "pulling 970aa74c0a90: 100% ▕██████████████████▏ 274 MB",
        "pulling c71d239df917: 100% ▕██████████████████▏ 1.2 MB",
        "verifying sha256 digest",
        "writing manifest",
        "converting to OpenVINO IR",
        "success",
    ]
    assert FakePullHandler.requests == [{"model": "tiny", "stream": True}]


def test_cli_pull_error_line(fake_daemon: FakeDaemon) -> None:
    result = pull(fake_daemon.env(), "missing")
    assert result.returncode == 1
    assert result.stderr == "pulling manifest\nError: pull model manifest: file does not exist\n"


def test_cli_pull_rejected(fake_daemon: FakeDaemon) -> None:
    result = pull(fake_daemon.env(), "Bad Name!")
    assert result.returncode == 1
    assert result.stderr == "Error: invalid model name\n"


def test_cli_pull_no_daemon() -> None:
    port = free_port()
    result = pull({**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}"}, "tiny")
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: could not connect to ovembed at http://127.0.0.1:{port} (")
    assert "is `ovembed serve` running?" in result.stderr


def test_provision_reports_every_model(fake_daemon: FakeDaemon, tmp_path: Any) -> None:
    models = tmp_path / "models.txt"
    models.write_text("# embedding models\n\nmissing  # not on the hub\n")
    result = provision(fake_daemon.env(), "-f", str(models), "tiny")
    assert result.returncode == 1, result.stderr
    assert "Error: pull model manifest: file does not exist" in result.stderr
    assert "pulling c71d239df917: 100%" in result.stderr
    assert result.stderr.splitlines()[-1] == "provision: 1 pulled (tiny), 1 failed (missing)"
    assert [r["model"] for r in FakePullHandler.requests] == ["missing", "tiny"]


def test_provision_waits_for_the_daemon() -> None:
    daemon = FakeDaemon(delay=2.0)
    try:
        started = time.monotonic()
        result = provision(daemon.env(), "-w", "30", "tiny")
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - started >= 2.0
        assert result.stderr.splitlines()[-1] == "provision: 1 pulled (tiny), 0 failed"
    finally:
        daemon.stop()


def test_provision_gives_up_when_no_daemon_answers() -> None:
    port = free_port()
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OVEMBED": " ".join(OVEMBED)}
    result = provision(env, "-w", "1", "tiny")
    assert result.returncode == 1
    assert f"no ovembed daemon at 127.0.0.1:{port} after 1s" in result.stderr


def test_provision_usage() -> None:
    result = provision(dict(os.environ), "-h")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: provision")
    assert provision(dict(os.environ)).returncode == 2
