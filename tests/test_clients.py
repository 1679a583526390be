"""Real, unchanged client libraries against the daemon's app: what users actually run.

Every test goes through the published client (ollama-python, Chroma, the OpenAI SDK, LangChain, curl) and
checks the values that come back against the float64 numpy reference of the tiny model, not just that a
call "worked". Clients that accept an httpx transport reach the app in process (conftest's AppTransport);
one or two tests per client, and Chroma's function (which builds its own client), go over a socket to a real
`ovembed serve`. LlamaIndex is not installed; its pattern (one `embed` per text, `asyncio.gather` in async
code) is what `test_ollama_async_gather_matches_one_batch` does with ollama's AsyncClient.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import ollama
import openai
import pytest
from tokenizers import Tokenizer

from tests.conftest import IN_PROCESS_URL, AppTransport, Daemon, InProcess
from tests.contract import LANGCHAIN_OPTION_KEYS
from tests.tinymodel import reference_vectors

# Chroma must never phone home; this has to be set before chromadb is imported (it is, lazily, below).
os.environ["ANONYMIZED_TELEMETRY"] = "False"

MIN_COSINE = 0.99999
DIM = 16
CONTEXT = 32

DOCUMENTS = [
    "the water is cold in the morning",
    "a little boy read a great book",
    "my mother and father live near the sea",
    "how many people work in this house",
    "she said the picture was very old",
    "every animal needs air and water",
    "the world is large and the earth is round",
    "write your name on the first line",
    "they came back home after a long day",
    "change the light in the small room",
]
# Longer than the 32-token context, so truncation matters.
LONG_TEXT = " ".join(["the boy and his father went to the old house near the water"] * 4)


# ---------------------------------------------------------------------------------------------- helpers


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def assert_vectors(got: Any, expected: np.ndarray) -> None:
    """Exact shape, and every row within cosine 0.99999 of its expected row."""
    array = np.asarray(got, dtype=np.float64)
    assert array.shape == expected.shape, f"shape {array.shape}, expected {expected.shape}"
    cosines = np.sum(unit(array) * unit(expected), axis=-1)
    assert np.all(cosines >= MIN_COSINE), f"cosines {cosines}"


def assert_unit_norm(got: Any) -> None:
    norms = np.linalg.norm(np.asarray(got, dtype=np.float64), axis=-1)
    assert np.allclose(norms, 1.0, atol=1e-5), f"norms {norms}"


def unnormalized_reference(folder: Path, texts: list[str], scratch: Path) -> np.ndarray:
    """The raw pooled vectors of a model with a Normalize module: the same folder without that module."""
    copy = scratch / f"{folder.name}-without-normalize"
    if not copy.exists():
        shutil.copytree(folder, copy)
        modules = json.loads((copy / "modules.json").read_text())
        kept = [m for m in modules if not m["type"].endswith(".Normalize")]
        (copy / "modules.json").write_text(json.dumps(kept))
    return reference_vectors(copy, texts)


def token_total(folder: Path, texts: list[str]) -> int:
    """Tokens the model sees, special tokens included, each text cut to the context."""
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(CONTEXT)
    return sum(len(tokenizer.encode(t).ids) for t in texts)


def now() -> datetime:
    return datetime.now(UTC)


def ps_entry(client: ollama.Client, name: str) -> Any:
    return next((m for m in client.ps().models if m.model == name), None)


def list_names(client: ollama.Client) -> list[str | None]:
    return [m.model for m in client.list().models]


@pytest.fixture(scope="module")
def client(app: InProcess) -> Iterator[ollama.Client]:
    """ollama-python in process: its httpx.Client takes a transport, here one onto the shared app."""
    sync_client = ollama.Client(host=IN_PROCESS_URL, timeout=60, transport=AppTransport(app.client))
    yield sync_client
    sync_client.close()


@pytest.fixture(scope="module")
def expected(tiny_dir: Path) -> np.ndarray:
    """What /api/embed must return for DOCUMENTS on `tiny`: the pooled vectors, L2-normalized."""
    return unit(reference_vectors(tiny_dir, DOCUMENTS))


def expect_one(folder: Path, text: str) -> np.ndarray:
    return unit(reference_vectors(folder, [text]))


# ---------------------------------------------------------------------------------------------- ollama-python


def test_ollama_embed_list(client: ollama.Client, tiny_dir: Path, expected: np.ndarray) -> None:
    response = client.embed(model="tiny", input=DOCUMENTS)
    assert isinstance(response, ollama.EmbedResponse)
    assert response.model == "tiny"  # echoed as sent, not turned into tiny:latest
    assert len(response.embeddings) == len(DOCUMENTS)
    assert all(len(v) == DIM for v in response.embeddings)
    assert_vectors(response.embeddings, expected)
    assert_unit_norm(response.embeddings)
    assert response.prompt_eval_count == token_total(tiny_dir, DOCUMENTS)
    assert response.total_duration is not None and response.total_duration > 0


def test_ollama_embed_single_string(client: ollama.Client, tiny_dir: Path) -> None:
    response = client.embed(model="tiny", input="the water is cold")
    assert len(response.embeddings) == 1
    assert_vectors(response.embeddings, expect_one(tiny_dir, "the water is cold"))
    assert_unit_norm(response.embeddings)
    assert response.prompt_eval_count == token_total(tiny_dir, ["the water is cold"])


def test_ollama_embed_dimensions(client: ollama.Client, expected: np.ndarray) -> None:
    short = client.embed(model="tiny", input=DOCUMENTS[:3], dimensions=8)
    assert np.asarray(short.embeddings).shape == (3, 8)
    # Ollama's Matryoshka cut: normalize, keep the first N, normalize again.
    assert_vectors(short.embeddings, unit(expected[:3, :8]))
    assert_unit_norm(short.embeddings)
    assert np.allclose(short.embeddings, unit(expected[:3, :8]), atol=1e-5)
    # A size that is not smaller than the vector is silently ignored, as in Ollama.
    full = client.embed(model="tiny", input=DOCUMENTS[:3], dimensions=DIM + 10)
    assert_vectors(full.embeddings, expected[:3])


def test_ollama_embed_truncate(client: ollama.Client, tiny_dir: Path) -> None:
    assert token_total(tiny_dir, [LONG_TEXT]) == CONTEXT  # the reference cut it; the text is longer
    cut = client.embed(model="tiny", input=[LONG_TEXT, DOCUMENTS[0]], truncate=True)
    assert_vectors(cut.embeddings, unit(reference_vectors(tiny_dir, [LONG_TEXT, DOCUMENTS[0]])))
    assert cut.prompt_eval_count == token_total(tiny_dir, [LONG_TEXT, DOCUMENTS[0]])
    default = client.embed(model="tiny", input=LONG_TEXT)  # truncate defaults to true
    assert_vectors(default.embeddings, expect_one(tiny_dir, LONG_TEXT))
    with pytest.raises(ollama.ResponseError) as caught:
        client.embed(model="tiny", input=[DOCUMENTS[0], LONG_TEXT], truncate=False)
    assert caught.value.status_code == 400
    assert "exceeds the context length" in caught.value.error
    # Short inputs pass with truncate=False.
    fits = client.embed(model="tiny", input=DOCUMENTS[0], truncate=False)
    assert_vectors(fits.embeddings, expect_one(tiny_dir, DOCUMENTS[0]))


def test_ollama_keep_alive(client: ollama.Client, tiny_dir: Path) -> None:
    name = "clients-keepalive:latest"
    client.copy("tiny", name)
    try:
        hour = client.embed(model=name, input=DOCUMENTS[0], keep_alive="1h")
        assert_vectors(hour.embeddings, expect_one(tiny_dir, DOCUMENTS[0]))
        entry = ps_entry(client, name)
        assert entry is not None, "a model used with keep_alive=1h must show in ps"
        assert timedelta(minutes=59) < entry.expires_at - now() <= timedelta(hours=1, seconds=5)

        client.embed(model=name, input=DOCUMENTS[1], keep_alive=-1)  # negative: keep forever
        entry = ps_entry(client, name)
        assert entry is not None and entry.expires_at - now() > timedelta(days=365)

        seconds = client.embed(model=name, input=DOCUMENTS[1], keep_alive=600)  # a number means seconds
        assert_vectors(seconds.embeddings, expect_one(tiny_dir, DOCUMENTS[1]))
        entry = ps_entry(client, name)
        assert entry is not None
        assert timedelta(minutes=9) < entry.expires_at - now() <= timedelta(minutes=10, seconds=5)

        zero = client.embed(model=name, input=DOCUMENTS[2], keep_alive=0)  # 0: unload after the request
        assert_vectors(zero.embeddings, expect_one(tiny_dir, DOCUMENTS[2]))
        deadline = time.monotonic() + 10
        while ps_entry(client, name) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ps_entry(client, name) is None, "keep_alive=0 must unload the model"

        preload = client.embed(model=name, input=[], keep_alive="5m")  # Ollama's preload idiom
        assert preload.embeddings == []
        assert ps_entry(client, name) is not None
    finally:
        client.delete(name)


def test_ollama_embeddings_legacy_is_raw(
    client: ollama.Client, tiny_dir: Path, tiny_variants: dict[str, Path], tmp_path: Path
) -> None:
    text = DOCUMENTS[4]
    response = client.embeddings(model="tiny", prompt=text)
    assert isinstance(response, ollama.EmbeddingsResponse)
    raw = unnormalized_reference(tiny_dir, [text], tmp_path)[0]
    got = np.asarray(response.embedding, dtype=np.float64)
    assert got.shape == (DIM,)
    assert_vectors(got[None], raw[None])
    # Not normalized, as Ollama's /api/embeddings for BERT: the pooled values themselves come back.
    assert abs(np.linalg.norm(raw) - 1.0) > 0.05, "the test needs a raw norm far from 1"
    assert np.allclose(got, raw, rtol=1e-4, atol=1e-5)

    raw_model = client.embeddings(model="tiny-raw", prompt=text)
    expected_raw = reference_vectors(tiny_variants["raw"], [text])[0]
    assert np.allclose(raw_model.embedding, expected_raw, rtol=1e-4, atol=1e-5)
    assert_vectors(np.asarray(raw_model.embedding)[None], expected_raw[None])


def test_ollama_list(client: ollama.Client) -> None:
    response = client.list()
    assert isinstance(response, ollama.ListResponse)
    tiny = next((m for m in response.models if m.model == "tiny:latest"), None)
    assert tiny is not None, [m.model for m in response.models]
    for name in ("tiny-cls:latest", "tiny-last:latest", "tiny-raw:latest"):
        assert name in [m.model for m in response.models]
    assert isinstance(tiny.modified_at, datetime) and tiny.modified_at.tzinfo is not None
    assert tiny.modified_at <= now() + timedelta(seconds=5)
    assert tiny.size is not None and int(tiny.size) > 0
    assert tiny.digest and len(tiny.digest) == 64 and not tiny.digest.startswith("sha256:")
    assert tiny.details is not None
    assert tiny.details.family == "bert"
    assert tiny.details.families == ["bert"]
    assert tiny.details.format
    assert tiny.details.parameter_size
    assert tiny.details.quantization_level
    assert tiny.details.parent_model == ""


def test_ollama_show(client: ollama.Client) -> None:
    response = client.show("tiny")
    assert isinstance(response, ollama.ShowResponse)
    info = response.modelinfo
    assert info is not None and info == response["modelinfo"]
    assert info["general.architecture"] == "bert"
    assert info["bert.embedding_length"] == DIM
    assert info["bert.context_length"] == CONTEXT
    assert info["bert.pooling_type"] == 1  # mean, in Ollama's pooling enum
    assert isinstance(info["general.parameter_count"], int) and info["general.parameter_count"] > 0
    assert response.capabilities == ["embedding"]
    assert response.details is not None and response.details.family == "bert"
    assert isinstance(response.modified_at, datetime)
    assert response.parameters and "num_ctx" in response.parameters
    # The other pooling modes are told apart in model_info.
    assert client.show("tiny-cls").modelinfo["bert.pooling_type"] == 2
    assert client.show("tiny-last").modelinfo["bert.pooling_type"] == 3


def test_ollama_ps_after_embed(client: ollama.Client, tiny_dir: Path) -> None:
    client.embed(model="tiny", input=DOCUMENTS[0])
    response = client.ps()
    assert isinstance(response, ollama.ProcessResponse)
    entry = ps_entry(client, "tiny:latest")
    assert entry is not None, [m.model for m in response.models]
    assert entry.name == "tiny:latest"
    assert entry.context_length == CONTEXT
    assert entry.expires_at is not None and entry.expires_at > now()
    assert entry.size is not None and int(entry.size) > 0
    assert entry.size_vram is not None and int(entry.size_vram) >= 0
    listed = next(m for m in client.list().models if m.model == "tiny:latest")
    assert entry.digest == listed.digest
    assert entry.details is not None and entry.details.family == "bert"


def test_ollama_copy_then_delete(client: ollama.Client, tiny_dir: Path) -> None:
    name = "clients-copy:v1"
    assert name not in list_names(client)
    client.copy("tiny", name)
    try:
        assert name in list_names(client)
        copied = client.embed(model=name, input=DOCUMENTS[:2])
        assert copied.model == name
        assert_vectors(copied.embeddings, unit(reference_vectors(tiny_dir, DOCUMENTS[:2])))
        assert client.show(name).modelinfo["bert.embedding_length"] == DIM
    finally:
        client.delete(name)
    assert name not in list_names(client)
    assert "tiny:latest" in list_names(client), "deleting a copy must leave its source alone"
    with pytest.raises(ollama.ResponseError) as caught:
        client.embed(model=name, input="gone")
    assert caught.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as caught:
        client.delete(name)
    assert caught.value.status_code == 404
    # The source still works.
    assert_vectors(client.embed(model="tiny", input=DOCUMENTS[0]).embeddings, expect_one(tiny_dir, DOCUMENTS[0]))


def test_ollama_unknown_model_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.embed(model="x", input="hello")
    assert caught.value.status_code == 404
    assert 'model "x" not found' in caught.value.error
    assert 'model "x" not found' in str(caught.value)
    with pytest.raises(ollama.ResponseError) as caught:
        client.embeddings(model="x", prompt="hello")
    assert caught.value.status_code == 404
    assert 'model "x" not found' in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        client.show("x")
    assert caught.value.status_code == 404
    assert "not found" in caught.value.error


def test_ollama_async_gather_matches_one_batch(daemon: Daemon, tiny_dir: Path) -> None:
    """LlamaIndex's async pattern: one single-text `embed` per text, all at once, read `embeddings[0]`; over a
    socket, with 32 connections at once."""
    words = ["water", "boy", "house", "light", "picture", "animal", "mother", "world"]
    texts = [f"{words[i % 8]} and {words[(i * 3 + 1) % 8]} near the {words[(i * 5 + 2) % 8]} {i}" for i in range(32)]
    assert len(set(texts)) == 32

    async def gather() -> list[ollama.EmbedResponse]:
        async_client = ollama.AsyncClient(host=daemon.url, timeout=60)
        try:
            return await asyncio.gather(*(async_client.embed(model="tiny", input=t) for t in texts))
        finally:
            await async_client.close()

    responses = asyncio.run(gather())
    assert all(len(r.embeddings) == 1 for r in responses)
    one_by_one = np.array([r.embeddings[0] for r in responses])
    with ollama.Client(host=daemon.url, timeout=60) as client:
        batched = np.array(client.embed(model="tiny", input=texts).embeddings)
    assert one_by_one.shape == batched.shape == (32, DIM)
    assert_vectors(one_by_one, batched)  # same order, same values
    assert_vectors(one_by_one, unit(reference_vectors(tiny_dir, texts)))


# ---------------------------------------------------------------------------------------------- Chroma


# Chroma's OllamaEmbeddingFunction builds its own ollama.Client from a URL: over a socket.


@pytest.fixture(scope="module")
def chroma() -> Iterator[Any]:
    import chromadb
    from chromadb.config import Settings

    # Ephemeral and in-process: no server, no network, no telemetry.
    yield chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False))


@pytest.mark.parametrize("path", ["", "/api/embeddings"], ids=["base-url", "full-embeddings-url"])
def test_chroma_ollama_embedding_function(
    chroma: Any, daemon: Daemon, tiny_dir: Path, expected: np.ndarray, path: str
) -> None:
    from chromadb.utils.embedding_functions import OllamaEmbeddingFunction

    url = daemon.url + path
    function = OllamaEmbeddingFunction(url=url, model_name="tiny")
    vectors = function(DOCUMENTS)
    assert len(vectors) == len(DOCUMENTS)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 and v.shape == (DIM,) for v in vectors)
    assert_vectors(np.stack(vectors), expected)

    collection = chroma.create_collection(name=f"clients-{'full' if path else 'base'}", embedding_function=function)
    ids = [f"doc{i}" for i in range(len(DOCUMENTS))]
    collection.add(ids=ids, documents=DOCUMENTS)
    assert collection.count() == len(DOCUMENTS)
    stored = collection.get(ids=ids, include=["embeddings"])
    order = [stored["ids"].index(i) for i in ids]
    assert_vectors(np.asarray(stored["embeddings"])[order], expected)

    for i in (0, 3, 7):
        result = collection.query(query_texts=[DOCUMENTS[i]], n_results=3)
        assert result["ids"][0][0] == f"doc{i}"
        assert result["documents"][0][0] == DOCUMENTS[i]
        assert result["distances"][0][0] < 1e-4 < result["distances"][0][1]


def test_chroma_unknown_model_names_it(daemon: Daemon) -> None:
    from chromadb.utils.embedding_functions import OllamaEmbeddingFunction

    for url in (daemon.url, daemon.url + "/api/embeddings"):
        function = OllamaEmbeddingFunction(url=url, model_name="unknown-model")
        with pytest.raises(Exception, match='model "unknown-model" not found'):
            function(["hello"])


def test_chroma_wrong_path_says_404(daemon: Daemon) -> None:
    """Chroma's own test: a url with a wrong path must fail with an error that mentions 404."""
    from chromadb.utils.embedding_functions import OllamaEmbeddingFunction

    function = OllamaEmbeddingFunction(url=daemon.url + "/this_is_wrong", model_name="tiny")
    with pytest.raises(Exception, match="404"):
        function(["hello"])


