"""Sparse and multi-vector outputs held to the peers' own: FlagEmbedding's bge-m3, sentence-transformers'
SparseEncoder (SPLADE) and pylate's ColBERT, on tiny checkpoints made by scripts/make-fixtures with those
libraries (fp32 on the CPU).

The bar in fp32 weights: dense cosine >= 0.99999, sparse index sets equal above 1e-3 with values within 1e-3,
each token vector cosine >= 0.99999, and the peers' lexical and MaxSim scores within 1e-3. The default storage
(fp16 weights) is held to the bar measured for it, written beside each test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from tests.conftest import serving, store_models
from tests.test_convert import FIXTURES

M3 = FIXTURES / "xlm-roberta-m3"
SPLADE = FIXTURES / "bert-splade"
# The same ColBERT checkpoint in pylate's layout and in Stanford ColBERT's; pylate's outputs for both.
COLBERT = FIXTURES / "bert-colbert"
STANFORD = FIXTURES / "bert-colbert-stanford"
SPARSE_FLOOR = 1e-3


def _read(folder: Path, name: str) -> Any:
    return json.loads((folder / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """Each fixture stored twice: with fp32 weights (`-fp32`) and in the default storage."""
    root = tmp_path_factory.mktemp("peer-outputs")
    models = {"m3": M3, "splade": SPLADE, "colbert": COLBERT, "stanford": STANFORD}
    store_models(root, {f"{name}-fp32": folder for name, folder in models.items()}, weights="fp32")
    store_models(root, models)
    with serving(root) as client:
        yield client


def _embed(client: TestClient, model: str, texts: list[str], **asked: Any) -> dict[str, Any]:
    response = client.post("/api/embed", json={"model": model, "input": texts, **asked})
    assert response.status_code == 200, response.text
    return response.json()


def _weights(vector: dict[str, list[Any]]) -> dict[int, float]:
    return dict(zip(vector["indices"], vector["values"], strict=True))


def _sparse_gap(got: dict[str, list[Any]], expected: dict[str, list[Any]], floor: float = SPARSE_FLOOR) -> float:
    """The largest difference of a weight (absent is 0), once the index sets above `floor` agree."""
    mine, theirs = _weights(got), _weights(expected)
    assert {i for i, v in mine.items() if v > floor} == {i for i, v in theirs.items() if v > floor}
    return max(abs(mine.get(i, 0.0) - theirs.get(i, 0.0)) for i in mine.keys() | theirs.keys())


def _dot(first: dict[str, list[Any]], second: dict[str, list[Any]]) -> float:
    """The lexical score of two sparse vectors: the sum over shared ids of the products of their weights."""
    weights = _weights(second)
    return sum(v * weights.get(i, 0.0) for i, v in _weights(first).items())


def _cosines(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return np.sum(got * expected, axis=-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(expected, axis=-1)


def _m3_outputs(client: TestClient, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    asked = {"sparse": True, "multivector": True}
    return (
        _embed(client, model, _read(M3, "queries.json"), **asked),
        _embed(client, model, _read(M3, "texts.json"), **asked),
    )


# The default storage's bars: what fp16 weights measured (bge-m3's: dense and token vectors 0.9999996, weights
# within 1.3e-3, lexical scores of up to 1.5 within 3.0e-3, MaxSim within 7e-5), rounded up. Index sets are
# compared in fp32 only: a weight within the fp16 error of the floor may fall either side of it.
NO_INDEX_CHECK = float("inf")


@pytest.mark.parametrize(
    ("model", "bars"), [("m3-fp32", (0.99999, 1e-3, 1e-3, SPARSE_FLOOR)), ("m3", (0.9999, 2e-3, 4e-3, NO_INDEX_CHECK))]
)
def test_bge_m3s_three_outputs_are_flagembeddings(
    client: TestClient, model: str, bars: tuple[float, float, float, float]
) -> None:
    cosine_bar, weight_bar, score_bar, floor = bars
    queries, texts = _m3_outputs(client, model)
    expected_sparse = _read(M3, "sparse.json")
    colbert = np.load(M3 / "colbert.npz")
    for kind, answer, dense in (("query", queries, "query-dense.npy"), ("text", texts, "reference.npy")):
        assert _cosines(np.array(answer["embeddings"]), np.load(M3 / dense)).min() >= cosine_bar
        for got, expected in zip(
            answer["sparse_embeddings"], expected_sparse[f"{kind}s" if kind == "text" else "queries"], strict=True
        ):
            assert _sparse_gap(got, expected, floor) <= weight_bar
        for index, vectors in enumerate(answer["multivector_embeddings"]):
            reference = colbert[f"{kind}-{index}"]
            assert np.shape(vectors) == reference.shape  # tokens - 1: the CLS dropped
            assert _cosines(np.array(vectors), reference).min() >= cosine_bar
    scores = np.load(M3 / "scores.npz")
    lexical = [[_dot(q, t) for t in texts["sparse_embeddings"]] for q in queries["sparse_embeddings"]]
    np.testing.assert_allclose(lexical, scores["lexical"], atol=score_bar)
    # FlagEmbedding's colbert_score: MaxSim summed over the query's vectors, divided by their number.
    maxsim = [
        [np.max(np.array(q) @ np.array(t).T, axis=1).mean() for t in texts["multivector_embeddings"]]
        for q in queries["multivector_embeddings"]
    ]
    np.testing.assert_allclose(maxsim, scores["maxsim"], atol=score_bar)


@pytest.mark.parametrize(
    ("model", "bars"), [("splade-fp32", (1e-3, 1e-3, SPARSE_FLOOR)), ("splade", (5e-3, 2e-2, NO_INDEX_CHECK))]
)
def test_splade_weights_are_sentence_transformers_sparse_encoders(
    client: TestClient, model: str, bars: tuple[float, float, float]
) -> None:
    """fp16 weights (the default) measured: weights within 2.7e-3, dot scores of up to 59 within 8.6e-3."""
    weight_bar, score_bar, floor = bars
    expected = _read(SPLADE, "sparse.json")
    queries = _embed(client, model, _read(SPLADE, "queries.json"), sparse=True)
    texts = _embed(client, model, _read(SPLADE, "texts.json"), sparse=True)
    assert queries["embeddings"] == texts["embeddings"] == []  # SPLADE gives no dense vector
    for answer, kind in ((queries, "queries"), (texts, "texts")):
        for got, theirs in zip(answer["sparse_embeddings"], expected[kind], strict=True):
            assert _sparse_gap(got, theirs, floor) <= weight_bar
    dots = [[_dot(q, t) for t in texts["sparse_embeddings"]] for q in queries["sparse_embeddings"]]
    np.testing.assert_allclose(dots, np.load(SPLADE / "scores.npz")["dot"], atol=score_bar)


def _maxsim(queries: list[Any], documents: list[Any]) -> np.ndarray:
    """pylate's colbert_scores: each query vector's best dot product over the document's, summed."""
    return np.array([[np.max(np.array(q) @ np.array(d).T, axis=1).sum() for d in documents] for q in queries])


