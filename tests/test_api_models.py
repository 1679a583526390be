"""Model management and routing, in process: /api/tags, /api/show, /api/ps, /api/delete, /api/copy,
/api/version, `/`, and Ollama's 404/405 texts (../shared/ollama-api.md §0, §1.4-§1.9).

Tests that delete, copy or load with a keep_alive use names of their own, never the shared ones.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from modelstore.create import create_from_folder
from modelstore.names import parse_name
from modelstore.store import ModelStore
from tests.conftest import InProcess, serving, start_daemon, stop_daemon, store_models, wait_for
from tests.contract import NATIVE_JSON, assert_error
from tests.tinymodel import build_tiny_model

HEX64 = re.compile(r"[0-9a-f]{64}")
DETAILS_KEYS = {"parent_model", "format", "family", "families", "parameter_size", "quantization_level"}
PS_KEYS = {"name", "model", "size", "digest", "details", "expires_at", "size_vram", "context_length"}


@pytest.fixture(scope="module")
def client(app: InProcess) -> TestClient:
    return app.client


def parse_time(text: str) -> datetime:
    """RFC3339 with up to nanoseconds (Ollama's form) or Python's isoformat, on Python 3.10 too."""
    match = re.fullmatch(r"(.+?T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert match, f"not RFC3339 with an offset: {text!r}"
    base, fraction, zone = match.groups()
    fraction = ((fraction or "") + "000000")[:6]
    return datetime.fromisoformat(f"{base}.{fraction}{'+00:00' if zone == 'Z' else zone}")


def assert_plain(response: httpx.Response, status: int, text: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"].split(";")[0] == "text/plain"
    if response.request.method != "HEAD":
        assert response.text == text


def tags(client: TestClient) -> list[dict[str, Any]]:
    response = client.get("/api/tags")
    assert response.status_code == 200
    assert response.headers["content-type"] == NATIVE_JSON
    return response.json()["models"]


def tag(client: TestClient, display: str) -> dict[str, Any] | None:
    return next((m for m in tags(client) if m["name"] == display), None)


def ps(client: TestClient) -> list[dict[str, Any]]:
    response = client.get("/api/ps")
    assert response.status_code == 200
    assert response.headers["content-type"] == NATIVE_JSON
    return response.json()["models"]


def ps_names(client: TestClient) -> list[str]:
    return [m["name"] for m in ps(client)]


def delete(client: TestClient, **body: Any) -> httpx.Response:
    return client.request("DELETE", "/api/delete", json=body)


def same_as_tiny(client: TestClient, name: str) -> None:
    """`name` stored with tiny's content, one blob for both (a conversion in process is not byte-identical to
    another of the same folder: OpenVINO numbers its unnamed nodes per process)."""
    response = client.post("/api/copy", json={"source": "tiny", "destination": name})
    assert response.status_code == 200, response.text


def embed_vector(client: TestClient, model: str, text: str = "hello world") -> list[float]:
    response = client.post("/api/embed", json={"model": model, "input": text})
    assert response.status_code == 200, response.text
    return response.json()["embeddings"][0]


def assert_details(details: dict[str, Any]) -> None:
    assert set(details) >= DETAILS_KEYS
    assert details["parent_model"] == ""
    assert isinstance(details["format"], str)
    assert details["format"]
    assert details["family"] == "bert"
    assert details["families"] is None or "bert" in details["families"]
    assert isinstance(details["parameter_size"], str)
    assert details["parameter_size"]
    assert isinstance(details["quantization_level"], str)


# /api/tags


def test_tags_lists_the_shared_models(client: TestClient) -> None:
    models = tags(client)
    assert isinstance(models, list)
    names = [m["name"] for m in models]
    for display in ("tiny:latest", "tiny-cls:latest", "tiny-last:latest", "tiny-raw:latest"):
        assert display in names
    for item in models:
        assert item["model"] == item["name"]
        assert HEX64.fullmatch(item["digest"]), item["digest"]
        assert not item["digest"].startswith("sha256:")
        assert type(item["size"]) is int
        assert item["size"] > 0
        assert_details(item["details"])
        assert parse_time(item["modified_at"]).tzinfo is not None
        assert "expires_at" not in item
        assert set(item) >= {"name", "model", "modified_at", "size", "digest", "details"}


def test_tags_uses_the_display_form(client: TestClient) -> None:
    item = tag(client, "tiny:latest")
    assert item is not None
    assert item["name"] == item["model"] == "tiny:latest"
    assert all(":" in m["name"] for m in tags(client))
    assert not any(m["name"].startswith(("registry.ollama.ai/", "library/")) for m in tags(client))


def test_tags_is_newest_first(client: TestClient, app: InProcess, tiny_dir: Path) -> None:
    app.create("order-older", tiny_dir)
    app.create("order-newer", tiny_dir)
    try:
        models = tags(client)
        names = [m["name"] for m in models]
        assert names.index("order-newer:latest") < names.index("order-older:latest")
        times = [parse_time(m["modified_at"]) for m in models]
        assert times == sorted(times, reverse=True)
    finally:
        delete(client, model="order-older")
        delete(client, model="order-newer")


def test_tags_head(client: TestClient) -> None:
    response = client.head("/api/tags")
    assert response.status_code == 200
    assert response.headers["content-type"] == NATIVE_JSON
    assert response.content == b""


def test_tags_of_an_empty_store_is_an_empty_list(tmp_path: Path) -> None:
    with serving(tmp_path) as http:
        response = http.get("/api/tags")
        assert response.status_code == 200
        assert response.json() == {"models": []}
        assert http.get("/api/ps").json() == {"models": []}


# /api/show


@pytest.mark.parametrize("field", ["model", "name"])
def test_show(client: TestClient, field: str) -> None:
    response = client.post("/api/show", json={field: "tiny"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == NATIVE_JSON
    body = response.json()
    assert body["capabilities"] == ["embedding"]
    info = body["model_info"]
    arch = info["general.architecture"]
    assert arch == "bert"
    assert info[f"{arch}.context_length"] == 32
    assert info[f"{arch}.embedding_length"] == 16
    assert_details(body["details"])
    assert body["details"] == tag(client, "tiny:latest")["details"]
    assert parse_time(body["modified_at"]).tzinfo is not None
    for key in ("modelfile", "parameters", "template", "system", "license"):
        assert isinstance(body.get(key, ""), str)


def test_show_reflects_the_pooling_of_each_model(client: TestClient) -> None:
    pooling = {}
    for model in ("tiny", "tiny-cls", "tiny-last"):
        info = client.post("/api/show", json={"model": model}).json()["model_info"]
        pooling[model] = info["bert.pooling_type"]
    assert len(set(pooling.values())) == 3


def test_show_is_case_insensitive(client: TestClient) -> None:
    response = client.post("/api/show", json={"model": "TINY:Latest"})
    assert response.status_code == 200
    assert response.json()["model_info"]["bert.context_length"] == 32


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("x", "model 'x:latest' not found"),
        ("nomic-embed-textx:v2", "model 'nomic-embed-textx:v2' not found"),
        ("ns/x", "model 'ns/x:latest' not found"),
        ("tiny:cloud", "model 'tiny:cloud' not found"),
    ],
)
def test_show_not_found(client: TestClient, model: str, message: str) -> None:
    assert_error(client.post("/api/show", json={"model": model}), 404, message)


@pytest.mark.parametrize("body", [{}, {"model": ""}, {"name": ""}, {"model": None}])
def test_show_requires_a_model(client: TestClient, body: dict[str, Any]) -> None:
    assert_error(client.post("/api/show", json=body), 400, "model is required")


def test_show_bad_name_and_bad_body(client: TestClient) -> None:
    assert_error(client.post("/api/show", json={"model": "bad name!"}), 400)
    assert_error(client.post("/api/show", content=b""), 400, "missing request body")
    assert_error(client.post("/api/show", content=b"{"), 400, "unexpected EOF")


def test_show_wrong_method(client: TestClient) -> None:
    assert_plain(client.get("/api/show"), 405, "405 method not allowed")


# /api/ps


@pytest.fixture
def ps_models(client: TestClient) -> Iterator[list[str]]:
    names = ["ps-one-hour", "ps-three-hours", "ps-two-hours"]
    for name in names:
        same_as_tiny(client, name)
    yield names
    for name in names:
        delete(client, model=name)


def test_ps_shape_and_order(client: TestClient, ps_models: list[str]) -> None:
    for name, keep_alive in zip(ps_models, ["1h", "3h", "2h"], strict=True):
        response = client.post("/api/embed", json={"model": name, "keep_alive": keep_alive})
        assert response.status_code == 200
    models = ps(client)
    ours = [m["name"] for m in models if m["name"].startswith("ps-")]
    assert ours == ["ps-three-hours:latest", "ps-two-hours:latest", "ps-one-hour:latest"]
    expiries = [parse_time(m["expires_at"]) for m in models]
    assert expiries == sorted(expiries, reverse=True)
    digest = tag(client, "tiny:latest")["digest"]
    now = datetime.now(UTC)
    for item in models:
        assert set(item) >= PS_KEYS
        assert item["model"] == item["name"]
        assert type(item["size"]) is int
        assert item["size"] > 0
        assert type(item["size_vram"]) is int
        assert 0 <= item["size_vram"] <= item["size"]
        assert HEX64.fullmatch(item["digest"])
        assert_details(item["details"])
        assert type(item["context_length"]) is int
        parse_time(item["expires_at"])
    for item in models:
        if item["name"].startswith("ps-"):
            assert item["digest"] == digest
            assert item["context_length"] == 32
            assert parse_time(item["expires_at"]) > now


def test_ps_has_no_head_route(client: TestClient) -> None:
    response = client.head("/api/ps")
    assert response.status_code == 405


def test_ps_is_a_list(client: TestClient) -> None:
    body = client.get("/api/ps").json()
    assert isinstance(body["models"], list)


# /api/delete


def test_delete(client: TestClient, app: InProcess, tiny_dir: Path) -> None:
    app.create("del-me", tiny_dir)
    assert tag(client, "del-me:latest") is not None
    response = delete(client, model="del-me")
    assert response.status_code == 200
    assert response.content == b""
    assert tag(client, "del-me:latest") is None
    assert_error(delete(client, model="del-me"), 404, "model 'del-me:latest' not found")
    embed = client.post("/api/embed", json={"model": "del-me", "input": "hi"})
    assert_error(embed, 404, 'model "del-me" not found, try pulling it first')


def test_delete_accepts_name_and_any_case(client: TestClient, app: InProcess, tiny_dir: Path) -> None:
    app.create("del-by-name", tiny_dir)
    app.create("del-by-case", tiny_dir)
    assert delete(client, name="del-by-name").status_code == 200
    assert delete(client, model="DEL-BY-CASE:LATEST").status_code == 200
    names = [m["name"] for m in tags(client)]
    assert "del-by-name:latest" not in names
    assert "del-by-case:latest" not in names


@pytest.mark.parametrize("body", [{}, {"model": ""}, {"name": ""}])
def test_delete_requires_a_model(client: TestClient, body: dict[str, Any]) -> None:
    assert_error(delete(client, **body), 400, "model is required")


def test_delete_invalid_name(client: TestClient) -> None:
    assert_error(delete(client, model="bad name!"), 400, 'name "bad name!" is invalid')


def test_delete_missing_body(client: TestClient) -> None:
    assert_error(client.request("DELETE", "/api/delete"), 400, "missing request body")


def test_delete_a_loaded_model_drops_it_from_ps(client: TestClient, app: InProcess, tiny_dir: Path) -> None:
    same_as_tiny(client, "del-loaded")
    assert client.post("/api/embed", json={"model": "del-loaded", "keep_alive": -1}).status_code == 200
    assert "del-loaded:latest" in ps_names(client)
    assert delete(client, model="del-loaded").status_code == 200
    assert "del-loaded:latest" not in ps_names(client)
    # The shared model with the same content is untouched.
    assert len(embed_vector(client, "tiny")) == 16


def _reader_waiting(fifo: Path, timeout: float = 30) -> int:
    """A writer's descriptor for `fifo`, once a reader is blocked opening it (before that, ENXIO)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            time.sleep(0.02)
    raise AssertionError(f"nothing opened {fifo} within {timeout}s")