def old_style_client(url: str, model: str, texts: list[str], transport: httpx.BaseTransport) -> list[list[float]]:
    """Chroma's old httpx OllamaEmbeddingFunction (before c2cd7a1): one POST per text to the full URL,
    `{"model", "prompt"}`, status never checked, only responses with an `embedding` key kept."""
    with httpx.Client(timeout=60, transport=transport) as session:
        responses = [session.post(url, json={"model": model, "prompt": text}).json() for text in texts]
    return [r["embedding"] for r in responses if "embedding" in r]


def test_chroma_old_style_client(app: InProcess, tiny_variants: dict[str, Path]) -> None:
    url, transport = IN_PROCESS_URL + "/api/embeddings", AppTransport(app.client)
    vectors = old_style_client(url, "tiny-raw", DOCUMENTS, transport)
    assert len(vectors) == len(DOCUMENTS), "one vector per document"
    raw = reference_vectors(tiny_variants["raw"], DOCUMENTS)
    assert_vectors(vectors, raw.astype(np.float64))
    assert np.allclose(vectors, raw, rtol=1e-4, atol=1e-5)  # raw pooled values, not normalized
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=0.05)
    # The old client silently drops failures: an error body must not carry an `embedding` key.
    assert old_style_client(url, "unknown-model", DOCUMENTS[:2], transport) == []


