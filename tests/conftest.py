"""Fixtures: the daemon's app in this process (Starlette's TestClient, real OpenVINO), real daemons
(`ovembed serve` in a subprocess on a loopback port) where a process boundary is under test, and models made
by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
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
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.testclient import TestClient
from tokenizers import Tokenizer

from daemon.config import Settings, parse_host
from daemon.http.app import create_app
from daemon.startup import Parts
from modelstore.create import create_from_folder
from modelstore.names import parse_name
from modelstore.store import ModelStore
from tests.tinymodel import build_tiny_model

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
REFERENCE = SHARED / "reference"
OVEMBED = [sys.executable, "-m", "daemon.cli"]
# Where an in-process app believes it listens, and the URL its TestClient sends from, so the Host guard passes.
IN_PROCESS_LISTEN = "127.0.0.1:11434"
IN_PROCESS_URL = f"http://{IN_PROCESS_LISTEN}"
# Nothing listens there: a pull in process fails fast with 502 for the hub.
NO_HUB = "http://127.0.0.1:9"


# ---------------------------------------------------------------------------------------------- in process


def build_app(settings: Settings) -> Starlette:
    """The daemon's app in this process, built from `settings` as `ovembed serve` builds it.

    The one place the tests know how the app is composed, so a change of the composition root changes
    only this line.
    """
    return create_app(Parts.start(settings))


def app_settings(root: Path, **overrides: Any) -> Settings:
    """Settings for an app with its store under `root`: fp32 (vectors held to numpy at 0.99999), no hub."""
    values: dict[str, Any] = {
        "listen": parse_host(IN_PROCESS_LISTEN),
        "models_dir": root / "models",
        "cache_dir": root / "cache",
        "precision": "fp32",
        "hf_endpoint": NO_HUB,
        # Off, as for the socket daemons (daemon_env): tests that count the lane's work or compare a text alone
        # with it in a batch must reach the network each time; tests/test_vector_cache.py turns it on.
        "vector_cache_mb": 0,
    }
    values.update(overrides)
    return Settings(**values)


def store_models(root: Path, models: dict[str, Path], **options: Any) -> None:
    """Create each name from its folder in the store under `root`, as `ovembed create` would, in process."""
    store = ModelStore(root / "models")
    for name, folder in models.items():
        create_from_folder(store, parse_name(name), folder, **options)


@contextlib.contextmanager
def serving(root: Path, *, raise_server_exceptions: bool = True, **overrides: Any) -> Iterator[TestClient]:
    """A TestClient on the app over the store under `root`, its lifespan (start, preload, close) run."""
    app = build_app(app_settings(root, **overrides))
    with TestClient(app, base_url=IN_PROCESS_URL, raise_server_exceptions=raise_server_exceptions) as client:
        yield client


class AppTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An httpx transport onto the in-process app, for real client libraries that accept one (ollama, cohere, the
    OpenAI SDK, LangChain). Starlette's TestClient speaks httpx2, so each request is handed to it and its answer
    read whole; an async request waits on a thread, so concurrent ones run concurrently on the app's loop."""

    def __init__(self, client: TestClient) -> None:
        self._client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self._client.request(
            request.method, str(request.url), headers=request.headers.multi_items(), content=request.read()
        )
        return httpx.Response(answer.status_code, headers=answer.headers.multi_items(), content=answer.content)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        return await asyncio.to_thread(self.handle_request, request)


