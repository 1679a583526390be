"""Reranking in process (and curl over a socket): cross-encoders converted from their checkpoints, scored as
sentence-transformers' CrossEncoder scores them, behind /api/rerank, Cohere's and Jina's /v1 and /v2 /rerank, and
TEI's /rerank."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cohere
import httpx
import numpy as np
import openvino as ov
import pytest

from tests.conftest import IN_PROCESS_URL, AppTransport, Daemon, InProcess, reference_rows, require_shared
from tests.test_convert import FIXTURES, minilm_cross_encoder

# Cross-encoders from a checkpoint (converted by ovembed) and from an ONNX export (read by OpenVINO), and a
# Qwen3-Reranker-shaped language model, which `--task rerank` makes a reranker.
RERANKERS = ("bert-rerank", "xlm-roberta-rerank", "bert-rerank-onnx", "qwen3-rerank")
CREATE_OPTIONS = {"qwen3-rerank": {"task": "rerank"}}
# Against CrossEncoder.predict in float32: both networks in fp32 weights and compute.
SCORE_TOLERANCE = 1e-4
LOGIT_TOLERANCE = 5e-4
REGRESSION_GUARD = 20.0  # seconds: far above the time taken, to fail only a return to minutes of tokenizing


def _pairs(fixture: str) -> dict[str, list[str]]:
    """The fixture's pairs as documents per query, in the order of its reference scores."""
    by_query: dict[str, list[str]] = {}
    for query, document in json.loads((FIXTURES / fixture / "pairs.json").read_text(encoding="utf-8")):
        by_query.setdefault(query, []).append(document)
    return by_query


def _reference(fixture: str, kind: str) -> dict[str, np.ndarray]:
    values = np.load(FIXTURES / fixture / f"{kind}.npy").ravel()
    out, start = {}, 0
    for query, documents in _pairs(fixture).items():
        out[query] = values[start : start + len(documents)]
        start += len(documents)
    return out


@pytest.fixture(scope="module")
def rerankers(app: InProcess) -> Iterator[InProcess]:
    """The shared app with the four rerankers, stored with fp32 weights."""
    for fixture in RERANKERS:
        app.create(fixture, FIXTURES / fixture, weights="fp32", **CREATE_OPTIONS.get(fixture, {}))
    yield app
    for fixture in RERANKERS:
        _delete(app, fixture)


def _post(app: InProcess, path: str, body: Any) -> httpx.Response:
    return app.client.post(path, json=body)


def _delete(app: InProcess, *names: str) -> None:
    for name in names:
        app.client.request("DELETE", "/api/delete", json={"model": name})


@pytest.mark.parametrize("fixture", RERANKERS)
def test_api_rerank_scores_as_cross_encoder_does_best_first(rerankers: InProcess, fixture: str) -> None:
    reference = _reference(fixture, "scores")
    for query, documents in _pairs(fixture).items():
        answer = _post(rerankers, "/api/rerank", {"model": fixture, "query": query, "documents": documents})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"] == fixture and body["prompt_eval_count"] > 0
        results = body["results"]
        scores = np.array([r["relevance_score"] for r in sorted(results, key=lambda r: r["index"])])
        assert np.abs(scores - reference[query]).max() <= SCORE_TOLERANCE
        # Best first; equal scores (the duplicate document) keep the request's order.
        expected = sorted(range(len(documents)), key=lambda i: -scores[i])
        assert [r["index"] for r in results] == expected
        assert "document" not in results[0]


