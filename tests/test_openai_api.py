"""OpenAI-compatible endpoints in process (httpx's API through Starlette's TestClient, not the openai package):
/v1/embeddings, /v1/models and /v1/models/{model}, as Ollama's compatibility layer answers them
(../shared/ollama-api.md §1.10, §1.11).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient
from tokenizers import Tokenizer

from tests.conftest import InProcess, serving
from tests.tinymodel import reference_vectors

OPENAI_JSON = "application/json"
DIMENSION = 16
TEXTS = ["hello world", "why is the sky blue?", "The quick brown fox jumps over the lazy dog."]
LONG = "Unbelievable!!! supercalifragilistic expialidocious, " * 4


@pytest.fixture(scope="module")
def client(app: InProcess) -> TestClient:
    return app.client


def unit(vectors: Any) -> np.ndarray:
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def create(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == OPENAI_JSON
    return response.json()


def vectors_of(body: dict[str, Any]) -> np.ndarray:
    return np.array([item["embedding"] for item in body["data"]], dtype=np.float64)


def decode(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


def assert_openai_error(response: httpx.Response, status: int, kind: str, message: str | None = None) -> str:
    """OpenAI's error form as Ollama's middleware builds it, with plain `application/json`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == OPENAI_JSON
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == kind
    assert error["param"] is None
    assert error["code"] is None
    assert isinstance(error["message"], str)
    assert error["message"]
    if message is not None:
        assert error["message"] == message
    return error["message"]


# /v1/embeddings


def test_float_embeddings(client: TestClient, tiny_dir: Path, tokenizer: Tokenizer) -> None:
    body = create(client, model="tiny", input=TEXTS)
    assert body["object"] == "list"
    assert body["model"] == "tiny"
    assert [item["object"] for item in body["data"]] == ["embedding"] * len(TEXTS)
    assert [item["index"] for item in body["data"]] == list(range(len(TEXTS)))
    got = vectors_of(body)
    assert got.shape == (len(TEXTS), DIMENSION)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    want = unit(reference_vectors(tiny_dir, TEXTS))
    assert np.sum(got * want, axis=1).min() >= 0.99999
    tokens = sum(len(tokenizer.encode(t).ids) for t in TEXTS)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_float_embeddings_match_api_embed(client: TestClient) -> None:
    openai = vectors_of(create(client, model="tiny-cls", input=TEXTS))
    native = client.post("/api/embed", json={"model": "tiny-cls", "input": TEXTS}).json()["embeddings"]
    np.testing.assert_allclose(openai, native, atol=1e-7)


def test_model_is_echoed_as_sent(client: TestClient) -> None:
    assert create(client, model="TINY:latest", input="x")["model"] == "TINY:latest"


def test_string_input_gives_one_embedding(client: TestClient) -> None:
    body = create(client, model="tiny", input=TEXTS[0])
    assert len(body["data"]) == 1
    assert body["data"][0]["index"] == 0
    np.testing.assert_allclose(vectors_of(body), vectors_of(create(client, model="tiny", input=[TEXTS[0]])))


@pytest.mark.parametrize("fmt", ["base64", "BASE64", "Base64"])
def test_base64_is_little_endian_float32(client: TestClient, fmt: str) -> None:
    floats = vectors_of(create(client, model="tiny", input=TEXTS))
    body = create(client, model="tiny", input=TEXTS, encoding_format=fmt)
    assert body["object"] == "list"
    assert [item["index"] for item in body["data"]] == list(range(len(TEXTS)))
    for item, expected in zip(body["data"], floats, strict=True):
        assert isinstance(item["embedding"], str)
        decoded = decode(item["embedding"])
        assert decoded.shape == (DIMENSION,)
        np.testing.assert_array_equal(decoded, expected.astype(np.float32))
    # Big-endian reading would give other numbers: the byte order is part of the contract.
    wrong = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype=">f4")
    assert not np.allclose(wrong, floats[0], atol=1e-3)


@pytest.mark.parametrize("fmt", ["float", "FLOAT", "Float", None])
def test_float_format_in_any_case(client: TestClient, fmt: str | None) -> None:
    body = create(client, model="tiny", input="hi", encoding_format=fmt)
    embedding = body["data"][0]["embedding"]
    assert isinstance(embedding, list)
    assert len(embedding) == DIMENSION


@pytest.mark.parametrize("fmt", ["int8", "binary", "floats"])
def test_bad_encoding_format(client: TestClient, fmt: str) -> None:
    response = client.post("/v1/embeddings", json={"model": "tiny", "input": "hi", "encoding_format": fmt})
    message = f"Invalid value for 'encoding_format' = {fmt}. Supported values: ['float', 'base64']."
    assert_openai_error(response, 400, "invalid_request_error", message)


@pytest.mark.parametrize("fmt", ["float", "base64"])
def test_dimensions(client: TestClient, fmt: str) -> None:
    full = vectors_of(create(client, model="tiny", input=TEXTS))
    body = create(client, model="tiny", input=TEXTS, dimensions=5, encoding_format=fmt)
    if fmt == "base64":
        got = np.array([decode(item["embedding"]) for item in body["data"]], dtype=np.float64)
    else:
        got = vectors_of(body)
    assert got.shape == (len(TEXTS), 5)
    np.testing.assert_allclose(got, unit(full[:, :5]), atol=1e-6)


@pytest.mark.parametrize("n", [0, -3, DIMENSION, 1000])
def test_dimensions_out_of_range_are_ignored(client: TestClient, n: int) -> None:
    body = create(client, model="tiny", input="hi", dimensions=n)
    assert len(body["data"][0]["embedding"]) == DIMENSION


