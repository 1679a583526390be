"""Sparse and multi-vector outputs through the real app: `/api/embed` with `"sparse"` and `"multivector"`, TEI's
`/embed_sparse`, the capabilities /api/show lists, base64, and the rules dense vectors keep.

The model here is tests/tinymodel.py's network with FlagEmbedding's two heads beside it (bge-m3's layout), so
every output is recomputed in float64 numpy from the network's own token states: FlagEmbedding's arithmetic
written out independently of the daemon's. tests/test_peer_outputs.py holds real checkpoints to FlagEmbedding's,
SPLADE's and pylate's own outputs.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from daemon.inference.batcher import Lane
from daemon.inference.engine import Engine
from daemon.inference.pool import BatchLimits
from modelstore.architectures.torch_weights import read_state_dict
from modelstore.create import create_from_folder
from modelstore.names import parse_name
from modelstore.spec import ModelSpec
from modelstore.store import ModelStore
from tests.conftest import scrape_text, serving, store_models
from tests.contract import NATIVE_JSON
from tests.tinymodel import build_tiny_model, reference_states, reference_vectors

HEADS = Path(__file__).parent / "fixtures" / "torch-weights"
# Repeated words, so a token id's largest weight must win; a lone word; a text cut by the 32-token context.
TEXTS = ["water water and the water", "world", "the sky is blue", " ".join(["light"] * 40)]
SPECIAL_IDS = {0, 1, 2, 3}  # tests/tinymodel.py's [PAD], [UNK], [CLS], [SEP]: its [MASK] (4) counts, as FlagEmbedding's


def with_heads(folder: Path) -> Path:
    """A tinymodel folder with FlagEmbedding's two heads beside its network, as bge-m3's repo has them."""
    for head in ("sparse_linear.pt", "colbert_linear.pt"):
        shutil.copyfile(HEADS / head, folder / head)
    return folder


@pytest.fixture(scope="module")
def m3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tinymodel's network, CLS-pooled and normalized as bge-m3's dense output, with FlagEmbedding's heads."""
    return with_heads(build_tiny_model(tmp_path_factory.mktemp("m3") / "m3", pooling="cls", seed=7))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, m3_dir: Path, tiny_dir: Path) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("outputs")
    store_models(root, {"m3": m3_dir, "tiny": tiny_dir})
    with serving(root) as client:
        yield client


def _expected_sparse(ids: np.ndarray, states: np.ndarray) -> dict[int, float]:
    """FlagEmbedding's lexical weights: relu of the one-row head per token, special tokens and zeros dropped,
    a repeated token keeping its largest weight."""
    head = read_state_dict(HEADS / "sparse_linear.pt")
    weights = np.maximum(states @ head["weight"][0].astype(np.float64) + float(head["bias"][0]), 0.0)
    out: dict[int, float] = {}
    for token, weight in zip(ids.tolist(), weights, strict=True):
        if token not in SPECIAL_IDS and weight > 0:
            out[token] = max(out.get(token, 0.0), float(weight))
    return out


