"""The one-way walk of docs/architecture.md, read from the running code: a request goes from the socket to
OpenVINO and back without entering any module twice.

Every Python call made while the real app serves one request (in process, real OpenVINO) is traced on every
thread; at each call into the project the stack of project modules above it is read, outermost first. A
module that appears, gives way to another, and appears again on one stack is a corridor that doubles back
(`a -> b -> a`): that fails here, naming the stack. The one way back up that is by design is a callback the
layer above hands down (CALLBACKS): ASGI middlewares see the answer by wrapping `send`, and a pull's store
reports its events and asks whether to go on through functions the daemon gave it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from starlette.testclient import TestClient

from modelstore.create import create_from_folder
from modelstore.names import parse_name
from modelstore.store import ModelStore
from tests.conftest import REPO, serving
from tests.fakehub import FakeHub, running_hub
from tests.standin_ollama import StandInOllama, running_stand_in
from tests.test_convert import FIXTURES
from tests.test_outputs import with_heads
from tests.tinymodel import build_tiny_model

PACKAGES = tuple(str(REPO / package) + "/" for package in ("daemon", "modelstore"))
# Functions a module hands down to be called back: entering the module again through one is no doubling back.
CALLBACKS = {
    ("daemon.http.observe", "observed"),  # the status and the last byte, for /metrics and the access line
    ("daemon.http.guard", "send_with_cors"),  # CORS headers on every answer
    # A pull's typed events and cancel checks, handed from the daemon to the store, and by a fetch to the hub.
    ("daemon.inference.pulls", "report"),
    ("daemon.inference.pulls", "cancelled"),
    ("daemon.inference.pulls", "count"),
    ("daemon.inference.pulls", "_pulled_bytes_counter"),
    ("modelstore.fetch", "<lambda>"),
}


def module_of(frame: FrameType) -> str | None:
    path = frame.f_code.co_filename
    if not path.startswith(PACKAGES):
        return None
    return ".".join(Path(path).relative_to(REPO).with_suffix("").parts)


def modules_on(frame: FrameType | None) -> list[tuple[str, str]]:
    """The project modules on the stack ending at `frame`, outermost first, each run of one module once, with
    the function it was entered through."""
    frames: list[tuple[str, str]] = []
    while frame is not None:
        module = module_of(frame)
        if module is not None:
            frames.append((module, frame.f_code.co_name))
        frame = frame.f_back
    chain: list[tuple[str, str]] = []
    for module, function in reversed(frames):
        if not chain or chain[-1][0] != module:
            chain.append((module, function))
    return chain


class Walks:
    """Every distinct stack of project modules seen while tracing, and those that double back."""

    def __init__(self) -> None:
        self.stacks: set[tuple[tuple[str, str], ...]] = set()
        self._lock = threading.Lock()

    def profile(self, frame: FrameType, event: str, _arg: Any) -> None:
        if event != "call" or module_of(frame) is None:
            return
        stack = tuple(modules_on(frame))
        with self._lock:
            self.stacks.add(stack)

    def doubled_back(self) -> list[str]:
        found = set()
        for stack in self.stacks:
            entered = [module for module, function in stack if (module, function) not in CALLBACKS]
            if len(set(entered)) < len(entered):
                found.add(" -> ".join(f"{module}.{function}" for module, function in stack))
        return sorted(found)

    def modules(self) -> set[str]:
        return {module for stack in self.stacks for module, _ in stack}


def traced(client: TestClient, call: Callable[[], Any]) -> Walks:
    """`call` traced on this thread, on the app's event loop thread (TestClient's portal) and on threads
    started meanwhile (the inference slots start theirs on demand)."""
    walks = Walks()
    assert client.portal is not None
    threading.setprofile(walks.profile)
    client.portal.call(sys.setprofile, walks.profile)
    sys.setprofile(walks.profile)
    try:
        call()
    finally:
        sys.setprofile(None)
        client.portal.call(sys.setprofile, None)
        threading.setprofile(None)  # type: ignore[arg-type]
    return walks


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("walk")
    store = ModelStore(root / "models")
    create_from_folder(store, parse_name("tiny"), tiny_dir)
    create_from_folder(store, parse_name("rerank"), FIXTURES / "bert-rerank")
    create_from_folder(store, parse_name("m3"), with_heads(build_tiny_model(root / "m3", pooling="cls")))
    return root


@pytest.fixture
def client(store_root: Path) -> Iterator[TestClient]:
    """A daemon of its own per walk: its models loaded, but no batch run yet, so the inference slots start
    their threads while the walk is traced."""
    with serving(store_root) as running:
        # Loaded before tracing: a load compiles on a thread of its own, which is not a request's walk.
        assert running.post("/api/embed", json={"model": "tiny"}).status_code == 200
        assert running.post("/api/rerank", json={"model": "rerank", "documents": []}).status_code == 200
        assert running.post("/api/embed", json={"model": "m3"}).status_code == 200
        yield running


WALKS = {
    "embed": ("/api/embed", {"model": "tiny", "input": ["why is the sky blue?", "water runs down the road"]}),
    "rerank": ("/api/rerank", {"model": "rerank", "query": "why is the sky blue?", "documents": ["sky", "bread"]}),
    "openai": ("/v1/embeddings", {"model": "tiny", "input": "why is the sky blue?"}),
    "sparse and multivector": (
        "/api/embed",
        {"model": "m3", "input": ["why is the sky blue?", "water"], "sparse": True, "multivector": True},
    ),
    "tei sparse": ("/embed_sparse", {"inputs": ["why is the sky blue?", "water"]}),
    "an error from below": ("/api/rerank", {"model": "tiny", "query": "q", "documents": ["d"]}),
}


@pytest.mark.parametrize("walk", list(WALKS))
def test_a_request_enters_no_module_twice(client: TestClient, walk: str) -> None:
    path, body = WALKS[walk]
    answers: list[int] = []
    walks = traced(client, lambda: answers.append(client.post(path, json=body).status_code))
    assert answers == [400 if walk == "an error from below" else 200]
    # The trace saw the whole walk: the runtime, the batcher and OpenVINO's caller (or the error's mapping).
    seen = walks.modules()
    expected = {"daemon.inference.runtime", "daemon.inference.batcher", "daemon.inference.engine"}
    if walk == "an error from below":  # raised by the runtime, answered by the one handler
        expected = {"daemon.inference.runtime", "daemon.http.errors"}
    assert expected <= seen, " ".join(sorted(seen))
    assert not walks.doubled_back(), "\n".join(walks.doubled_back())


def test_a_pull_enters_no_module_twice(tmp_path: Path, tiny_dir: Path) -> None:
    """A pull from the fake hub, from the route through the puller, the fetch, the download and create, and
    back as Ollama's answer: traced on every thread it starts."""
    hub = FakeHub()
    hub.add_repo("ovembed-test/walk", tiny_dir)
    with running_hub(hub) as url, serving(tmp_path, hf_endpoint=url) as client:
        answers: list[Any] = []
        body = {"model": "hf.co/ovembed-test/walk", "stream": False}
        walks = traced(client, lambda: answers.append(client.post("/api/pull", json=body).json()))
    assert answers == [{"status": "success"}]
    seen = walks.modules()
    expected = {"daemon.inference.pulls", "modelstore.pull", "modelstore.fetch", "modelstore.hub", "modelstore.create"}
    assert expected <= seen, " ".join(sorted(seen))
    assert not walks.doubled_back(), "\n".join(walks.doubled_back())


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/chat", {"model": "llama3.2", "messages": [], "stream": False}),
        ("GET", "/api/tags", None),
        ("POST", "/api/embed", {"model": "nomic-upstream", "input": "x"}),
    ],
)
def test_a_request_for_the_upstream_enters_no_module_twice(store_root: Path, method: str, path: str, body: Any) -> None:
    """Beside an upstream Ollama: a route ovembed lacks, a merged list, and a model only the upstream holds,
    which enters ovembed's route, finds no model, and is forwarded by the exception handler."""
    stand_in = StandInOllama()
    stand_in.gate.set()
    with running_stand_in(stand_in) as url, serving(store_root, upstream=url) as client:
        answers: list[int] = []
        walks = traced(client, lambda: answers.append(client.request(method, path, json=body).status_code))
    assert answers == [200]
    assert "daemon.http.upstream" in walks.modules()
    assert not walks.doubled_back(), "\n".join(walks.doubled_back())


def test_a_health_check_enters_no_module_twice(client: TestClient) -> None:
    """/health reads the runtime's snapshot and words it: down one way and back, as every route."""
    answers: list[int] = []
    walks = traced(client, lambda: answers.append(client.get("/health").status_code))
    assert answers == [200]
    assert {"daemon.http.health", "daemon.inference.runtime", "daemon.inference.residency"} <= walks.modules()
    assert not walks.doubled_back(), "\n".join(walks.doubled_back())