def test_empty_string_is_one_embedding(client: TestClient, tiny_dir: Path) -> None:
    body = create(client, model="tiny", input="")
    assert len(body["data"]) == 1
    got = vectors_of(body)
    assert got.shape == (1, DIMENSION)
    assert float(np.sum(got * unit(reference_vectors(tiny_dir, [""])))) >= 0.99999
    assert body["usage"]["prompt_tokens"] == 2  # [CLS] [SEP]


def test_long_input_is_truncated(client: TestClient, tiny_dir: Path) -> None:
    body = create(client, model="tiny", input=[LONG])
    assert float(np.sum(vectors_of(body) * unit(reference_vectors(tiny_dir, [LONG])))) >= 0.99999
    assert body["usage"]["prompt_tokens"] == 32


def test_keep_alive_and_options_are_not_read(client: TestClient) -> None:
    body = create(client, model="tiny", input=LONG, options={"num_ctx": "x"}, keep_alive=True, truncate=False)
    assert body["usage"]["prompt_tokens"] == 32


@pytest.mark.parametrize("body", [{}, {"input": None}, {"input": []}])
def test_missing_or_empty_input(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post("/v1/embeddings", json={"model": "tiny", **body})
    assert_openai_error(response, 400, "invalid_request_error", "invalid input")


@pytest.mark.parametrize("value", [[[1, 2]], [1, 2], 5, {"a": "b"}, ["a", 1]])
def test_token_arrays_and_other_types(client: TestClient, value: Any) -> None:
    response = client.post("/v1/embeddings", json={"model": "tiny", "input": value})
    assert_openai_error(response, 400, "invalid_request_error", "invalid input type")


def test_unknown_model(client: TestClient) -> None:
    response = client.post("/v1/embeddings", json={"model": "nope-model", "input": "hi"})
    message = assert_openai_error(response, 404, "not_found_error")
    assert 'model "nope-model" not found' in message


def test_bad_model_names(client: TestClient) -> None:
    assert_openai_error(
        client.post("/v1/embeddings", json={"model": "bad name!", "input": "hi"}),
        400,
        "invalid_request_error",
        "invalid model name",
    )
    assert_openai_error(client.post("/v1/embeddings", json={"model": "", "input": "hi"}), 404, "not_found_error")


def test_bad_bodies_use_the_openai_error_form(client: TestClient) -> None:
    assert_openai_error(client.post("/v1/embeddings", content=b""), 400, "invalid_request_error")
    assert_openai_error(client.post("/v1/embeddings", content=b"{"), 400, "invalid_request_error")
    response = client.post("/v1/embeddings", json={"model": "tiny", "input": "x", "dimensions": "5"})
    assert_openai_error(response, 400, "invalid_request_error")


# /v1/models


def test_models_list(client: TestClient) -> None:
    response = client.get("/v1/models")
    assert response.status_code == 200
    assert response.headers["content-type"] == OPENAI_JSON
    body = response.json()
    assert body["object"] == "list"
    by_id = {item["id"]: item for item in body["data"]}
    for display in ("tiny:latest", "tiny-cls:latest", "tiny-last:latest", "tiny-raw:latest"):
        item = by_id[display]
        assert item["object"] == "model"
        assert type(item["created"]) is int
        assert item["created"] > 1_600_000_000
        assert item["owned_by"] == "library"
    tags = [m["name"] for m in client.get("/api/tags").json()["models"]]
    assert [item["id"] for item in body["data"]] == tags


def test_models_list_of_an_empty_store_is_null(tmp_path: Path) -> None:
    with serving(tmp_path) as http:
        response = http.get("/v1/models")
        assert response.status_code == 200
        assert response.headers["content-type"] == OPENAI_JSON
        assert response.json() == {"object": "list", "data": None}


@pytest.mark.parametrize("model_id", ["tiny", "tiny:latest", "TINY", "library/tiny:latest"])
def test_retrieve_model_echoes_the_id(client: TestClient, model_id: str) -> None:
    response = client.get(f"/v1/models/{model_id}")
    assert response.status_code == 200
    assert response.headers["content-type"] == OPENAI_JSON
    body = response.json()
    assert body == {"id": model_id, "object": "model", "created": body["created"], "owned_by": "library"}
    assert type(body["created"]) is int


@pytest.fixture
def namespaced(client: TestClient) -> Iterator[str]:
    response = client.post("/api/copy", json={"source": "tiny", "destination": "ns/tiny:v1"})
    assert response.status_code == 200, response.text
    yield "ns/tiny:v1"
    client.request("DELETE", "/api/delete", json={"model": "ns/tiny:v1"})


def test_namespaced_model(client: TestClient, namespaced: str) -> None:
    response = client.get(f"/v1/models/{namespaced}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "ns/tiny:v1"
    assert body["object"] == "model"
    assert body["owned_by"] == "ns"
    listed = {item["id"]: item for item in client.get("/v1/models").json()["data"]}
    assert listed["ns/tiny:v1"]["owned_by"] == "ns"
    assert "tiny:v1" not in listed
    assert client.get("/v1/models/tiny:v1").status_code == 404
    embedded = create(client, model="ns/tiny:v1", input="hi")
    assert embedded["model"] == "ns/tiny:v1"
    np.testing.assert_allclose(vectors_of(embedded), vectors_of(create(client, model="tiny", input="hi")))


@pytest.mark.parametrize("model_id", ["nope", "nope:latest", "ns/nope:v1", "tiny:cloud", "bad%20name!"])
def test_retrieve_unknown_model(client: TestClient, model_id: str) -> None:
    response = client.get(f"/v1/models/{model_id}")
    message = assert_openai_error(response, 404, "not_found_error")
    assert "not found" in message
