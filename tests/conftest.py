"""Fixtures: real daemons (`ovembed serve` in a subprocess on a loopback port) and models made by the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tokenizers import Tokenizer

from tests.tinymodel import build_tiny_model

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
REFERENCE = SHARED / "reference"
OVEMBED = [sys.executable, "-m", "daemon.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_shared() -> None:
    """The real tier needs ../shared beside the repo; without it, say so and skip."""
    if not MINILM.is_dir() or not REFERENCE.is_dir():
        pytest.skip(f"real tier needs {MINILM} and {REFERENCE} (../shared beside the repo); not present here")


@dataclass
class Daemon:
    """A running `ovembed serve` and the environment its CLI commands need."""

    url: str
    models_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*OVEMBED, *args], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"ovembed {' '.join(args)} failed: {result.stderr}")
        return result

    def create(self, name: str, folder: Path, *options: str) -> None:
        self.cli("create", name, "--from", str(folder), *options)

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def daemon_env(models_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "OVEMBED_"))}
    env.update(
        {
            "OLLAMA_HOST": f"127.0.0.1:{port}",
            "OVEMBED_MODELS": str(models_dir),
            "OVEMBED_CACHE_DIR": str(models_dir.parent / "cache"),
            # Off: these daemons' tests compare computations (alone and batched, lane counts); a repeated text
            # answered from the vector cache would pass them unseen. tests/test_vector_cache.py tests the cache.
            "OVEMBED_CACHE_MB": "0",
            "HF_HUB_OFFLINE": "1",
            "ANONYMIZED_TELEMETRY": "False",
        }
    )
    env.update(extra)
    return env


def wait_until_up(url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"daemon exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"daemon did not answer within {timeout}s:\n{log_path.read_text()}")


def start_daemon(root: Path, **extra_env: str) -> Daemon:
    """Start `ovembed serve` with its store under `root`; the caller stops it with stop_daemon."""
    port = free_port()
    models_dir = root / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    env = daemon_env(models_dir, port, **extra_env)
    log_path = root / f"daemon-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([*OVEMBED, "serve"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, process, log_path)
    return Daemon(url=url, models_dir=models_dir, env=env, process=process, log_path=log_path)


def sigterm_while_busy(daemon: Daemon, busy: list[Future[Any]]) -> tuple[int, float]:
    """SIGTERM once `busy` has been running a second (and is still running): exit status and seconds to exit."""
    time.sleep(1.0)
    assert not any(f.done() for f in busy), "the work ended before the signal; make it bigger"
    signalled = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    status = daemon.process.wait(timeout=30)
    return status, time.monotonic() - signalled


def stop_daemon(daemon: Daemon) -> None:
    if daemon.process.poll() is None:
        daemon.process.send_signal(signal.SIGTERM)
        try:
            daemon.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.process.kill()
            daemon.process.wait()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fast tier's model: a small contextual network with mean pooling and a Normalize module."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-mean")


@pytest.fixture(scope="session")
def tokenizer(tiny_dir: Path) -> Tokenizer:
    """The tiny model's tokenizer with its stored truncation and padding off, to count real tokens."""
    tok = Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


@pytest.fixture(scope="session")
def tiny_variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """CLS and last-token pooling, and a model without Normalize, for the pooling paths."""
    root = tmp_path_factory.mktemp("variants")
    return {
        "cls": build_tiny_model(root / "tiny-cls", pooling="cls", seed=1),
        "lasttoken": build_tiny_model(root / "tiny-last", pooling="lasttoken", seed=2),
        "raw": build_tiny_model(root / "tiny-raw", normalize=False, seed=3),
    }


@pytest.fixture(scope="session")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path, tiny_variants: dict[str, Path]
) -> Iterator[Daemon]:
    """The fast tier's daemon, in fp32 so its vectors can be held to the numpy reference at 0.99999.

    It serves `tiny` (mean), `tiny-cls`, `tiny-last` and `tiny-raw`; tests that delete or copy use names of
    their own.
    """
    running = start_daemon(tmp_path_factory.mktemp("daemon"), OVEMBED_PRECISION="fp32")
    running.create("tiny", tiny_dir)
    running.create("tiny-cls", tiny_variants["cls"])
    running.create("tiny-last", tiny_variants["lasttoken"])
    running.create("tiny-raw", tiny_variants["raw"])
    yield running
    stop_daemon(running)


@contextlib.contextmanager
def running_minilm(root: Path, **extra_env: str) -> Iterator[Daemon]:
    """A daemon serving all-MiniLM-L6-v2 from ../shared as `all-minilm`; skips the test without ../shared."""
    require_shared()
    running = start_daemon(root, **extra_env)
    try:
        running.create("all-minilm", MINILM)
        yield running
    finally:
        stop_daemon(running)


@pytest.fixture(scope="session")
def minilm_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The real tier's daemon, in the default precision (auto: measured, so bf16 on some CPUs)."""
    with running_minilm(tmp_path_factory.mktemp("minilm")) as running:
        yield running


@pytest.fixture(scope="session")
def minilm_fp32_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The real tier's daemon in fp32, where batching may change rounding and never more (the 0.99999 bar)."""
    with running_minilm(tmp_path_factory.mktemp("minilm-fp32"), OVEMBED_PRECISION="fp32") as running:
        yield running


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts small tmpfs filesystems to fill (`tmpfs("80m")`); skips the test where it may not (not root)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        disk = tmp_path / f"disk-{len(mounted)}"
        disk.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"needs a tmpfs to fill: mount said {done.stderr.decode().strip()!r} (not root?)")
        mounted.append(disk)
        return disk

    yield mount
    for disk in mounted:
        subprocess.run(["umount", "-l", str(disk)], check=False)
