"""ovembed beside the user's own Ollama (OVEMBED_UPSTREAM): one address for chat and embeddings.

A real `ovembed serve` on a socket forwards to tests/standin_ollama.py's stand-in on another; the clients are
the real ones (ollama-python, the OpenAI SDK, LangChain). The stand-in's streams wait after their first chunk
until the test opens its gate, so a first chunk that arrives proves ovembed relays a stream as it comes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from langchain_ollama import ChatOllama, OllamaEmbeddings

from tests.conftest import Daemon, free_port, start_daemon, stop_daemon, store_models, wait_for
from tests.standin_ollama import TAGS, VERSION, StandInOllama, running_stand_in


@pytest.fixture(scope="module")
def stand_in() -> StandInOllama:
    return StandInOllama()


@pytest.fixture(scope="module")
def stand_in_url(stand_in: StandInOllama) -> Iterator[str]:
    with running_stand_in(stand_in) as url:
        yield url


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path, stand_in_url: str) -> Iterator[Daemon]:
    """ovembed with its own tiny model, in front of the stand-in."""
    root = tmp_path_factory.mktemp("beside")
    store_models(root, {"tiny": tiny_dir})
    running = start_daemon(root, OVEMBED_UPSTREAM=stand_in_url)
    yield running
    stop_daemon(running)


@pytest.fixture(autouse=True)
def _gate_closed(stand_in: StandInOllama) -> Iterator[None]:
    stand_in.gate.clear()
    yield
    stand_in.gate.set()  # nothing the test left open waits on it


def test_chat_and_embeddings_through_one_address(daemon: Daemon, stand_in: StandInOllama) -> None:
    stand_in.gate.set()
    client = ollama.Client(host=daemon.url)
    reply = client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert reply.message.content == "Hello!"
    own = client.embed(model="tiny", input="why is the sky blue?")
    theirs = client.embed(model="nomic-upstream", input=["a", "b"])
    assert len(own.embeddings[0]) == 16  # ovembed's own model, served here
    assert theirs.embeddings == [[0.6, 0.8], [0.6, 0.8]]  # a model only the upstream has
    embedded = [json.loads(body)["model"] for method, path, _, body in stand_in.seen if path == "/api/embed"]
    assert "nomic-upstream" in embedded and "tiny" not in embedded


def test_a_generation_streams_through_as_the_upstream_writes_it(daemon: Daemon, stand_in: StandInOllama) -> None:
    client = ollama.Client(host=daemon.url)
    parts = []
    for chunk in client.generate(model="llama3.2", prompt="hi", stream=True):
        if not parts:
            assert not stand_in.gate.is_set(), "the first chunk came only after the upstream finished"
            stand_in.gate.set()
        parts.append(chunk)
    assert "".join(p.response for p in parts) == "Hello!"
    assert parts[-1].done and parts[-1].done_reason == "stop"


def test_an_openai_chat_stream_streams_through(daemon: Daemon, stand_in: StandInOllama) -> None:
    client = openai.OpenAI(base_url=f"{daemon.url}/v1", api_key="ollama")
    deltas = []
    for event in client.chat.completions.create(
        model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True
    ):
        if not deltas:
            assert not stand_in.gate.is_set(), "the first event came only after the upstream finished"
            stand_in.gate.set()
        deltas.append(event.choices[0].delta.content or "")
    assert "".join(deltas) == "Hello!"


def test_langchain_chat_and_embeddings_on_one_base_url(daemon: Daemon, stand_in: StandInOllama) -> None:
    stand_in.gate.set()
    assert ChatOllama(base_url=daemon.url, model="llama3.2").invoke("hi").content == "Hello!"
    assert len(OllamaEmbeddings(base_url=daemon.url, model="tiny").embed_query("why is the sky blue?")) == 16


def test_the_model_lists_are_merged(daemon: Daemon) -> None:
    assert httpx.post(f"{daemon.url}/api/embed", json={"model": "tiny", "input": "x"}, timeout=60).status_code == 200
    tags = httpx.get(f"{daemon.url}/api/tags", timeout=30).json()["models"]
    by_name = {m["name"]: m for m in tags}
    assert set(by_name) == {"tiny:latest", "llama3.2:latest"}
    assert by_name["tiny:latest"]["details"]["format"] == "openvino"  # ovembed's entry stands for a shared name
    assert by_name["llama3.2:latest"] == TAGS[0]  # every field of the upstream's entry kept
    assert [m["name"] for m in tags] == ["tiny:latest", "llama3.2:latest"]  # latest first: tiny was just stored
    running = {m["name"] for m in httpx.get(f"{daemon.url}/api/ps", timeout=30).json()["models"]}
    assert running == {"tiny:latest", "llama3.2:latest"}
    ids = {m["id"] for m in httpx.get(f"{daemon.url}/v1/models", timeout=30).json()["data"]}
    assert ids == {"tiny:latest", "llama3.2:latest"}
    assert httpx.get(f"{daemon.url}/api/version", timeout=30).json() == {"version": VERSION}


def test_show_and_pull_go_to_the_side_that_owns_the_name(daemon: Daemon, stand_in: StandInOllama) -> None:
    shown = httpx.post(f"{daemon.url}/api/show", json={"model": "llama3.2"}, timeout=30).json()
    assert shown["modelfile"] == "FROM llama3.2"
    assert httpx.post(f"{daemon.url}/api/show", json={"model": "tiny"}, timeout=30).json()["details"]["format"] == (
        "openvino"
    )
    pulled = httpx.post(f"{daemon.url}/api/pull", json={"model": "llama3.2", "stream": False}, timeout=30)
    assert pulled.json() == {"status": "success"}
    ours = httpx.post(f"{daemon.url}/api/pull", json={"model": "all-minilm", "stream": False}, timeout=60)
    assert "HF_HUB_OFFLINE" in ours.json()["error"]  # ovembed's own pull, which this daemon cannot fetch
    pulls = [json.loads(body)["model"] for _, path, _, body in stand_in.seen if path == "/api/pull"]
    assert pulls == ["llama3.2"]


def test_an_upload_streams_to_the_upstream(daemon: Daemon, stand_in: StandInOllama) -> None:
    chunk = b"\0" * (1 << 20)
    before = stand_in.uploaded
    answer = httpx.post(f"{daemon.url}/api/blobs/sha256:{'1' * 64}", content=iter([chunk] * 16), timeout=60)
    assert answer.status_code == 201
    assert stand_in.uploaded - before == 16 << 20


def test_a_stream_the_upstream_breaks_off_ends_with_an_error_line(daemon: Daemon) -> None:
    with httpx.stream(
        "POST", f"{daemon.url}/api/generate", json={"model": "crash", "prompt": "hi"}, timeout=60
    ) as answer:
        lines = [json.loads(line) for line in answer.iter_lines() if line]
    assert lines[0]["response"] == "Hel"
    assert "broke off its answer" in lines[-1]["error"]
    assert httpx.post(f"{daemon.url}/api/embed", json={"model": "tiny", "input": "x"}, timeout=60).status_code == 200


def test_an_upstream_that_is_down_gets_a_502_and_ovembeds_own_models_keep_working(
    tmp_path: Path, tiny_dir: Path
) -> None:
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store_models(tmp_path, {"tiny": tiny_dir})
    running = start_daemon(tmp_path, OVEMBED_UPSTREAM=address)
    try:
        for _ in range(3):
            refused = httpx.post(f"{running.url}/api/chat", json={"model": "llama3.2", "messages": []}, timeout=30)
            assert refused.status_code == 502
            assert refused.json()["error"].startswith(f"the Ollama at {address} (OVEMBED_UPSTREAM) did not answer (")
        openai_shape = httpx.post(f"{running.url}/v1/chat/completions", json={"model": "llama3.2"}, timeout=30)
        assert openai_shape.status_code == 502 and "OVEMBED_UPSTREAM" in openai_shape.json()["error"]["message"]
        assert [m["name"] for m in httpx.get(f"{running.url}/api/tags", timeout=30).json()["models"]] == ["tiny:latest"]
        embedded = httpx.post(f"{running.url}/api/embed", json={"model": "tiny", "input": "x"}, timeout=60)
        assert embedded.status_code == 200
        assert httpx.get(f"{running.url}/api/version", timeout=30).json()["version"] != VERSION
        wait_for(lambda: "does not answer" in running.log_path.read_text(), "the outage in the log")
        assert running.log_path.read_text().count("does not answer") == 1  # once per outage, not per request
    finally:
        stop_daemon(running)


def test_with_a_key_the_upstreams_routes_want_it_and_the_key_never_reaches_the_upstream(
    tmp_path: Path, stand_in: StandInOllama, stand_in_url: str
) -> None:
    key = "a-key-only-ovembed-knows"
    running = start_daemon(tmp_path, OVEMBED_UPSTREAM=stand_in_url, OVEMBED_API_KEY=key)
    stand_in.gate.set()
    try:
        refused = httpx.post(f"{running.url}/api/chat", json={"model": "llama3.2", "messages": []}, timeout=30)
        assert refused.status_code == 401
        client = ollama.Client(host=running.url, headers={"Authorization": f"Bearer {key}"})
        reply = client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
        assert reply.message.content == "Hello!"
        assert all(key not in str(headers) for _, _, headers, _ in stand_in.seen)
        assert all("authorization" not in headers for _, _, headers, _ in stand_in.seen)
    finally:
        stop_daemon(running)


def test_an_upstream_address_that_is_ovembeds_own_is_a_loop_refused_at_once(tmp_path: Path) -> None:
    port = free_port()
    running = start_daemon(tmp_path, port, OVEMBED_UPSTREAM=f"127.0.0.1:{port}")
    try:
        looped = httpx.post(f"{running.url}/api/chat", json={"model": "llama3.2", "messages": []}, timeout=30)
        assert looped.status_code == 508
        assert looped.json() == {
            "error": f"OVEMBED_UPSTREAM=http://127.0.0.1:{port} leads back to ovembed itself: set it to the address "
            "your own Ollama listens on"
        }
        assert httpx.get(f"{running.url}/api/tags", timeout=30).json()["models"] == []  # asked round once
        assert httpx.get(f"{running.url}/api/version", timeout=30).status_code == 200
    finally:
        stop_daemon(running)


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        (
            "/api/rerank",
            {"model": "llama3.2", "query": "q", "documents": ["d"]},
            {"error": 'model "llama3.2" not found, try pulling it first'},
        ),
        (
            "/embed_sparse",
            {"model": "llama3.2", "inputs": "q"},
            {"error": 'model "llama3.2" not found, try pulling it first', "error_type": "validation"},
        ),
    ],
)
def test_a_route_ollama_lacks_answers_its_own_not_found_for_an_upstream_model(
    daemon: Daemon, stand_in: StandInOllama, path: str, body: dict[str, object], error: dict[str, str]
) -> None:
    """Rerank and TEI's sparse route are ovembed's alone: the upstream, which has no such route, is not asked."""
    before = len(stand_in.seen)
    answer = httpx.post(f"{daemon.url}{path}", json=body, timeout=30)
    assert (answer.status_code, answer.json()) == (404, error)
    assert len(stand_in.seen) == before
