"""The error table in process: every row reached through the real app, with Ollama's status and text.

Starlette's TestClient drives the real app (real OpenVINO, real store, real tokenizers) without a socket,
so each row of daemon/http/errors.py costs milliseconds. The few rows that need a socket (a client that
hangs up, a signal), a hub or a race of their own (a delete during a load) are named in ELSEWHERE with the
test that reaches them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from daemon.http.errors import RAISED, Err, Reply
from daemon.metrics import LOAD_SECONDS
from modelstore.create import create_from_folder
from modelstore.names import parse_name
from modelstore.store import ModelStore
from tests.conftest import serving
from tests.contract import NATIVE_JSON
from tests.test_convert import FIXTURES
from tests.test_outputs import with_heads
from tests.tinymodel import build_faulty_model, build_tiny_model

LONG_TEXT = " ".join(["water"] * 200)
MAX_INPUTS = 64
MAX_BODY = 1 << 16
BAD_HOST = "h" * 300 + "/ns/model"


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    """A store with a sound model, two that misbehave at inference, and one whose network is damaged."""
    root = tmp_path_factory.mktemp("error-table")
    store = ModelStore(root / "models")
    create_from_folder(store, parse_name("tiny"), tiny_dir)
    for fault in ("nan", "fixed-shape"):
        create_from_folder(store, parse_name(f"faulty-{fault}"), build_faulty_model(root / fault, fault))
    # A model of its own: a copy of tiny's folder would share tiny's blob, and damage it too.
    damaged = create_from_folder(store, parse_name("damaged"), build_tiny_model(root / "damaged", seed=7))
    (damaged.path / "openvino_model.xml").write_text("<net>this is not a network</net>")
    unweighted = create_from_folder(
        store, parse_name("unweighted"), build_faulty_model(root / "unweighted", "nan", hidden=4)
    )
    (unweighted.path / "openvino_model.bin").unlink()
    # Two different rerankers, so TEI's unnamed model is ambiguous (copies of one model would count once).
    for name, fixture in (("reranker", "bert-rerank"), ("reranker-too", "xlm-roberta-rerank")):
        create_from_folder(store, parse_name(name), FIXTURES / fixture)
    # Two models with sparse vectors (bge-m3's layout) and a SPLADE model, for TEI's /embed_sparse.
    for name, seed in (("m3", 8), ("m3-too", 9)):
        create_from_folder(store, parse_name(name), with_heads(build_tiny_model(root / name, pooling="cls", seed=seed)))
    create_from_folder(store, parse_name("splade"), FIXTURES / "bert-splade")
    return root


def _client(root: Path, **overrides: Any) -> Iterator[TestClient]:
    """The app with the hub unreachable (conftest's NO_HUB); its 500s answered, not raised in the test."""
    with serving(root, raise_server_exceptions=False, **overrides) as client:
        yield client


@pytest.fixture(scope="module")
def client(store_root: Path) -> Iterator[TestClient]:
    """Limits lowered so that their rows cost kilobytes, not the defaults' megabytes."""
    yield from _client(store_root, max_inputs=MAX_INPUTS, max_body_bytes=MAX_BODY)


@pytest.fixture(scope="module")
def full_client(store_root: Path) -> Iterator[TestClient]:
    """A daemon whose queue holds no request at all."""
    yield from _client(store_root, max_queue=0)


def every_row() -> set[str]:
    """The table's rows by name: each `Err` attribute, and each exception class mapped in `RAISED`."""
    return {name for name, value in vars(Err).items() if isinstance(value, Reply)} | {c.__name__ for c in RAISED}


# Each row, and one request that must reach it: (row, method, path, body as bytes or JSON, status, text).
CASES: list[tuple[str, str, str, Any, int, str]] = [
    (
        "WrongTask",
        "POST",
        "/api/embed",
        {"model": "reranker", "input": "x"},
        400,
        '"reranker:latest" does not support embedding',
    ),
    (
        "DOCUMENTS_TYPE",
        "POST",
        "/api/rerank",
        {"model": "reranker", "query": "q", "documents": "a"},
        400,
        "documents must be a list of strings",
    ),
    ("QUERY_REQUIRED", "POST", "/api/rerank", {"model": "reranker", "documents": ["a"]}, 400, "query is required"),
    (
        "TOP_N_NEGATIVE",
        "POST",
        "/api/rerank",
        {"model": "reranker", "query": "q", "documents": ["a"], "top_n": -1},
        400,
        "top_n must be 0 (all) or more, not -1",
    ),
    (
        "RERANKER_UNNAMED",
        "POST",
        "/rerank",
        {"query": "q", "texts": ["a"]},
        400,
        'name the reranker in "model": 2 are installed, and only one can be the default',
    ),
    ("INPUTS_EMPTY", "POST", "/embed_sparse", {"model": "m3", "inputs": []}, 422, "`inputs` cannot be empty"),
    (
        "SPARSE_UNNAMED",
        "POST",
        "/embed_sparse",
        {"inputs": "a"},
        400,
        'name the model in "model": 3 with sparse vectors are installed, and only one can be the default',
    ),
    (
        "NoDenseOutput",
        "POST",
        "/api/embed",
        {"model": "splade", "input": "x"},
        400,
        '"splade:latest" gives no dense embedding, only sparse: ask /api/embed for it with "sparse": true',
    ),
    (
        "INPUT_TYPE",
        "POST",
        "/api/embed",
        {"model": "tiny", "input": "x", "input_type": "passage"},
        400,
        'input_type "passage" is not one of query, document, search_query, search_document',
    ),
    ("MISSING_BODY", "POST", "/api/embed", b"", 400, "missing request body"),
    ("BAD_JSON", "POST", "/api/embed", b'{"model": "tiny"', 400, "unexpected EOF"),
    ("MODEL_REQUIRED", "POST", "/api/embeddings", {"model": "", "prompt": "x"}, 400, "model is required"),
    ("INVALID_MODEL_NAME", "POST", "/api/embed", {"model": "bad name!"}, 400, "invalid model name"),
    ("NAME_INVALID", "POST", "/api/show", {"model": "bad name!"}, 400, 'name "bad name!" is invalid'),
    ("SOURCE_INVALID", "POST", "/api/copy", {"source": "", "destination": "x"}, 400, 'source "" is invalid'),
    (
        "DESTINATION_INVALID",
        "POST",
        "/api/copy",
        {"source": "tiny", "destination": "a/b/c/d"},
        400,
        'destination "a/b/c/d" is invalid',
    ),
    ("INVALID_INPUT_TYPE", "POST", "/api/embed", {"model": "tiny", "input": [1, 2]}, 400, "invalid input type"),
    (
        "BODY_TOO_LARGE",
        "POST",
        "/api/embed",
        b'{"model": "tiny", "input": "' + b"a" * MAX_BODY + b'"}',
        413,
        f"request body too large: this server accepts {MAX_BODY} bytes (OVEMBED_MAX_BODY_BYTES)",
    ),
    (
        "TooManyInputs",
        "POST",
        "/v1/embeddings",
        {"model": "tiny", "input": ["water"] * (MAX_INPUTS + 1)},
        400,
        f"too many inputs: {MAX_INPUTS + 1}, this server accepts {MAX_INPUTS} per request (OVEMBED_MAX_INPUTS)",
    ),
    ("INVALID_INPUT", "POST", "/v1/embeddings", {"model": "tiny"}, 400, "invalid input"),
    (
        "BAD_ENCODING_FORMAT",
        "POST",
        "/v1/embeddings",
        {"model": "tiny", "input": "x", "encoding_format": "int8"},
        400,
        "Invalid value for 'encoding_format' = int8. Supported values: ['float', 'base64'].",
    ),
    ("KEEP_ALIVE_TYPE", "POST", "/api/embed", {"model": "tiny", "keep_alive": True}, 400, "Unsupported type: 'bool'"),
    (
        "KEEP_ALIVE_VALUE",
        "POST",
        "/api/embed",
        {"model": "tiny", "keep_alive": "abc"},
        400,
        'time: invalid duration "abc"',
    ),
    (
        "OPTION_TYPE",
        "POST",
        "/api/embed",
        {"model": "tiny", "input": "x", "options": {"num_ctx": "x"}},
        400,
        'option "num_ctx" must be of type integer',
    ),
    ("MODEL_EMPTY_NOT_FOUND", "POST", "/api/embed", {"model": ""}, 404, "model '' not found"),
    (
        "MODEL_NOT_FOUND_PULL",
        "POST",
        "/api/embed",
        {"model": "nope", "input": "x"},
        404,
        'model "nope" not found, try pulling it first',
    ),
    ("MODEL_NOT_FOUND_QUOTED", "POST", "/api/show", {"model": "nope"}, 404, "model 'nope:latest' not found"),
    ("MODEL_NOT_FOUND", "POST", "/api/copy", {"source": "nope", "destination": "x"}, 404, 'model "nope" not found'),
    (
        "InputTooLong",
        "POST",
        "/api/embed",
        {"model": "tiny", "input": LONG_TEXT, "truncate": False},
        400,
        "the input length exceeds the context length",
    ),
    (
        "ContextTooSmall",
        "POST",
        "/api/embed",
        {"model": "tiny", "input": "water", "options": {"num_ctx": 2}},
        400,
        "input after truncation exceeds maximum context length",
    ),
    (
        "NonFiniteEmbedding",
        "POST",
        "/api/embed",
        {"model": "faulty-nan", "input": "water"},
        400,
        "embedding contains NaN or Inf values",
    ),
    (
        "ModelLoadFailed",
        "POST",
        "/api/embed",
        {"model": "damaged", "input": "water"},
        500,
        "failed to load model damaged:latest: ",  # then OpenVINO's own first line, and what to do
    ),
    (
        "ModelDamaged",
        "POST",
        "/api/embed",
        {"model": "unweighted", "input": "water"},
        500,
        'model "unweighted:latest" is damaged: openvino_model.bin missing or empty in its folder; '
        "pull or create it again, or remove it with `ovembed rm unweighted:latest`",
    ),
    (
        "InferenceFailed",
        "POST",
        "/api/embed",
        {"model": "faulty-fixed-shape", "input": "water"},
        500,
        "inference failed: ",  # then OpenVINO's own first line
    ),
    (
        "UnknownName",
        "POST",
        "/api/pull",
        {"model": "no-such-embedder", "stream": False},
        404,
        "pull model manifest: file does not exist: ovembed does not know no-such-embedder:latest; ",
    ),
    (
        "ConnectionBroke",
        "POST",
        "/api/pull",
        {"model": "all-minilm", "stream": False},
        502,
        "the connection to Hugging Face broke while fetching hf.co/sentence-transformers/all-MiniLM-L6-v2 ",
    ),
]
# Rows that need a socket, a hub or a race a single request cannot stage, and the tests that reach them.
ELSEWHERE = {
    "REQUEST_CANCELED": "tests/test_load.py::test_clients_that_hang_up_have_their_texts_dropped",
    "ModelDeleted": "tests/test_api_models.py::test_a_delete_during_a_load_answers_404_and_unloads",
    "PullCancelled": "tests/test_pull.py::test_a_client_that_leaves_cancels_the_pull",
    "HubRefused": "tests/test_pull.py::test_a_hub_500_fails_the_pull_and_the_retry_fetches_only_the_rest",
    "ClientDisconnect": "tests/test_api_embed.py::test_a_client_that_hangs_up_mid_body_is_one_quiet_499",
    "NothingToConvert": "tests/test_pull.py::test_pulls_that_cannot_succeed_fail_at_once",
    "RepoNotFound": "tests/test_pull.py::test_pulls_that_cannot_succeed_fail_at_once",
    "RevisionNotFound": "tests/test_pull.py::test_pulls_that_cannot_succeed_fail_at_once",
    "RepoGated": "tests/test_pull.py::test_gated_repo_needs_a_token",
    "ArchitectureUnsupported": "tests/test_pull.py::test_what_is_not_converted_is_refused_on_its_config_alone",
    "ConversionFailed": "tests/test_pull.py::test_a_network_that_does_not_convert_fails_the_pull",
    "DiskTooSmall": "tests/test_pull.py::"
    "test_a_disk_too_small_for_the_model_fails_at_once_and_the_retry_after_freeing_succeeds",
    "DiskFilled": "tests/test_pull.py::test_a_disk_that_fills_during_the_download_fails_the_pull_and_says_what_it_kept",
    "ShardsMissing": "tests/test_pull.py::"
    "test_a_checkpoint_index_that_does_not_read_or_names_missing_shards_is_refused",
    "IndexDamaged": "tests/test_pull.py::test_a_checkpoint_index_that_does_not_read_or_names_missing_shards_is_refused",
    "FileNotFound": "tests/test_pull.py::test_a_file_the_hub_lists_but_will_not_give_fails_the_pull",
    "DigestMismatch": "tests/test_pull.py::"
    "test_a_download_that_does_not_match_the_hubs_hash_is_removed_and_fails_the_pull",
    "HubOffline": "tests/test_pull.py::test_offline_mode_refuses_a_pull_it_cannot_serve_from_the_store",
    "PullFailed": "tests/test_pull.py::test_a_pull_that_breaks_unexpectedly_says_so_and_the_next_one_succeeds",
    "ShuttingDown": "tests/test_pull.py::test_sigterm_answers_requests_in_flight_ends_the_pull_and_exits_0",
    "Stopping": "tests/test_load.py::"
    "test_requests_still_running_at_the_shutdown_bound_are_answered_503_and_the_daemon_exits_0",
    "BODY_STALLED": "tests/test_api_embed.py::test_stalled_clients_lose_their_connection_and_a_slow_one_is_served",
    "MultivectorTooLarge": "tests/test_outputs.py::test_token_vectors_past_their_bound_are_refused_before_they_run",
    "UPSTREAM_LOOP": "tests/test_upstream.py::test_an_upstream_address_that_is_ovembeds_own_is_a_loop_refused_at_once",
    "UPSTREAM_DOWN": "tests/test_upstream.py::"
    "test_an_upstream_that_is_down_gets_a_502_and_ovembeds_own_models_keep_working",
    "UNAUTHORIZED": "tests/test_auth.py::test_the_refusal_is_each_apis_own_error_shape",  # an app with a key
    "InferenceStalled": "tests/test_health.py::"
    "test_a_stalled_batch_is_answered_500_the_model_compiled_again_and_served_after",
}


def _send(client: TestClient, method: str, path: str, body: Any) -> Any:
    content = body if isinstance(body, bytes) else None
    return client.request(method, path, content=content, json=None if content is not None else body)


def test_every_row_is_reached_here_or_named_with_the_test_that_reaches_it() -> None:
    # QueueFull, NO_RERANKER and NO_SPARSE_MODEL: the tests of their own below.
    covered = {case[0] for case in CASES} | {"QueueFull", "NO_RERANKER", "NO_SPARSE_MODEL"}
    assert covered.isdisjoint(ELSEWHERE)
    assert covered | set(ELSEWHERE) == every_row()


@pytest.mark.parametrize(("row", "method", "path", "body", "status", "text"), CASES, ids=[c[0] for c in CASES])
def test_each_row_answers_ollamas_status_and_text(
    client: TestClient, row: str, method: str, path: str, body: Any, status: int, text: str
) -> None:
    response = _send(client, method, path, body)
    assert response.status_code == status, response.text
    if path.startswith("/v1/"):
        error = response.json()["error"]
        assert response.headers["content-type"] == "application/json"
        assert error["type"] == {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
        message = error["message"]
    elif path in ("/rerank", "/embed_sparse"):  # TEI's shape
        assert response.json()["error_type"] == "validation" if status < 500 else "backend"
        message = response.json()["error"]
    else:
        assert response.headers["content-type"] == NATIVE_JSON
        assert list(response.json()) == ["error"]
        message = response.json()["error"]
    assert message == text if not text.endswith(" ") else message.startswith(text) and len(message) > len(text)


def test_a_full_queue_answers_503(full_client: TestClient) -> None:
    response = full_client.post("/api/embed", json={"model": "tiny", "input": "water"})
    assert response.status_code == 503
    assert response.json() == {"error": "server busy, please try again.  maximum pending requests exceeded"}


def test_teis_shape_with_no_reranker_installed_says_to_pull_one(tmp_path: Path) -> None:
    for empty in _client(tmp_path):
        response = empty.post("/rerank", json={"query": "q", "texts": ["a"]})
        assert (response.status_code, response.json()) == (
            404,
            {
                "error": "no reranker is installed: pull one (ovembed pull bge-reranker-v2-m3) and send again",
                "error_type": "validation",
            },
        )


def test_teis_sparse_shape_with_no_sparse_model_installed_says_to_pull_one(tmp_path: Path) -> None:
    for empty in _client(tmp_path):
        response = empty.post("/embed_sparse", json={"inputs": "a"})
        assert (response.status_code, response.json()) == (
            404,
            {
                "error": "no model with sparse vectors is installed: pull one (ovembed pull bge-m3) and send again",
                "error_type": "validation",
            },
        )


def test_a_damaged_model_does_not_harm_the_others(client: TestClient) -> None:
    loads = LOAD_SECONDS.collect()[0]
    tried = next(s.value for s in loads.samples if s.name.endswith("_count"))
    for _ in range(3):
        refused = client.post("/api/embed", json={"model": "damaged", "input": "x"})
        assert refused.status_code == 500
        assert refused.json()["error"].endswith("or remove it with `ovembed rm damaged:latest`")
    # OpenVINO is asked once at most: the failure is remembered until the model's files change.
    assert next(s.value for s in LOAD_SECONDS.collect()[0].samples if s.name.endswith("_count")) - tried <= 1
    assert client.get("/api/tags").status_code == 200
    listed = {m["name"] for m in client.get("/api/tags").json()["models"]}
    assert {"damaged:latest", "unweighted:latest"} <= listed  # still listed, as clients expect
    answer = client.post("/api/embed", json={"model": "tiny", "input": "water"})
    assert answer.status_code == 200
    assert len(answer.json()["embeddings"][0]) == 16


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "text"),
    [
        ("POST", "/api/embed", {"model": BAD_HOST, "input": "x"}, 400, "invalid model name"),
        ("POST", "/api/embeddings", {"model": BAD_HOST, "prompt": "x"}, 400, "model is required"),
        ("POST", "/v1/embeddings", {"model": BAD_HOST, "input": "x"}, 400, "invalid model name"),
        ("POST", "/api/show", {"model": BAD_HOST}, 400, f'name "{BAD_HOST}" is invalid'),
        ("DELETE", "/api/delete", {"model": BAD_HOST}, 400, f'name "{BAD_HOST}" is invalid'),
        ("POST", "/api/copy", {"source": BAD_HOST, "destination": "x"}, 400, f'source "{BAD_HOST}" is invalid'),
        ("POST", "/api/copy", {"source": "tiny", "destination": BAD_HOST}, 400, f'destination "{BAD_HOST}" is invalid'),
        ("POST", "/api/pull", {"model": BAD_HOST, "stream": False}, 400, "invalid model name"),
        ("GET", f"/v1/models/{BAD_HOST}", None, 404, f'model "{BAD_HOST}" not found'),
    ],
)
def test_a_name_too_long_for_the_store_is_refused_not_a_500(
    client: TestClient, method: str, path: str, body: Any, status: int, text: str
) -> None:
    """A 300-character host is valid for Ollama but cannot be a folder name (255 bytes)."""
    response = _send(client, method, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["message"] if path.startswith("/v1/") else error) == text