def _expected_multivector(states: np.ndarray) -> np.ndarray:
    """FlagEmbedding's ColBERT vectors: the square head on every position but the first, each normalized."""
    head = read_state_dict(HEADS / "colbert_linear.pt")
    vectors = states[1:] @ head["weight"].T.astype(np.float64) + head["bias"]
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _embed(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/embed", json={"model": "m3", **body})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == NATIVE_JSON
    return response.json()


def _assert_sparse(got: dict[str, list[Any]], expected: dict[int, float]) -> None:
    assert got["indices"] == sorted(expected), "indices ascending, exactly the positive non-special tokens"
    np.testing.assert_allclose(got["values"], [expected[i] for i in got["indices"]], rtol=1e-5, atol=1e-6)


def _cosines(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return np.sum(got * expected, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)


def test_sparse_and_multivector_are_flagembeddings_arithmetic_on_the_networks_states(
    client: TestClient, m3_dir: Path
) -> None:
    answer = _embed(client, input=TEXTS, sparse=True, multivector=True)
    assert list(answer)[:4] == ["model", "embeddings", "sparse_embeddings", "multivector_embeddings"]
    np.testing.assert_allclose(answer["embeddings"], reference_vectors(m3_dir, TEXTS), atol=1e-5)
    kept = 0
    for (ids, states), sparse, multivector in zip(
        reference_states(m3_dir, TEXTS), answer["sparse_embeddings"], answer["multivector_embeddings"], strict=True
    ):
        expected = _expected_sparse(ids, states)
        kept += len(expected)
        _assert_sparse(sparse, expected)
        assert len(multivector) == len(ids) - 1  # the CLS dropped, the final separator kept
        assert _cosines(np.array(multivector), _expected_multivector(states)).min() >= 0.99999
        np.testing.assert_allclose(np.linalg.norm(multivector, axis=1), 1.0, atol=1e-5)
    tokens = sum(len(ids) for ids, _ in reference_states(m3_dir, TEXTS))
    assert answer["prompt_eval_count"] == tokens
    assert 0 < kept < tokens, "some weights kept and some dropped, or this test checks little"


def test_a_text_gives_the_same_outputs_alone_and_in_a_batch(client: TestClient) -> None:
    together = _embed(client, input=TEXTS, sparse=True, multivector=True)
    for index, text in enumerate(TEXTS):
        alone = _embed(client, input=text, sparse=True, multivector=True)
        assert alone["sparse_embeddings"][0]["indices"] == together["sparse_embeddings"][index]["indices"]
        np.testing.assert_allclose(
            alone["sparse_embeddings"][0]["values"], together["sparse_embeddings"][index]["values"], rtol=1e-5
        )
        multivector = np.array(alone["multivector_embeddings"][0])
        assert _cosines(multivector, np.array(together["multivector_embeddings"][index])).min() >= 0.99999


def test_each_output_is_given_only_when_asked_and_a_plain_request_is_answered_as_before(client: TestClient) -> None:
    plain = _embed(client, input=TEXTS)
    assert set(plain) == {"model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"}
    sparse = _embed(client, input=TEXTS, sparse=True, multivector=False)
    assert "sparse_embeddings" in sparse and "multivector_embeddings" not in sparse
    multivector = _embed(client, input=TEXTS, multivector=True)
    assert "multivector_embeddings" in multivector and "sparse_embeddings" not in multivector
    np.testing.assert_allclose(plain["embeddings"], sparse["embeddings"], atol=1e-6)


def test_base64_encodes_dense_and_token_vectors_as_openais_little_endian_float32(client: TestClient) -> None:
    floats = _embed(client, input=TEXTS[:2], multivector=True, sparse=True)
    packed = _embed(client, input=TEXTS[:2], multivector=True, sparse=True, encoding_format="BASE64")

    def decoded(text: str) -> np.ndarray:
        return np.frombuffer(base64.b64decode(text), dtype="<f4")

    np.testing.assert_allclose([decoded(v) for v in packed["embeddings"]], floats["embeddings"], atol=1e-6)
    for tokens, expected in zip(packed["multivector_embeddings"], floats["multivector_embeddings"], strict=True):
        assert all(isinstance(v, str) for v in tokens)
        np.testing.assert_allclose([decoded(v) for v in tokens], expected, atol=1e-6)
    assert packed["sparse_embeddings"] == floats["sparse_embeddings"]  # small already: stays JSON


@pytest.mark.parametrize("output", ["sparse", "multivector"])
def test_a_model_without_the_output_answers_ollamas_capability_error(client: TestClient, output: str) -> None:
    response = client.post("/api/embed", json={"model": "tiny", "input": "x", output: True})
    assert response.status_code == 400
    assert response.json() == {"error": f'"tiny:latest" does not support {output}'}
    assert client.post("/api/embed", json={"model": "tiny", "input": "x", output: False}).status_code == 200


def test_show_lists_each_output_as_a_capability(client: TestClient) -> None:
    shown = client.post("/api/show", json={"model": "m3"}).json()
    assert shown["capabilities"] == ["embedding", "sparse", "multivector"]
    assert shown["model_info"]["ovembed.multivector_dimension"] == 16  # the ColBERT head's width
    assert client.post("/api/show", json={"model": "tiny"}).json()["capabilities"] == ["embedding"]


def test_openais_route_stays_dense(client: TestClient) -> None:
    answer = client.post("/v1/embeddings", json={"model": "m3", "input": TEXTS[:1], "sparse": True})
    assert answer.status_code == 200
    assert set(answer.json()["data"][0]) == {"object", "embedding", "index"}


def test_teis_embed_sparse_answers_index_value_lists_from_the_only_sparse_model(client: TestClient) -> None:
    short = TEXTS[:-1]  # within the context: TEI does not truncate unless asked
    named = client.post("/api/embed", json={"model": "m3", "input": short, "sparse": True}).json()
    response = client.post("/embed_sparse", json={"inputs": short})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    for got, expected in zip(response.json(), named["sparse_embeddings"], strict=True):
        assert [item["index"] for item in got] == expected["indices"]
        np.testing.assert_allclose([item["value"] for item in got], expected["values"], rtol=1e-6)
    one = client.post("/embed_sparse", json={"inputs": TEXTS[0], "model": "m3"}).json()
    assert one == response.json()[:1]


def test_teis_embed_sparse_does_not_truncate_unless_asked(client: TestClient) -> None:
    long_text = TEXTS[-1]
    refused = client.post("/embed_sparse", json={"inputs": long_text})
    assert refused.status_code == 400
    assert refused.json() == {"error": "the input length exceeds the context length", "error_type": "validation"}
    assert client.post("/embed_sparse", json={"inputs": long_text, "truncate": True}).status_code == 200


def test_the_vector_cache_holds_no_sparse_answers_and_metrics_count_each_output(tmp_path: Path, m3_dir: Path) -> None:
    store_models(tmp_path, {"m3": m3_dir})
    with serving(tmp_path, vector_cache_mb=16) as cached:
        before = scrape_text(cached.get("/metrics").text)
        asked = cached.post("/api/embed", json={"model": "m3", "input": TEXTS, "sparse": True, "multivector": True})
        plain = cached.post("/api/embed", json={"model": "m3", "input": TEXTS}).json()
        after = scrape_text(cached.get("/metrics").text)
    np.testing.assert_allclose(asked.json()["embeddings"], plain["embeddings"], atol=1e-6)

    def grew(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)

    assert grew("ovembed_embedded_outputs_total", (("output", "sparse"),)) == len(TEXTS)
    assert grew("ovembed_embedded_outputs_total", (("output", "multivector"),)) == len(TEXTS)
    # The request with outputs went first and left nothing in the cache: the plain one missed every text.
    assert grew("ovembed_cache_misses_total") == len(TEXTS)
    assert grew("ovembed_cache_hits_total") == 0


def test_token_vectors_past_their_bound_are_refused_before_they_run(tmp_path: Path, m3_dir: Path) -> None:
    store_models(tmp_path, {"m3": m3_dir})
    texts = [TEXTS[-1]] * 600  # 32 tokens each, 16 floats a token: 1.2 MB of float32 over a 1 MB bound
    with serving(tmp_path, max_multivector_mb=1) as bounded:
        refused = bounded.post("/api/embed", json={"model": "m3", "input": texts, "multivector": True})
        assert refused.status_code == 400
        assert refused.json() == {
            "error": "the token vectors of these inputs would take 1.2 MB as float32, over "
            "OVEMBED_MAX_MULTIVECTOR_MB (1.0 MB): send fewer or shorter inputs per request"
        }
        fits = bounded.post("/api/embed", json={"model": "m3", "input": texts[:400], "multivector": True})
        assert fits.status_code == 200
        assert len(fits.json()["multivector_embeddings"]) == 400


def test_requests_asking_for_different_outputs_share_batches_and_each_gets_its_own(
    tmp_path: Path, m3_dir: Path
) -> None:
    """Four requests for the same texts, each asking for other outputs, meet in one lane: the batches mix them,
    and each answer holds what its request asked for, as each alone gives it."""
    record = create_from_folder(ModelStore(tmp_path), parse_name("m3"), m3_dir)
    model = Engine("CPU", "fp32", "THROUGHPUT", None).load(record)
    mixes: list[set[frozenset[str]]] = []
    infer_outputs = model.infer_outputs

    def spy(slot: int, batch: Any, wanted: Any) -> Any:
        mixes.append({frozenset(w) for w in wanted})
        return infer_outputs(slot, batch, wanted)

    model.infer_outputs = spy  # type: ignore[method-assign]
    asks = [frozenset(), frozenset({"sparse"}), frozenset({"multivector"}), frozenset({"sparse", "multivector"})]

    async def run() -> tuple[list[Any], list[Any]]:
        lane = Lane(model, BatchLimits(max_tokens=4096, max_texts=64))
        together = await asyncio.gather(*(lane.embed(TEXTS, 32, True, wanted) for wanted in asks))
        alone = [await lane.embed(TEXTS, 32, True, wanted) for wanted in asks]
        await lane.close()
        return together, alone

    together, alone = asyncio.run(run())
    assert any(len(mix) > 1 for mix in mixes), "the requests shared no batch, so this checks nothing"
    for wanted, mixed, single in zip(asks, together, alone, strict=True):
        np.testing.assert_allclose(mixed.vectors, single.vectors, atol=1e-6)
        assert (mixed.sparse is None) == ("sparse" not in wanted)
        assert (mixed.multivector is None) == ("multivector" not in wanted)
        for got, expected in zip(mixed.sparse or [], single.sparse or [], strict=True):
            assert got.indices.tolist() == expected.indices.tolist()
            np.testing.assert_allclose(got.values, expected.values, rtol=1e-5)
        for got, expected in zip(mixed.multivector or [], single.multivector or [], strict=True):
            assert _cosines(got, expected).min() >= 0.99999


def test_a_manifest_from_before_outputs_were_kept_serves_its_heads() -> None:
    """Models stored while the heads were kept but not yet served have `heads` and no `outputs` in their spec."""
    written = ModelSpec.from_json(
        {
            "architecture": "bert",
            "pooling": "cls",
            "normalize": True,
            "context_length": 32,
            "dimension": 16,
            "precision": "fp16",
            "parameter_count": 1,
            "heads": ["sparse", "multivector"],
        }
    )
    assert written.outputs == ("dense", "sparse", "multivector")
    assert ModelSpec.from_json({**written.to_json(), "heads": [], "outputs": None}).outputs == ("dense",)


def test_the_daemon_keeps_numpys_blas_to_the_calling_thread() -> None:
    """Heads and Dense layers run in numpy on the inference slots' threads; BLAS threads of its own would spin
    against OpenVINO's streams. Importing the daemon first sets that, unless the environment says otherwise."""
    pytest.importorskip("threadpoolctl")
    probe = (
        "import {first}numpy, threadpoolctl; "
        "print(max(p['num_threads'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas'))"
    )
    env = {key: value for key, value in os.environ.items() if key != "OPENBLAS_NUM_THREADS"}

    def threads(first: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", probe.format(first=first)], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return int(done.stdout)

    assert threads("daemon, ") == 1
    assert threads("") == os.cpu_count()  # numpy alone: one per core