@pytest.mark.parametrize("load", ["succeeds", "fails"])
def test_a_delete_during_a_load_answers_404_and_unloads(
    client: TestClient, app: InProcess, tmp_path: Path, load: str
) -> None:
    """The stored tokenizer is swapped for a FIFO, so the load blocks reading it until the test writes it:
    the delete lands mid-load for certain, then the load completes, or fails, for a model that is gone."""
    name = f"del-loading-{load}"
    app.create(name, build_tiny_model(tmp_path / name, seed=7 if load == "succeeds" else 8))  # a blob of its own
    blob = app.models_dir / "blobs" / f"sha256-{tag(client, f'{name}:latest')['digest']}"  # type: ignore[index]
    tokenizer = (blob / "tokenizer.json").read_bytes()
    (blob / "tokenizer.json").unlink()
    os.mkfifo(blob / "tokenizer.json")
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.post, "/api/embed", json={"model": name, "input": "hello"})
        writer = _reader_waiting(blob / "tokenizer.json")
        try:
            assert delete(client, model=name).status_code == 200
            assert not blob.exists()
            if load == "succeeds":
                os.set_blocking(writer, True)
                os.write(writer, tokenizer)
        finally:
            os.close(writer)
        answer = waiting.result(timeout=60)
    assert_error(answer, 404, f'model "{name}:latest" not found, try pulling it first')
    assert f"{name}:latest" not in ps_names(client)
    assert len(embed_vector(client, "tiny")) == 16  # and the app serves on