# ---------------------------------------------------------------------------------------------- OpenAI SDK


@pytest.fixture(scope="module")
def openai_client(app: InProcess) -> Iterator[openai.OpenAI]:
    """The OpenAI SDK in process: it sends through the httpx.Client it is given, on a transport onto the app."""
    http = httpx.Client(transport=AppTransport(app.client))
    with openai.OpenAI(base_url=IN_PROCESS_URL + "/v1", api_key="ollama", max_retries=0, http_client=http) as sdk:
        yield sdk


def test_openai_default_is_base64_on_the_wire(app: InProcess, tiny_dir: Path, expected: np.ndarray) -> None:
    sent: list[dict[str, Any]] = []

    def record(request: httpx.Request) -> None:
        if request.url.path.endswith("/embeddings"):
            sent.append(json.loads(request.content))

    with httpx.Client(event_hooks={"request": [record]}, transport=AppTransport(app.client)) as http:
        sdk = openai.OpenAI(base_url=IN_PROCESS_URL + "/v1", api_key="ollama", max_retries=0, http_client=http)
        response = sdk.embeddings.create(model="tiny", input=DOCUMENTS)
    assert len(sent) == 1 and sent[0]["encoding_format"] == "base64", sent
    assert response.model == "tiny"
    assert [d.index for d in response.data] == list(range(len(DOCUMENTS)))
    assert all(isinstance(d.embedding, list) and len(d.embedding) == DIM for d in response.data)
    assert_vectors([d.embedding for d in response.data], expected)
    total = token_total(tiny_dir, DOCUMENTS)
    assert response.usage.prompt_tokens == response.usage.total_tokens == total

    # The same request by hand: the field really is a base64 string of little-endian float32.
    raw = app.client.post("/v1/embeddings", json=sent[0])
    assert raw.status_code == 200
    data = raw.json()["data"]
    assert all(isinstance(d["embedding"], str) for d in data)
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data])
    assert decoded.shape == (len(DOCUMENTS), DIM)
    assert_vectors(decoded, expected)
    assert np.array_equal(decoded, np.asarray([d.embedding for d in response.data], dtype=np.float32))


