"""Bad bodies, generated: no endpoint answers 5xx for what a client sent, and every error is its API's JSON.

In process (Starlette's TestClient over the real app, real OpenVINO and a real store), bounded so the run stays
short. The models are sound ones: a 5xx for a damaged model is the store's fault, not the client's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.conftest import serving, store_models
from tests.test_convert import FIXTURES

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
FIELDS = (
    "model",
    "name",
    "input",
    "prompt",
    "truncate",
    "dimensions",
    "keep_alive",
    "options",
    "encoding_format",
    "source",
    "destination",
    "stream",
    "query",
    "documents",
    "texts",
    "top_n",
    "return_documents",
    "return_text",
    "raw_scores",
    "max_tokens_per_doc",
)
# Bodies shaped like the real ones (known fields with values of any type), and arbitrary JSON and bytes.
BODIES = (
    st.dictionaries(
        st.sampled_from(FIELDS), JSON | st.sampled_from(["tiny", "tiny:latest", "rerank", "", "x" * 300]), max_size=6
    )
    | JSON
    | st.binary(max_size=80)
)
ROUTES = [
    ("POST", "/api/embed"),
    ("POST", "/api/embeddings"),
    ("POST", "/v1/embeddings"),
    ("POST", "/api/show"),
    ("POST", "/api/copy"),
    ("DELETE", "/api/delete"),
    ("POST", "/api/pull"),
    ("GET", "/api/tags"),
    ("GET", "/api/ps"),
    ("GET", "/v1/models"),
    ("POST", "/api/rerank"),
    ("POST", "/v1/rerank"),
    ("POST", "/v2/rerank"),
    ("POST", "/rerank"),
]
KEY = "fuzz-key_0123456789abcdefghijklmnopqrstuvwxyz"
ACCEPTED = (f"Bearer {KEY}", f"bearer {KEY}", f"Bearer  {KEY}")
REFUSED = ("Bearer ", "Bearer", f"Bearer {KEY[:-1]}", f"Bearer {KEY}x", f"Basic {KEY}", KEY, "")
HEADER_TEXT = st.characters(min_codepoint=0x20, max_codepoint=0x7E)  # what an HTTP header may carry
# Each API family's error shape: Ollama's, OpenAI's under /v1, Cohere's for its rerank, TEI's.
ERROR_KEYS = {"/v1/rerank": {"message"}, "/v2/rerank": {"message"}, "/rerank": {"error", "error_type"}}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    store_models(root, {"tiny": tiny_dir, "rerank": FIXTURES / "bert-rerank"})
    return root


@pytest.fixture(scope="module")
def client(root: Path) -> Iterator[TestClient]:
    """Nothing listens at the hub's address (conftest's NO_HUB): a pull fails fast, with 502 for the hub."""
    with serving(root) as running:
        yield running


@pytest.fixture(scope="module")
def keyed_client(root: Path) -> Iterator[TestClient]:
    """The same store behind an API key."""
    with serving(root, api_key=KEY) as running:
        yield running


def send(client: TestClient, method: str, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    if isinstance(body, dict) and path == "/api/delete":
        body.pop("model", None), body.pop("name", None)  # keep the one model: a delete of it is no error
    content = body if isinstance(body, bytes) else None
    return client.request(method, path, content=content, json=None if content is not None else body, headers=headers)


def assert_well_formed(path: str, response: Any) -> None:
    hub_down = path == "/api/pull" and response.status_code == 502  # the hub is unreachable here, on purpose
    assert response.status_code < 500 or hub_down, (response.status_code, response.text)
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith("application/json"):
        assert set(response.json()) == ERROR_KEYS.get(path, {"error"}), response.text


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES)
def test_no_body_gets_a_server_error(client: TestClient, method: str, path: str, body: Any) -> None:
    assert_well_formed(path, send(client, method, path, body))


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=BODIES, authorization=st.none() | st.sampled_from([*ACCEPTED, *REFUSED]) | st.text(HEADER_TEXT, max_size=60)
)
def test_with_a_key_no_request_gets_a_server_error_and_only_the_key_passes(
    keyed_client: TestClient, method: str, path: str, body: Any, authorization: str | None
) -> None:
    response = send(
        keyed_client, method, path, body, None if authorization is None else {"Authorization": authorization}
    )
    assert_well_formed(path, response)
    assert (response.status_code == 401) == (authorization not in ACCEPTED), (authorization, response.text)
    assert KEY not in response.text