def test_deleting_a_busy_model_drops_it_from_ps_and_finishes_its_request(
    client: TestClient, app: InProcess, tiny_dir: Path
) -> None:
    app.create("del-busy", tiny_dir)
    texts = [f"text number {n} with a few more words" for n in range(3000)]
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(client.post, "/api/embed", json={"model": "del-busy", "input": texts, "keep_alive": -1})
        deadline = time.monotonic() + 30
        while "del-busy:latest" not in ps_names(client) and not busy.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert delete(client, model="del-busy").status_code == 200
        assert "del-busy:latest" not in ps_names(client)
        answer = busy.result(timeout=120)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["embeddings"]) == len(texts)
    assert "del-busy:latest" not in ps_names(client)


# /api/copy


def test_copy(client: TestClient) -> None:
    response = client.post("/api/copy", json={"source": "tiny", "destination": "copy-dst"})
    try:
        assert response.status_code == 200
        assert response.content == b""
        copied, original = tag(client, "copy-dst:latest"), tag(client, "tiny:latest")
        assert copied is not None
        assert copied["digest"] == original["digest"]
        assert copied["size"] == original["size"]
        np.testing.assert_allclose(embed_vector(client, "copy-dst"), embed_vector(client, "tiny"), atol=1e-7)
    finally:
        delete(client, model="copy-dst")