def test_openai_float_and_dimensions(openai_client: openai.OpenAI, tiny_dir: Path, expected: np.ndarray) -> None:
    floats = openai_client.embeddings.create(model="tiny", input=DOCUMENTS, encoding_format="float")
    assert [d.index for d in floats.data] == list(range(len(DOCUMENTS)))
    assert_vectors([d.embedding for d in floats.data], expected)
    assert_unit_norm([d.embedding for d in floats.data])

    single = openai_client.embeddings.create(model="tiny", input=DOCUMENTS[5])
    assert len(single.data) == 1
    assert_vectors([single.data[0].embedding], expected[5:6])

    short = openai_client.embeddings.create(model="tiny", input=DOCUMENTS[:4], dimensions=8)
    assert np.asarray([d.embedding for d in short.data]).shape == (4, 8)
    assert_vectors([d.embedding for d in short.data], unit(expected[:4, :8]))
    short_floats = openai_client.embeddings.create(
        model="tiny", input=DOCUMENTS[:4], dimensions=8, encoding_format="float"
    )
    assert_vectors([d.embedding for d in short_floats.data], unit(expected[:4, :8]))


def test_openai_unknown_model_and_models_list(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client.embeddings.create(model="nope", input="hello")
    assert caught.value.status_code == 404
    assert 'model "nope" not found' in str(caught.value)
    ids = [m.id for m in openai_client.models.list()]
    assert "tiny:latest" in ids
    assert {"tiny-cls:latest", "tiny-last:latest", "tiny-raw:latest"} <= set(ids)
    tiny = openai_client.models.retrieve("tiny:latest")
    assert tiny.id == "tiny:latest" and tiny.owned_by == "library"


# ---------------------------------------------------------------------------------------------- LangChain


def test_langchain_ollama_embeddings(daemon: Daemon, tiny_dir: Path, expected: np.ndarray) -> None:
    """Over a socket, sync and async."""
    from langchain_ollama import OllamaEmbeddings

    sent: list[dict[str, Any]] = []

    def record(request: httpx.Request) -> None:
        sent.append(json.loads(request.content))

    embeddings = OllamaEmbeddings(
        model="tiny", base_url=daemon.url, sync_client_kwargs={"event_hooks": {"request": [record]}}
    )
    documents = embeddings.embed_documents(DOCUMENTS)
    assert_vectors(documents, expected)
    # It really sent the 13 null options, and the daemon took them.
    assert set(sent[0]["options"]) == LANGCHAIN_OPTION_KEYS
    assert all(v is None for v in sent[0]["options"].values())

    query = embeddings.embed_query(DOCUMENTS[2])
    assert isinstance(query, list) and len(query) == DIM
    assert_vectors([query], expected[2:3])

    async def both() -> tuple[list[list[float]], list[float]]:
        # One event loop for both: the embeddings object keeps one httpx.AsyncClient, bound to its loop.
        return await embeddings.aembed_documents(DOCUMENTS), await embeddings.aembed_query(DOCUMENTS[1])

    async_documents, async_query = asyncio.run(both())
    assert_vectors(async_documents, expected)
    assert_vectors([async_query], expected[1:2])


def test_langchain_validate_model_on_init(app: InProcess, expected: np.ndarray) -> None:
    """In process: LangChain passes `sync_client_kwargs` to ollama's httpx.Client."""
    from langchain_ollama import OllamaEmbeddings

    kwargs = {"sync_client_kwargs": {"transport": AppTransport(app.client)}}
    for model in ("tiny", "tiny:latest"):
        checked = OllamaEmbeddings(model=model, base_url=IN_PROCESS_URL, validate_model_on_init=True, **kwargs)
        assert_vectors(checked.embed_documents(DOCUMENTS[:2]), expected[:2])
    with pytest.raises(ValueError, match="not found in Ollama"):
        OllamaEmbeddings(model="nope", base_url=IN_PROCESS_URL, validate_model_on_init=True, **kwargs)


# ---------------------------------------------------------------------------------------------- curl


def test_curl(daemon: Daemon, tiny_dir: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed on this machine")
    body = '{"model":"tiny","input":"hi"}'
    # No -H: curl sends application/x-www-form-urlencoded, as in the README one-liners people paste.
    result = subprocess.run(
        [curl, "-s", "-X", "POST", daemon.url + "/api/embed", "-d", body],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    parsed = json.loads(result.stdout)
    assert parsed["model"] == "tiny"
    assert len(parsed["embeddings"]) == 1 and len(parsed["embeddings"][0]) == DIM
    assert_vectors(parsed["embeddings"], expect_one(tiny_dir, "hi"))

    head = subprocess.run([curl, "-sI", daemon.url + "/"], capture_output=True, text=True, timeout=30, check=True)
    status_line = head.stdout.splitlines()[0]
    assert status_line.split()[1] == "200", head.stdout