@pytest.mark.parametrize("keep_alive", [1e15, 2**64, 18446744073709551615, 9.3e9, -(2**70)])
def test_a_huge_keep_alive_means_forever_and_poisons_nothing(client: TestClient, keep_alive: float) -> None:
    first = client.post("/api/embed", json={"model": "tiny", "input": "water", "keep_alive": keep_alive})
    assert first.status_code == 200, first.text
    shown = [m for m in client.get("/api/ps").json()["models"] if m["name"] == "tiny:latest"]
    assert shown and shown[0]["expires_at"].startswith("21")  # a century ahead
    again = client.post("/api/embed", json={"model": "tiny", "input": "water"})
    assert again.status_code == 200, again.text
    assert client.post("/api/embed", json={"model": "tiny", "keep_alive": "5m"}).status_code == 200


@pytest.mark.parametrize("text", ["9999999999999h", "100000000h", "2562048h"])
def test_a_duration_past_gos_limit_is_gos_error(client: TestClient, text: str) -> None:
    response = client.post("/api/embed", json={"model": "tiny", "input": "water", "keep_alive": text})
    assert response.status_code == 400
    assert response.json() == {"error": f'time: invalid duration "{text}"'}
    assert client.post("/api/embed", json={"model": "tiny", "input": "water"}).status_code == 200