def test_deleting_a_copy_keeps_the_original(client: TestClient) -> None:
    expected = embed_vector(client, "tiny", "deleting a copy")
    assert client.post("/api/copy", json={"source": "tiny", "destination": "copy-gone"}).status_code == 200
    assert delete(client, model="copy-gone").status_code == 200
    assert tag(client, "tiny:latest") is not None
    # A second copy loads afresh from the same stored folder, so that folder must still exist.
    assert client.post("/api/copy", json={"source": "TINY", "destination": "copy-again"}).status_code == 200
    try:
        np.testing.assert_allclose(embed_vector(client, "copy-again", "deleting a copy"), expected, atol=1e-7)
    finally:
        delete(client, model="copy-again")


def test_copy_missing_source(client: TestClient) -> None:
    response = client.post("/api/copy", json={"source": "nope", "destination": "copy-never"})
    assert_error(response, 404, 'model "nope" not found')
    assert tag(client, "copy-never:latest") is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"source": "bad name!", "destination": "copy-never"}, 'source "bad name!" is invalid'),
        ({"source": "", "destination": "copy-never"}, 'source "" is invalid'),
        ({"source": "tiny", "destination": "bad name!"}, 'destination "bad name!" is invalid'),
        ({"source": "tiny", "destination": ""}, 'destination "" is invalid'),
        ({"source": "tiny"}, 'destination "" is invalid'),
    ],
)
def test_copy_invalid_names(client: TestClient, body: dict[str, Any], message: str) -> None:
    assert_error(client.post("/api/copy", json=body), 400, message)
    assert tag(client, "copy-never:latest") is None


def test_copy_missing_body(client: TestClient) -> None:
    assert_error(client.post("/api/copy", content=b""), 400, "missing request body")