def scrape_text(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus' text format, parsed by prometheus_client's own parser: (name, labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """Poll `condition` until it holds; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"hang guard: {what} did not happen within {timeout}s"
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------- subprocess


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_shared() -> None:
    """The real tier needs ../shared beside the repo; without it, say so and skip."""
    if not MINILM.is_dir() or not REFERENCE.is_dir():
        pytest.skip(f"real tier needs {MINILM} and {REFERENCE} (../shared beside the repo); not present here")


def reference_rows() -> tuple[list[dict[str, Any]], np.ndarray]:
    """../shared/reference for all-MiniLM-L6-v2: each text's row (id, text, n_tokens) in id order, and
    sentence-transformers' vectors, row i for id i."""
    lines = (REFERENCE / "all-MiniLM-L6-v2.texts.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines], np.load(REFERENCE / "all-MiniLM-L6-v2.npy")


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
        """`ovembed create` in a subprocess, for the tests of the CLI; the others store models with `store`."""
        self.cli("create", name, "--from", str(folder), *options)

    def store(self, name: str, folder: Path, **options: Any) -> None:
        """Store a model beside the running daemon, in this process; the daemon sees it on its next request."""
        store_models(self.models_dir.parent, {name: folder}, **options)

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


def start_daemon(root: Path, port: int | None = None, **extra_env: str) -> Daemon:
    """Start `ovembed serve` with its store under `root` (models may be stored there beforehand with
    store_models), on `port` or a free one; the caller stops it with stop_daemon."""
    port = port or free_port()
    models_dir = root / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    env = daemon_env(models_dir, port, **extra_env)
    log_path = root / f"daemon-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([*OVEMBED, "serve"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, process, log_path)
    return Daemon(url=url, models_dir=models_dir, env=env, process=process, log_path=log_path)


def scrape(daemon: Daemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A running daemon's /metrics over its socket."""
    response = httpx.get(f"{daemon.url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return scrape_text(response.text)


def sigterm_while_busy(daemon: Daemon, busy: list[Future[Any]]) -> tuple[int, float]:
    """SIGTERM once every request of `busy` is inside the daemon (each holds a place in its queue) and batches
    run, the requests still unanswered: exit status and seconds to exit."""
    batches = scrape(daemon).get(("ovembed_batch_texts_count", ()), 0.0)
    wait_for(
        lambda: (
            (now := scrape(daemon)).get(("ovembed_waiting_requests", ()), 0.0) >= len(busy)
            and now.get(("ovembed_batch_texts_count", ()), 0.0) > batches
        ),
        "every request in the daemon and a batch run",
    )
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
def tiny_models(tiny_dir: Path, tiny_variants: dict[str, Path]) -> dict[str, Path]:
    """The fast tier's four names and their folders: `tiny` (mean), `tiny-cls`, `tiny-last` and `tiny-raw`."""
    return {
        "tiny": tiny_dir,
        "tiny-cls": tiny_variants["cls"],
        "tiny-last": tiny_variants["lasttoken"],
        "tiny-raw": tiny_variants["raw"],
    }


@dataclass
class InProcess:
    """An app running in this process: its TestClient and the store it serves."""

    client: TestClient
    root: Path

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def create(self, name: str, folder: Path, **options: Any) -> None:
        """Store a model while the app runs, as `ovembed create` beside a running daemon does."""
        store_models(self.root, {name: folder}, **options)


@pytest.fixture(scope="session")
def app(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]) -> Iterator[InProcess]:
    """The fast tier's app in process, in fp32 so its vectors can be held to the numpy reference at 0.99999.

    It serves the four tiny models; tests that delete, copy or set keep_alive use names of their own.
    """
    root = tmp_path_factory.mktemp("app")
    store_models(root, tiny_models)
    with serving(root) as client:
        yield InProcess(client, root)


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]) -> Iterator[Daemon]:
    """The fast tier's daemon over a socket, for the CLI, the real clients' smoke tests and the HTTP layer; in
    fp32, serving the four tiny models. Tests that delete or copy use names of their own.
    """
    root = tmp_path_factory.mktemp("daemon")
    store_models(root, tiny_models)
    running = start_daemon(root, OVEMBED_PRECISION="fp32")
    yield running
    stop_daemon(running)


@contextlib.contextmanager
def running_minilm(root: Path, **extra_env: str) -> Iterator[Daemon]:
    """A daemon serving all-MiniLM-L6-v2 from ../shared as `all-minilm`; skips the test without ../shared."""
    require_shared()
    store_models(root, {"all-minilm": MINILM})
    running = start_daemon(root, **extra_env)
    try:
        yield running
    finally:
        stop_daemon(running)


@contextlib.contextmanager
def serving_minilm(root: Path, **overrides: Any) -> Iterator[TestClient]:
    """The app in process serving all-MiniLM-L6-v2 from ../shared as `all-minilm`; skips without ../shared."""
    require_shared()
    store_models(root, {"all-minilm": MINILM})
    with serving(root, **overrides) as client:
        yield client


# Module-scoped: every app in this process shares one metrics registry, and a gauge (loaded models) is set by
# whichever app loads or unloads last, so apps live no longer than the tests that use them.
@pytest.fixture(scope="module")
def minilm_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The real tier's app in process, in the default precision (auto: measured, so bf16 on some CPUs)."""
    with serving_minilm(tmp_path_factory.mktemp("minilm"), precision="auto") as client:
        yield client


@pytest.fixture(scope="module")
def minilm_fp32_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The real tier's app in process in fp32, where batching may change rounding and never more (0.99999)."""
    with serving_minilm(tmp_path_factory.mktemp("minilm-fp32-app")) as client:
        yield client


@pytest.fixture(scope="session")
def minilm_fp32_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The real tier's daemon over a socket in fp32, for clients that hang up."""
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