@pytest.mark.parametrize(
    ("model", "bars"),
    [("colbert-fp32", (0.99999, 1e-3)), ("stanford-fp32", (0.99999, 1e-3)), ("colbert", (0.9999, 1e-2))],
)
def test_colbert_vectors_are_pylates_in_either_layout(
    client: TestClient, model: str, bars: tuple[float, float]
) -> None:
    """Queries marked and padded with [MASK] to 12 tokens, documents marked with their punctuation dropped.
    fp16 weights (the default) measured: worst token cosine 0.999998, MaxSim scores of up to 11 within 2.9e-3."""
    cosine_bar, score_bar = bars
    queries = _embed(client, model, _read(COLBERT, "queries.json"), multivector=True, input_type="query")
    texts = _embed(client, model, _read(COLBERT, "texts.json"), multivector=True)
    assert queries["embeddings"] == texts["embeddings"] == []  # ColBERT gives no dense vector
    shown = client.post("/api/show", json={"model": model}).json()["model_info"]
    assert shown["ovembed.multivector_dimension"] == 16  # the projection's width, not the network's 32
    reference = np.load(COLBERT / "colbert.npz")
    for kind, answer in (("query", queries), ("text", texts)):
        for index, vectors in enumerate(answer["multivector_embeddings"]):
            assert np.shape(vectors) == reference[f"{kind}-{index}"].shape
            assert _cosines(np.array(vectors), reference[f"{kind}-{index}"]).min() >= cosine_bar
    scores = _maxsim(queries["multivector_embeddings"], texts["multivector_embeddings"])
    np.testing.assert_allclose(scores, np.load(COLBERT / "scores.npz")["maxsim"], atol=score_bar)