# /api/version, /, routing


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_version(client: TestClient, method: str) -> None:
    response = client.request(method, "/api/version")
    assert response.status_code == 200
    assert response.headers["content-type"] == NATIVE_JSON
    if method == "GET":
        body = response.json()
        assert list(body) == ["version"]
        assert re.fullmatch(r"\d+\.\d+\.\d+", body["version"])
    else:
        assert response.content == b""


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_root(client: TestClient, method: str) -> None:
    response = client.request(method, "/")
    assert_plain(response, 200, "Ollama is running")
    if method == "HEAD":
        assert response.content == b""


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/nope"), ("POST", "/api/nope"), ("GET", "/nope/deeper"), ("GET", "/v1/nope"), ("GET", "/api")],
)
def test_unknown_path(client: TestClient, method: str, path: str) -> None:
    assert_plain(client.request(method, path), 404, "404 page not found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/embed"),
        ("GET", "/api/embeddings"),
        ("POST", "/api/tags"),
        ("DELETE", "/api/tags"),
        ("PUT", "/api/show"),
        ("POST", "/api/ps"),
        ("GET", "/api/delete"),
        ("POST", "/api/delete"),
        ("GET", "/api/copy"),
        ("POST", "/api/version"),
        ("POST", "/"),
        ("DELETE", "/"),
        ("GET", "/v1/embeddings"),
        ("POST", "/v1/models"),
    ],
)
def test_wrong_method(client: TestClient, method: str, path: str) -> None:
    assert_plain(client.request(method, path), 405, "405 method not allowed")


@pytest.mark.parametrize("path", ["/api/embed", "/api/show", "/api/ps", "/api/delete", "/v1/models", "/v1/models/tiny"])
def test_head_exists_only_where_ollama_has_it(client: TestClient, path: str) -> None:
    assert client.head(path).status_code == 405


def test_max_loaded_models_unloads_the_least_recently_used(
    tmp_path: Path, tiny_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store_models(tmp_path, dict.fromkeys(("a", "b", "c"), tiny_dir))
    with caplog.at_level(logging.INFO, logger="daemon"), serving(tmp_path, max_loaded_models=2) as http:

        def use(name: str) -> None:
            assert http.post("/api/embed", json={"model": name, "input": "water"}).status_code == 200

        use("a")
        use("b")
        assert sorted(ps_names(http)) == ["a:latest", "b:latest"]
        use("c")  # a is the least recently used
        assert sorted(ps_names(http)) == ["b:latest", "c:latest"]
        use("b")
        use("a")  # now c is
        assert sorted(ps_names(http)) == ["a:latest", "b:latest"]
    assert "unloading c:latest to make room (OLLAMA_MAX_LOADED_MODELS=2)" in caplog.messages


def test_preloaded_models_are_loaded_at_start_and_kept(
    tmp_path: Path, tiny_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store_models(tmp_path, {"tiny": tiny_dir, "other": build_tiny_model(tmp_path / "other", seed=6)})
    missing = "OVEMBED_PRELOAD names not-pulled, which is not in the store; pull it first"
    with (
        caplog.at_level(logging.INFO, logger="daemon"),
        serving(tmp_path, preload=("tiny", "not-pulled"), keep_alive=1.0) as http,
    ):
        wait_for(lambda: "tiny:latest" in ps_names(http) and missing in caplog.messages, "the preload")
        (loaded,) = http.get("/api/ps").json()["models"]
        assert loaded["name"] == "tiny:latest"
        assert datetime.fromisoformat(loaded["expires_at"]).year > datetime.now(UTC).year + 50
        # A model loaded after it, on OLLAMA_KEEP_ALIVE (1 s), unloads: the preloaded one, loaded before, stays.
        assert http.post("/api/embed", json={"model": "other", "input": "water"}).status_code == 200
        assert "other:latest" in ps_names(http)
        wait_for(lambda: "other:latest" not in ps_names(http), "other's unload after OLLAMA_KEEP_ALIVE")
        assert ps_names(http) == ["tiny:latest"]


def test_a_damaged_store_is_reported_at_start_and_can_be_cleaned(tmp_path: Path, tiny_dir: Path) -> None:
    store = ModelStore(tmp_path / "models")
    broken = create_from_folder(store, parse_name("broken"), tiny_dir)
    (broken.path / "openvino_model.bin").write_bytes(b"")
    create_from_folder(store, parse_name("truncated"), build_tiny_model(tmp_path / "other", seed=5))
    manifest = store.layout.manifest(parse_name("truncated"))
    manifest.write_bytes(manifest.read_bytes()[:40])
    running = start_daemon(tmp_path)
    try:
        assert "broken:latest is damaged: openvino_model.bin missing or empty" in running.log()
        with running.client() as http:
            assert [m["name"] for m in http.get("/api/tags").json()["models"]] == ["broken:latest"]
        removed = running.cli("rm", "truncated", check=False)
        assert removed.returncode == 0, removed.stderr
        assert not manifest.exists()
        again = running.cli("rm", "truncated", check=False)
        assert again.returncode == 1 and "not found" in again.stderr
    finally:
        stop_daemon(running)