def test_a_cross_encoder_shipped_as_openvino_ir_scores_the_same(rerankers: InProcess, tmp_path: Path) -> None:
    """A repo's own `openvino/` export (as cross-encoder/ms-marco-MiniLM ships one), played by the ONNX fixture
    saved as IR by OpenVINO itself."""
    folder = tmp_path / "bert-rerank-ir"
    shutil.copytree(FIXTURES / "bert-rerank-onnx", folder, ignore=shutil.ignore_patterns("onnx"))
    (folder / "openvino").mkdir()
    network = ov.convert_model(str(FIXTURES / "bert-rerank-onnx" / "onnx" / "model.onnx"))
    ov.save_model(network, str(folder / "openvino" / "openvino_model.xml"), compress_to_fp16=False)
    rerankers.create("bert-rerank-ir", folder)
    try:
        query, documents = next(iter(_pairs("bert-rerank-onnx").items()))
        answer = _post(rerankers, "/api/rerank", {"model": "bert-rerank-ir", "query": query, "documents": documents})
        scores = np.array([r["relevance_score"] for r in sorted(answer.json()["results"], key=lambda r: r["index"])])
        assert np.abs(scores - _reference("bert-rerank-onnx", "scores")[query]).max() <= SCORE_TOLERANCE
    finally:
        _delete(rerankers, "bert-rerank-ir")


@pytest.mark.parametrize("fixture", RERANKERS)
def test_tei_rerank_raw_scores_are_the_logits(rerankers: InProcess, fixture: str) -> None:
    reference = _reference(fixture, "logits")
    query, documents = next(iter(_pairs(fixture).items()))
    body = {"model": fixture, "query": query, "texts": documents, "raw_scores": True, "truncate": True}
    answer = _post(rerankers, "/rerank", {**body, "return_text": True})
    assert answer.status_code == 200, answer.text
    results = answer.json()
    assert set(results[0]) == {"index", "score", "text"}
    assert all(r["text"] == documents[r["index"]] for r in results)
    logits = np.array([r["score"] for r in sorted(results, key=lambda r: r["index"])])
    assert np.abs(logits - reference[query]).max() <= LOGIT_TOLERANCE


def test_cohere_clients_rerank_against_v1_and_v2(rerankers: InProcess) -> None:
    query, documents = next(iter(_pairs("xlm-roberta-rerank").items()))
    reference = _reference("xlm-roberta-rerank", "scores")[query]
    best = int(np.argmax(reference))

    # The SDKs in process: cohere sends through any httpx.Client it is given, here one on the app's transport.
    http = httpx.Client(transport=AppTransport(rerankers.client))
    v2 = cohere.ClientV2(api_key="unused", base_url=IN_PROCESS_URL, httpx_client=http).rerank(
        model="xlm-roberta-rerank", query=query, documents=documents, top_n=3
    )
    assert next(r.index for r in v2.results) == best and len(v2.results) == 3
    assert abs(v2.results[0].relevance_score - reference[best]) <= SCORE_TOLERANCE

    v1 = cohere.Client(api_key="unused", base_url=IN_PROCESS_URL, httpx_client=http).rerank(
        model="xlm-roberta-rerank", query=query, documents=documents, top_n=2, return_documents=True
    )
    assert next(r.index for r in v1.results) == best and len(v1.results) == 2
    assert v1.results[0].document is not None and v1.results[0].document.text == documents[best]


def test_open_webui_and_jina_shapes(rerankers: InProcess) -> None:
    """Open WebUI's external reranker sends a bearer token and reads index and relevance_score; Jina's clients
    send documents as objects and read usage."""
    query, documents = next(iter(_pairs("bert-rerank").items()))
    webui = rerankers.client.post(
        "/v1/rerank",
        json={"model": "bert-rerank", "query": query, "documents": documents, "top_n": 5},
        headers={"Authorization": "Bearer unused"},
    )
    assert webui.status_code == 200, webui.text
    assert len(webui.json()["results"]) == 5
    assert {"index", "relevance_score"} <= set(webui.json()["results"][0])

    objects = [{"text": d} for d in documents]
    jina = _post(rerankers, "/v1/rerank", {"model": "bert-rerank", "query": query, "documents": objects})
    assert jina.status_code == 200
    assert jina.json()["usage"]["total_tokens"] > 0
    assert [r["index"] for r in jina.json()["results"]] == [r["index"] for r in _rank(rerankers, query, documents)]