@pytest.mark.parametrize("input_type", ["query", "search_query", "document"])
def test_a_colbert_text_gives_the_same_vectors_alone_and_in_a_batch(client: TestClient, input_type: str) -> None:
    """Queries padded to one length and documents of many lengths share batches; Cohere's name for a query
    means the same."""
    texts = _read(COLBERT, "queries.json" if "query" in input_type else "texts.json")
    together = _embed(client, "colbert-fp32", texts, multivector=True, input_type=input_type)
    reference = np.load(COLBERT / "colbert.npz")
    kind = "query" if "query" in input_type else "text"
    for index, text in enumerate(texts):
        alone = _embed(client, "colbert-fp32", [text], multivector=True, input_type=input_type)
        vectors = np.array(alone["multivector_embeddings"][0])
        assert _cosines(vectors, np.array(together["multivector_embeddings"][index])).min() >= 0.99999
        assert _cosines(vectors, reference[f"{kind}-{index}"]).min() >= 0.99999


def test_a_splade_model_answers_a_plain_request_with_how_to_ask_for_its_sparse_vectors(client: TestClient) -> None:
    response = client.post("/api/embed", json={"model": "splade", "input": "why is the sky blue?"})
    assert response.status_code == 400
    assert response.json() == {
        "error": '"splade:latest" gives no dense embedding, only sparse: ask /api/embed for it with "sparse": true'
    }
    openai = client.post("/v1/embeddings", json={"model": "splade", "input": "why is the sky blue?"})
    assert openai.status_code == 400
    assert client.post("/api/show", json={"model": "splade"}).json()["capabilities"] == ["sparse"]


@pytest.mark.parametrize("model", ["splade", "colbert"])
def test_a_model_without_dense_vectors_loads_and_unloads_as_ollama_clients_ask(client: TestClient, model: str) -> None:
    loaded = client.post("/api/embed", json={"model": model, "keep_alive": "5m"})
    assert (loaded.status_code, loaded.json()["embeddings"]) == (200, [])
    assert f"{model}:latest" in [m["name"] for m in client.get("/api/ps").json()["models"]]
    assert client.post("/api/embed", json={"model": model, "input": [], "keep_alive": 0}).status_code == 200


def test_a_long_colbert_query_is_cut_to_the_query_length_and_a_long_document_to_the_document_length(
    client: TestClient,
) -> None:
    """pylate's lengths for this fixture: 12 for queries (no [MASK] left to add), 24 for documents."""
    words = " ".join(["water"] * 60)
    query = _embed(client, "colbert-fp32", [words], multivector=True, input_type="query")
    document = _embed(client, "colbert-fp32", [words], multivector=True)
    assert len(query["multivector_embeddings"][0]) == 12
    assert len(document["multivector_embeddings"][0]) == 24
    assert query["prompt_eval_count"] == 12 and document["prompt_eval_count"] == 24
    refused = client.post(
        "/api/embed", json={"model": "colbert", "input": words, "multivector": True, "truncate": False}
    )
    assert refused.status_code == 400