def _rank(app: InProcess, query: str, documents: list[str]) -> list[dict[str, Any]]:
    answer = _post(app, "/api/rerank", {"model": "bert-rerank", "query": query, "documents": documents})
    assert answer.status_code == 200, answer.text
    return answer.json()["results"]


def test_curl_reaches_api_rerank(daemon: Daemon) -> None:
    """Over a socket: the shared daemon with a reranker stored beside it."""
    daemon.store("bert-rerank", FIXTURES / "bert-rerank", weights="fp32")
    body = json.dumps({"model": "bert-rerank", "query": "sky", "documents": ["blue sky", "brown fox"]})
    done = subprocess.run(
        ["curl", "-s", "--fail-with-body", f"{daemon.url}/api/rerank", "-d", body],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(r["index"] for r in json.loads(done.stdout)["results"]) == [0, 1]


def test_edge_cases_answer_sensibly(rerankers: InProcess) -> None:
    words = "the quick brown fox jumps over the lazy dog".split()
    many = [" ".join(words[i % 9 :] + words[: i % 9]) + f" {i}" for i in range(1000)]
    answer = _post(rerankers, "/api/rerank", {"model": "bert-rerank", "query": "fox", "documents": many})
    assert answer.status_code == 200
    assert sorted(r["index"] for r in answer.json()["results"]) == list(range(1000))

    empty = _post(rerankers, "/api/rerank", {"model": "bert-rerank", "query": "fox", "documents": []})
    assert (empty.status_code, empty.json()["results"]) == (200, [])

    duplicates = _rank(rerankers, "fox", ["a fox", "a dog", "a fox"])
    score = {r["index"]: r["relevance_score"] for r in duplicates}
    assert score[0] == score[2]
    assert [r["index"] for r in duplicates].index(0) < [r["index"] for r in duplicates].index(2)

    above = _post(rerankers, "/api/rerank", {"model": "bert-rerank", "query": "fox", "documents": ["a"], "top_n": 5})
    assert len(above.json()["results"]) == 1

    # A query far past the context, with many documents: cut once to what a pair can hold, so it is quick and
    # scores as any query of the same first tokens does.
    huge, enough = "why is the sky blue? " * 5000, "why is the sky blue? " * 10
    started = time.monotonic()
    huge_ranked = _rank(rerankers, huge, many[:500])
    # Well under a second when cut once; minutes if the 100,000 characters were tokenized for each pair.
    assert time.monotonic() - started < REGRESSION_GUARD
    assert huge_ranked == _rank(rerankers, enough, many[:500])

    long_text = " ".join(words * 40)  # far past the 24-token context
    cut = _rank(rerankers, "fox", [long_text, "fox"])
    assert len(cut) == 2
    refused = _post(rerankers, "/rerank", {"model": "bert-rerank", "query": "fox", "texts": [long_text]})
    assert (refused.status_code, refused.json()) == (
        400,
        {"error": "the input length exceeds the context length", "error_type": "validation"},
    )


def test_the_wrong_kind_of_model_is_a_clear_400_and_show_says_which_kind(rerankers: InProcess) -> None:
    embed = _post(rerankers, "/api/embed", {"model": "bert-rerank", "input": "x"})
    assert (embed.status_code, embed.json()) == (400, {"error": '"bert-rerank:latest" does not support embedding'})
    openai = _post(rerankers, "/v1/embeddings", {"model": "bert-rerank", "input": "x"})
    assert openai.status_code == 400
    rerank = _post(rerankers, "/api/rerank", {"model": "tiny", "query": "q", "documents": ["d"]})
    assert (rerank.status_code, rerank.json()) == (400, {"error": '"tiny:latest" does not support rerank'})
    cohere_shape = _post(rerankers, "/v2/rerank", {"model": "tiny", "query": "q", "documents": ["d"]})
    assert (cohere_shape.status_code, cohere_shape.json()) == (
        400,
        {"message": '"tiny:latest" does not support rerank'},
    )
    missing = _post(rerankers, "/api/rerank", {"model": "nope", "query": "q", "documents": ["d"]})
    assert (missing.status_code, missing.json()) == (404, {"error": 'model "nope" not found, try pulling it first'})

    shown = _post(rerankers, "/api/show", {"model": "bert-rerank"}).json()
    assert shown["capabilities"] == ["rerank"]
    assert _post(rerankers, "/api/show", {"model": "tiny"}).json()["capabilities"] == ["embedding"]


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        (
            {"model": "bert-rerank", "query": 3, "documents": ["d"]},
            400,
            "json: cannot unmarshal number into Go struct field RerankRequest.query of type string",
        ),
        ({"model": "bert-rerank", "query": "q", "documents": [1, 2]}, 400, "documents must be a list of strings"),
        (
            {"model": "bert-rerank", "query": "q", "documents": ["d"], "top_n": "3"},
            400,
            "json: cannot unmarshal string into Go struct field RerankRequest.top_n of type int",
        ),
        (
            {"model": "bert-rerank", "query": "q", "documents": ["d"], "keep_alive": "soon"},
            400,
            'time: invalid duration "soon"',
        ),
        ({"model": "", "query": "q", "documents": ["d"]}, 404, "model '' not found"),
    ],
)
def test_bad_rerank_requests_get_ollamas_errors(
    rerankers: InProcess, body: dict[str, Any], status: int, text: str
) -> None:
    answer = _post(rerankers, "/api/rerank", body)
    assert (answer.status_code, answer.json()) == (status, {"error": text})


def test_the_reranker_fixtures_are_what_the_tests_say() -> None:
    """Scores spread over (0, 1), so that a wrong network or head could not pass by luck."""
    for fixture in RERANKERS:
        scores = np.load(FIXTURES / fixture / "scores.npy")
        assert scores.std() > 0.1 and scores.min() > 0.0 and scores.max() < 1.0
        head = "ForCausalLM" if fixture.startswith("qwen3") else "ForSequenceClassification"
        assert Path(FIXTURES / fixture / "config.json").read_text().count(head) == 1


def test_a_real_encoders_scores_keep_their_order_in_the_default_fp16_weights(app: InProcess, tmp_path: Path) -> None:
    """Measured on this encoder: fp16 weights move a score by at most 0.0015 (logits spread to a std of 2, as
    the fixtures are), and every query keeps its top five."""
    require_shared()
    folder = minilm_cross_encoder(tmp_path / "minilm-ce")
    app.create("minilm-ce-fp32", folder, weights="fp32")
    app.create("minilm-ce", folder)
    texts = [row["text"] for row in reference_rows()[0]]
    try:
        for query in ("how do I reset my router?", "cat", "embedding models and vectors"):
            body = {"query": query, "documents": texts, "truncate": True}
            exact = _logits(app, {**body, "model": "minilm-ce-fp32"})
            default = _logits(app, {**body, "model": "minilm-ce"})
            spread = 2.0 / exact.std()
            assert (
                np.abs(_sigmoid((default - exact.mean()) * spread) - _sigmoid((exact - exact.mean()) * spread)).max()
                < 0.005
            )
            assert list(np.argsort(-default)[:5]) == list(np.argsort(-exact)[:5])
    finally:
        _delete(app, "minilm-ce", "minilm-ce-fp32")


def _logits(app: InProcess, body: dict[str, Any]) -> np.ndarray:
    tei = {
        "model": body["model"],
        "query": body["query"],
        "texts": body["documents"],
        "raw_scores": True,
        "truncate": True,
    }
    results = _post(app, "/rerank", tei).json()
    return np.array([r["score"] for r in sorted(results, key=lambda r: r["index"])])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
