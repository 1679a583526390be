"""/api/embed and /api/embeddings: the contract in process (the shared app, real OpenVINO), and over a socket what
only a socket shows (a client that hangs up, stalled and chunked bodies).

Vectors are held to tests.tinymodel.reference_vectors; error rows follow ../shared/ollama-api.md §0, §1.1,
§1.2 and §2, with ovembed's two chosen deviations (400 for a wrong-typed option, truncation on
/api/embeddings).
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient
from tokenizers import Tokenizer

from tests.conftest import Daemon, InProcess, start_daemon, stop_daemon, store_models, wait_for
from tests.contract import LANGCHAIN_OPTION_KEYS, NATIVE_JSON, assert_error
from tests.tinymodel import reference_vectors

CONTEXT = 32
DIMENSION = 16

TEXTS = ["hello world", "why is the sky blue?", "The quick brown fox jumps over the lazy dog."]
# Whole vocabulary words, one token each, so a cut after N tokens is the text of the first N words.
_WORD_TEXT = (
    "the of and to a in is it you that he was for on are with as his they be at one have this from or had by "
    "not word but what some we can out other were all there when up use your how said an each she which do"
)
WORDS = _WORD_TEXT.split()
LONG_WORDS = " ".join(WORDS)  # far more than 32 tokens
LONG_MIXED = "Unbelievable!!! supercalifragilistic expialidocious, " * 4


# Helpers


@pytest.fixture(scope="module")
def client(app: InProcess) -> TestClient:
    return app.client


@pytest.fixture(scope="module")
def folders(tiny_models: dict[str, Path]) -> dict[str, Path]:
    return tiny_models


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def cosines(got: Any, want: Any) -> np.ndarray:
    return np.sum(unit(got) * unit(want), axis=1)


def assert_same_direction(got: Any, want: Any) -> None:
    got, want = np.atleast_2d(np.asarray(got)), np.atleast_2d(np.asarray(want))
    assert got.shape == want.shape
    assert cosines(got, want).min() >= 0.99999, cosines(got, want)


def embed(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/embed", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == NATIVE_JSON
    return response.json()


def legacy(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/embeddings", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == NATIVE_JSON
    return response.json()


def ps_entry(client: TestClient, display: str) -> dict[str, Any] | None:
    response = client.get("/api/ps")
    assert response.status_code == 200
    return next((m for m in response.json()["models"] if m["name"] == display), None)


def parse_time(text: str) -> datetime:
    """RFC3339 with up to nanoseconds (Ollama's form) or Python's isoformat, on Python 3.10 too."""
    match = re.fullmatch(r"(.+?T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert match, f"not RFC3339: {text!r}"
    base, fraction, zone = match.groups()
    fraction = ((fraction or "") + "000000")[:6]
    return datetime.fromisoformat(f"{base}.{fraction}{'+00:00' if zone == 'Z' else zone}")


def seconds_left(client: TestClient, display: str) -> float:
    entry = ps_entry(client, display)
    assert entry is not None, f"{display} is not in /api/ps"
    return (parse_time(entry["expires_at"]) - datetime.now(UTC)).total_seconds()


def wait_gone_from_ps(client: TestClient, display: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ps_entry(client, display) is None:
            return True
        time.sleep(0.05)
    return False


# Vectors


@pytest.mark.parametrize("model", ["tiny", "tiny-cls", "tiny-last", "tiny-raw"])
def test_embed_matches_reference_and_is_unit_length(client: TestClient, folders: dict[str, Path], model: str) -> None:
    body = embed(client, model=model, input=TEXTS)
    got = np.array(body["embeddings"], dtype=np.float64)
    assert got.shape == (len(TEXTS), DIMENSION)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    want = reference_vectors(folders[model], TEXTS)
    assert_same_direction(got, want)
    np.testing.assert_allclose(got, unit(want), atol=1e-5)


@pytest.mark.parametrize("model", ["tiny", "tiny-cls", "tiny-last", "tiny-raw"])
def test_embeddings_matches_reference_direction(client: TestClient, folders: dict[str, Path], model: str) -> None:
    got = legacy(client, model=model, prompt=TEXTS[1])["embedding"]
    assert len(got) == DIMENSION
    assert_same_direction(got, reference_vectors(folders[model], [TEXTS[1]]))


def test_models_differ_from_each_other(client: TestClient) -> None:
    """Guards the reference test: the pooling variants must not give the same vector."""
    vectors = [embed(client, model=m, input=TEXTS[0])["embeddings"][0] for m in ("tiny", "tiny-cls", "tiny-last")]
    for i in range(len(vectors)):
        for j in range(i + 1, len(vectors)):
            assert cosines(vectors[i], vectors[j])[0] < 0.999


def test_order_is_preserved_for_twenty_mixed_inputs(client: TestClient, tiny_dir: Path) -> None:
    texts = [" ".join(WORDS[i : i + 1 + (i * 7) % 45]) for i in range(20)]
    texts[3] = ""
    texts[11] = LONG_MIXED
    assert len(set(texts)) == 20
    got = np.array(embed(client, model="tiny", input=texts)["embeddings"])
    want = reference_vectors(tiny_dir, texts)
    assert got.shape == (20, DIMENSION)
    assert cosines(got, want).min() >= 0.99999
    # Each row matches its own text better than any other row's text.
    similarity = unit(got) @ unit(want).T
    assert list(similarity.argmax(axis=1)) == list(range(20))


def test_string_input_equals_one_element_list(client: TestClient) -> None:
    single = embed(client, model="tiny", input=TEXTS[2])
    listed = embed(client, model="tiny", input=[TEXTS[2]])
    assert len(single["embeddings"]) == 1
    np.testing.assert_allclose(single["embeddings"], listed["embeddings"], atol=1e-7)
    assert single["prompt_eval_count"] == listed["prompt_eval_count"]


def significant_digits(number: str) -> int:
    mantissa = number.lower().split("e")[0].lstrip("-").replace(".", "")
    return len(mantissa.strip("0"))


def test_embed_values_are_float32_in_shortest_form(client: TestClient) -> None:
    response = client.post("/api/embed", json={"model": "tiny", "input": TEXTS})
    numbers = [n for row in json.loads(response.text, parse_float=str)["embeddings"] for n in row]
    assert len(numbers) == len(TEXTS) * DIMENSION
    assert all(isinstance(n, str) for n in numbers)  # JSON numbers with a fraction, not ints or strings
    assert max(significant_digits(n) for n in numbers) <= 9


@pytest.mark.parametrize("sent", ["TINY", "tiny", "Tiny:Latest", "tiny:latest", "library/tiny"])
def test_model_is_echoed_exactly_as_sent(client: TestClient, sent: str) -> None:
    body = embed(client, model=sent, input="hello")
    assert body["model"] == sent
    baseline = embed(client, model="tiny", input="hello")["embeddings"]
    np.testing.assert_allclose(body["embeddings"], baseline, atol=1e-7)


def test_prompt_eval_count_is_the_sum_of_real_tokens(client: TestClient, tokenizer: Tokenizer) -> None:
    texts = [*TEXTS, "", LONG_MIXED, "a"]
    body = embed(client, model="tiny", input=texts)
    expected = sum(min(len(tokenizer.encode(t).ids), CONTEXT) for t in texts)
    assert body["prompt_eval_count"] == expected
    assert body["prompt_eval_count"] != sum(len(tokenizer.encode(t).ids) for t in texts)  # the long one was cut


def test_durations_are_integer_nanoseconds(client: TestClient) -> None:
    started = time.perf_counter()
    body = embed(client, model="tiny", input=TEXTS)
    elapsed_ns = (time.perf_counter() - started) * 1e9
    assert type(body["total_duration"]) is int
    assert 0 < body["total_duration"] <= elapsed_ns
    if "load_duration" in body:
        assert type(body["load_duration"]) is int
        assert 0 <= body["load_duration"] <= body["total_duration"]
    assert type(body["prompt_eval_count"]) is int


# Truncation


def test_long_input_is_truncated_by_default(client: TestClient, tiny_dir: Path, tokenizer: Tokenizer) -> None:
    assert len(tokenizer.encode(LONG_MIXED).ids) > CONTEXT
    for body in (
        embed(client, model="tiny", input=LONG_MIXED),
        embed(client, model="tiny", input=LONG_MIXED, truncate=True),
        embed(client, model="tiny", input=LONG_MIXED, truncate=None),
    ):
        assert body["prompt_eval_count"] == CONTEXT
        assert_same_direction(body["embeddings"], reference_vectors(tiny_dir, [LONG_MIXED]))
    # Whatever follows the first 32 tokens makes no difference.
    cut = embed(client, model="tiny", input=LONG_MIXED)["embeddings"]
    extended = embed(client, model="tiny", input=LONG_MIXED + " the end of it all")["embeddings"]
    np.testing.assert_allclose(extended, cut, atol=1e-7)


def test_truncate_false_refuses_an_input_over_the_context(client: TestClient) -> None:
    response = client.post("/api/embed", json={"model": "tiny", "input": ["hi", LONG_MIXED], "truncate": False})
    assert_error(response, 400, "the input length exceeds the context length")
    # An input that fits is fine without truncation.
    assert len(embed(client, model="tiny", input="hi", truncate=False)["embeddings"]) == 1


def test_exactly_the_context_fits_without_truncation(client: TestClient, tokenizer: Tokenizer) -> None:
    text = " ".join(WORDS[: CONTEXT - 2])
    assert len(tokenizer.encode(text).ids) == CONTEXT
    body = embed(client, model="tiny", input=text, truncate=False)
    assert body["prompt_eval_count"] == CONTEXT
    over = " ".join(WORDS[: CONTEXT - 1])
    assert_error(client.post("/api/embed", json={"model": "tiny", "input": over, "truncate": False}), 400)


def test_num_ctx_below_the_context_truncates_further(client: TestClient, tiny_dir: Path) -> None:
    body = embed(client, model="tiny", input=LONG_WORDS, options={"num_ctx": 10})
    assert body["prompt_eval_count"] == 10
    # [CLS] + 8 words + [SEP]
    assert_same_direction(body["embeddings"], reference_vectors(tiny_dir, [" ".join(WORDS[:8])]))
    short = " ".join(WORDS[:9])  # 11 tokens: over num_ctx 10, under the context
    refused = client.post(
        "/api/embed", json={"model": "tiny", "input": short, "truncate": False, "options": {"num_ctx": 10}}
    )
    assert_error(refused, 400, "the input length exceeds the context length")


@pytest.mark.parametrize("truncate", [True, False])
@pytest.mark.parametrize("num_ctx", [1, 2])
def test_num_ctx_with_no_room_beside_the_special_tokens(client: TestClient, num_ctx: int, truncate: bool) -> None:
    body = {"model": "tiny", "input": ["", "hello"], "truncate": truncate, "options": {"num_ctx": num_ctx}}
    assert_error(client.post("/api/embed", json=body), 400, "input after truncation exceeds maximum context length")
    legacy_body = {"model": "tiny", "prompt": "hello", "options": {"num_ctx": num_ctx}}
    response = client.post("/api/embeddings", json=legacy_body)
    assert_error(response, 400, "input after truncation exceeds maximum context length")


def test_num_ctx_with_room_for_one_token(client: TestClient, tiny_dir: Path) -> None:
    body = embed(client, model="tiny", input="hello", options={"num_ctx": 3})
    assert body["prompt_eval_count"] == 3
    assert_same_direction(body["embeddings"], reference_vectors(tiny_dir, ["he"]))  # "hello" is he ##l ##l ##o
    empty = embed(client, model="tiny", input=[""], options={"num_ctx": 2})  # nothing to cut: Ollama embeds it
    assert empty["prompt_eval_count"] == 2
    assert_same_direction(empty["embeddings"], reference_vectors(tiny_dir, [""]))


def test_num_ctx_above_the_context_does_not_raise_it(client: TestClient, tiny_dir: Path) -> None:
    body = embed(client, model="tiny", input=LONG_WORDS, options={"num_ctx": 1000})
    assert body["prompt_eval_count"] == CONTEXT
    assert_same_direction(body["embeddings"], reference_vectors(tiny_dir, [LONG_WORDS]))
    refused = client.post(
        "/api/embed", json={"model": "tiny", "input": LONG_WORDS, "truncate": False, "options": {"num_ctx": 1000}}
    )
    assert_error(refused, 400, "the input length exceeds the context length")


def test_embeddings_truncates_a_long_prompt(client: TestClient, folders: dict[str, Path]) -> None:
    for model in ("tiny", "tiny-raw"):
        got = legacy(client, model=model, prompt=LONG_MIXED)["embedding"]
        assert_same_direction(got, reference_vectors(folders[model], [LONG_MIXED]))


def test_embeddings_honours_num_ctx(client: TestClient, tiny_dir: Path) -> None:
    got = legacy(client, model="tiny", prompt=LONG_WORDS, options={"num_ctx": 10})["embedding"]
    assert_same_direction(got, reference_vectors(tiny_dir, [" ".join(WORDS[:8])]))


# dimensions


@pytest.mark.parametrize("n", [1, 5, DIMENSION - 1])
def test_dimensions_keep_the_first_n_renormalized(client: TestClient, n: int) -> None:
    full = np.array(embed(client, model="tiny", input=TEXTS)["embeddings"], dtype=np.float64)
    short = np.array(embed(client, model="tiny", input=TEXTS, dimensions=n)["embeddings"], dtype=np.float64)
    assert short.shape == (len(TEXTS), n)
    np.testing.assert_allclose(short, unit(full[:, :n]), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("n", [0, -1, -100, DIMENSION, DIMENSION + 1, 4096, None])
def test_dimensions_out_of_range_are_ignored(client: TestClient, n: int | None) -> None:
    full = embed(client, model="tiny", input=TEXTS[0])["embeddings"]
    got = embed(client, model="tiny", input=TEXTS[0], dimensions=n)["embeddings"]
    assert len(got[0]) == DIMENSION
    np.testing.assert_allclose(got, full, atol=1e-7)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, "json: cannot unmarshal number 1.5 into Go struct field EmbedRequest.dimensions of type int"),
        ("5", "json: cannot unmarshal string into Go struct field EmbedRequest.dimensions of type int"),
        (True, "json: cannot unmarshal bool into Go struct field EmbedRequest.dimensions of type int"),
        ([5], "json: cannot unmarshal array into Go struct field EmbedRequest.dimensions of type int"),
    ],
)
def test_dimensions_of_the_wrong_type_give_go_errors(client: TestClient, value: Any, message: str) -> None:
    response = client.post("/api/embed", json={"model": "tiny", "input": "x", "dimensions": value})
    assert_error(response, 400, message)


# Preload and keep_alive


@pytest.fixture(scope="module")
def own_models(app: InProcess, tiny_dir: Path) -> Iterator[list[str]]:
    """Names of our own, so keep_alive changes never touch the shared models."""
    names = ["ka-forever", "ka-zero", "ka-hour", "ka-seconds", "ka-five", "ka-keep"]
    for name in names:
        app.create(name, tiny_dir)
    yield names
    for name in names:
        app.client.request("DELETE", "/api/delete", json={"model": name})


@pytest.mark.parametrize("body", [{"input": ""}, {"input": []}, {"input": None}, {}])
def test_preload_answers_an_empty_list_without_counters(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post("/api/embed", json={"model": "tiny", **body})
    assert response.status_code == 200
    assert response.headers["content-type"] == NATIVE_JSON
    assert response.json() == {"model": "tiny", "embeddings": []}


def test_preload_echoes_the_model_as_sent(client: TestClient) -> None:
    assert embed(client, model="TINY:latest")["model"] == "TINY:latest"


def test_preload_with_negative_keep_alive_stays_loaded(client: TestClient, own_models: list[str]) -> None:
    body = embed(client, model="ka-forever", keep_alive=-1)
    assert body == {"model": "ka-forever", "embeddings": []}
    assert seconds_left(client, "ka-forever:latest") > 10 * 365 * 24 * 3600
    embed(client, model="ka-forever", input="hi")  # no keep_alive: forever stays in force
    assert seconds_left(client, "ka-forever:latest") > 10 * 365 * 24 * 3600


def test_keep_alive_zero_unloads_after_the_request(client: TestClient, own_models: list[str]) -> None:
    embed(client, model="ka-zero", keep_alive="1h")
    assert ps_entry(client, "ka-zero:latest") is not None
    body = embed(client, model="ka-zero", input="hello", keep_alive=0)
    assert len(body["embeddings"]) == 1
    assert wait_gone_from_ps(client, "ka-zero:latest")
    # It loads again on the next request.
    assert len(embed(client, model="ka-zero", input="hello", keep_alive="1m")["embeddings"]) == 1
    assert ps_entry(client, "ka-zero:latest") is not None
    embed(client, model="ka-zero", keep_alive="0s")
    assert wait_gone_from_ps(client, "ka-zero:latest")


@pytest.mark.parametrize(
    ("model", "keep_alive", "seconds"),
    [
        ("ka-hour", "1h", 3600),
        ("ka-seconds", 3600, 3600),
        ("ka-seconds", 90.5, 90.5),
        ("ka-five", "5m", 300),
        ("ka-hour", "1h30m", 5400),
    ],
)
def test_keep_alive_sets_the_expiry(
    client: TestClient, own_models: list[str], model: str, keep_alive: Any, seconds: float
) -> None:
    embed(client, model=model, keep_alive="3h")  # something else first, so the default cannot pass for it
    assert abs(seconds_left(client, f"{model}:latest") - 3 * 3600) <= 60
    embed(client, model=model, input="hi", keep_alive=keep_alive)
    assert abs(seconds_left(client, f"{model}:latest") - seconds) <= 60


def test_request_without_keep_alive_keeps_the_one_in_force(client: TestClient, own_models: list[str]) -> None:
    embed(client, model="ka-keep", keep_alive="2h")
    assert abs(seconds_left(client, "ka-keep:latest") - 7200) <= 60
    embed(client, model="ka-keep", input="hi")
    assert abs(seconds_left(client, "ka-keep:latest") - 7200) <= 60
    legacy(client, model="ka-keep", prompt="hi")
    assert abs(seconds_left(client, "ka-keep:latest") - 7200) <= 60
    embed(client, model="ka-keep", input="hi", keep_alive=None)  # null means unset
    assert abs(seconds_left(client, "ka-keep:latest") - 7200) <= 60
    legacy(client, model="ka-keep", prompt="hi", keep_alive="10m")
    assert abs(seconds_left(client, "ka-keep:latest") - 600) <= 60


@pytest.mark.parametrize(
    ("keep_alive", "message"),
    [
        (True, "Unsupported type: 'bool'"),
        ("abc", 'time: invalid duration "abc"'),
        ("", 'time: invalid duration ""'),
    ],
)
@pytest.mark.parametrize("path", ["/api/embed", "/api/embeddings"])
def test_invalid_keep_alive_is_refused(client: TestClient, path: str, keep_alive: Any, message: str) -> None:
    response = client.post(path, json={"model": "tiny", "input": "x", "prompt": "x", "keep_alive": keep_alive})
    assert_error(response, 400, message)


def test_keep_alive_object_is_refused(client: TestClient) -> None:
    response = client.post("/api/embed", json={"model": "tiny", "keep_alive": {"a": 1}})
    assert_error(response, 400)
    assert response.json()["error"].startswith("Unsupported type: ")


def test_null_keep_alive_is_accepted(client: TestClient) -> None:
    assert len(embed(client, model="tiny", input="x", keep_alive=None)["embeddings"]) == 1
    assert legacy(client, model="tiny", prompt="x", keep_alive=None)["embedding"]


# /api/embed errors


def test_missing_body(client: TestClient) -> None:
    for path in ("/api/embed", "/api/embeddings"):
        assert_error(client.post(path, content=b""), 400, "missing request body")
        assert_error(client.post(path), 400, "missing request body")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"model": "tiny", "input": ', "unexpected EOF"),
        (b"xyz", "invalid character 'x' looking for beginning of value"),
        (b"[1, 2]", None),
        (b'"tiny"', None),
    ],
)
@pytest.mark.parametrize("path", ["/api/embed", "/api/embeddings"])
def test_malformed_json(client: TestClient, path: str, raw: bytes, message: str | None) -> None:
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert_error(response, 400, message)


@pytest.mark.parametrize("body", [{"model": ""}, {"input": "hi"}, {"model": "", "input": "hi"}, {"model": None}])
def test_empty_model_is_not_found(client: TestClient, body: dict[str, Any]) -> None:
    assert_error(client.post("/api/embed", json=body), 404, "model '' not found")


@pytest.mark.parametrize("model", ["bad name!", "a/b/c/d", "tiny@sha256:abc", "-tiny", "tiny:bad tag"])
def test_invalid_model_name(client: TestClient, model: str) -> None:
    response = client.post("/api/embed", json={"model": model, "input": "hi"})
    assert_error(response, 400, "invalid model name")


def test_model_not_installed(client: TestClient) -> None:
    response = client.post("/api/embed", json={"model": "nomic-embed-textx", "input": "hi"})
    assert_error(response, 404, 'model "nomic-embed-textx" not found, try pulling it first')


@pytest.mark.parametrize("model", ["tiny:cloud", "tiny:CLOUD", "tiny:7b-cloud", "gpt-oss:120b-cloud"])
def test_cloud_models_are_not_found(client: TestClient, model: str) -> None:
    response = client.post("/api/embed", json={"model": model, "input": "hi"})
    assert_error(response, 404, f'model "{model}" not found, try pulling it first')


@pytest.mark.parametrize("value", [[1, 2], 5, {}, {"a": "b"}, ["a", 1], [["a"]], True, [None], 1.5])
def test_invalid_input_type(client: TestClient, value: Any) -> None:
    response = client.post("/api/embed", json={"model": "tiny", "input": value})
    assert_error(response, 400, "invalid input type")


def test_input_type_is_checked_before_the_model_exists(client: TestClient) -> None:
    response = client.post("/api/embed", json={"model": "not-installed", "input": 5})
    assert_error(response, 400, "invalid input type")


def test_langchain_null_options_are_accepted(client: TestClient) -> None:
    assert len(dict.fromkeys(LANGCHAIN_OPTION_KEYS)) == 13
    plain = embed(client, model="tiny", input=TEXTS)
    with_nulls = embed(client, model="tiny", input=TEXTS, options=dict.fromkeys(LANGCHAIN_OPTION_KEYS))
    np.testing.assert_allclose(with_nulls["embeddings"], plain["embeddings"], atol=1e-7)
    assert legacy(client, model="tiny", prompt=TEXTS[0], options=dict.fromkeys(LANGCHAIN_OPTION_KEYS))["embedding"]


def test_unknown_option_keys_are_ignored(client: TestClient) -> None:
    options = {"not_an_option": "x", "another": [1, {}], "num_batch": 8, "temperature": 0.5, "stop": ["a"]}
    body = embed(client, model="tiny", input="hi", options=options)
    assert len(body["embeddings"]) == 1
    assert legacy(client, model="tiny", prompt="hi", options=options)["embedding"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_ctx": "x"}, 'option "num_ctx" must be of type integer'),
        ({"num_batch": True}, 'option "num_batch" must be of type integer'),
        ({"temperature": "hot"}, 'option "temperature" must be of type float'),
    ],
)
@pytest.mark.parametrize("path", ["/api/embed", "/api/embeddings"])
def test_wrong_typed_option_is_a_400(client: TestClient, path: str, options: dict[str, Any], message: str) -> None:
    response = client.post(path, json={"model": "tiny", "input": "x", "prompt": "x", "options": options})
    assert_error(response, 400, message)


def test_options_of_the_wrong_shape(client: TestClient) -> None:
    response = client.post("/api/embed", json={"model": "tiny", "input": "x", "options": [1]})
    assert_error(response, 400)


def test_truncate_of_the_wrong_type(client: TestClient) -> None:
    response = client.post("/api/embed", json={"model": "tiny", "input": "x", "truncate": "no"})
    assert_error(response, 400, "json: cannot unmarshal string into Go struct field EmbedRequest.truncate of type bool")


# /api/embeddings


@pytest.mark.parametrize("model", [None, "", "bad name!", 5])
def test_embeddings_model_is_required(client: TestClient, model: Any) -> None:
    body = {"prompt": "hi"} if model is None else {"model": model, "prompt": "hi"}
    response = client.post("/api/embeddings", json=body)
    if isinstance(model, str) or model is None:
        assert_error(response, 400, "model is required")
    else:
        assert_error(
            response, 400, "json: cannot unmarshal number into Go struct field EmbeddingRequest.model of type string"
        )


def test_embeddings_model_not_installed(client: TestClient) -> None:
    response = client.post("/api/embeddings", json={"model": "nomic-embed-textx", "prompt": "hi"})
    assert_error(response, 404, 'model "nomic-embed-textx" not found, try pulling it first')
    response = client.post("/api/embeddings", json={"model": "tiny:cloud", "prompt": "hi"})
    assert_error(response, 404, 'model "tiny:cloud" not found, try pulling it first')


@pytest.mark.parametrize("body", [{"prompt": ""}, {}, {"prompt": None}, {"input": "hello there"}, {"input": ["a"]}])
def test_embeddings_empty_prompt_answers_an_empty_vector(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post("/api/embeddings", json={"model": "tiny", **body})
    assert response.status_code == 200
    assert response.headers["content-type"] == NATIVE_JSON
    assert response.json() == {"embedding": []}


def test_embeddings_is_not_normalized(client: TestClient, tiny_variants: dict[str, Path]) -> None:
    got = np.array(legacy(client, model="tiny-raw", prompt=TEXTS[2])["embedding"], dtype=np.float64)
    want = reference_vectors(tiny_variants["raw"], [TEXTS[2]])[0].astype(np.float64)
    assert abs(np.linalg.norm(want) - 1.0) > 0.05  # the reference itself is not unit length
    assert abs(np.linalg.norm(got) - 1.0) > 0.05
    np.testing.assert_allclose(np.linalg.norm(got), np.linalg.norm(want), rtol=1e-4)
    np.testing.assert_allclose(got, want, atol=1e-4)
    # /api/embed of the same text is the normalized form of the same vector.
    normalized = embed(client, model="tiny-raw", input=TEXTS[2])["embeddings"][0]
    np.testing.assert_allclose(normalized, got / np.linalg.norm(got), atol=1e-6)


def test_embeddings_values_are_float64_numbers(client: TestClient) -> None:
    response = client.post("/api/embeddings", json={"model": "tiny-raw", "prompt": TEXTS[0]})
    assert response.status_code == 200
    numbers = json.loads(response.text, parse_float=str)["embedding"]
    assert len(numbers) == DIMENSION
    assert all(isinstance(n, str) for n in numbers)  # JSON numbers with a fraction
    # float32 values printed as float64 carry more digits than float32's shortest form.
    assert max(significant_digits(n) for n in numbers) > 9


def test_embeddings_with_cased_model_name(client: TestClient) -> None:
    upper = legacy(client, model="TINY", prompt="hi")["embedding"]
    lower = legacy(client, model="tiny:latest", prompt="hi")["embedding"]
    np.testing.assert_allclose(upper, lower, atol=1e-7)


def test_embeddings_field_type_error(client: TestClient) -> None:
    response = client.post("/api/embeddings", json={"model": "tiny", "prompt": ["a"]})
    assert_error(
        response, 400, "json: cannot unmarshal array into Go struct field EmbeddingRequest.prompt of type string"
    )


# Over a socket: what happens between the client's socket and the app


def test_a_client_that_hangs_up_mid_body_is_one_quiet_499(daemon: Daemon) -> None:
    """Headers promise 10,000 bytes, 40 arrive, the socket closes: no traceback, and the daemon serves on."""
    since = len(daemon.log())
    host, port = daemon.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /api/embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 10000\r\n\r\n{"model": "tiny", "input": ["a text that'
        )
    wait_for(lambda: "POST /api/embed 499 " in daemon.log()[since:], "the hang-up's access line")
    with httpx.Client(base_url=daemon.url, timeout=30) as http:
        assert http.post("/api/embed", json={"model": "tiny", "input": "still here"}).status_code == 200
    log = daemon.log()[since:]
    assert log.count("POST /api/embed 499 ") == 1, log
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log
    assert daemon.process.poll() is None


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Iterator[Daemon]:
    """A daemon with small limits: 4,096-byte bodies, 8 inputs, and 1 s for a head or a pause in a body."""
    root = tmp_path_factory.mktemp("limited")
    store_models(root, {"tiny": tiny_dir})
    running = start_daemon(
        root, OVEMBED_MAX_BODY_BYTES="4096", OVEMBED_MAX_INPUTS="8", OVEMBED_READ_TIMEOUT="1", OVEMBED_PRECISION="fp32"
    )
    yield running
    stop_daemon(running)


def test_limits_answer_ollama_style_errors_over_a_socket(limited: Daemon) -> None:
    """A chunked body (no Content-Length) is cut off as soon as it passes the limit; inputs are counted."""

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "tiny", "input": "'
        for _ in range(1000):  # 1 MB, of which the daemon reads about 4 kB
            yield b"water " * 170
        yield b'"}'

    with limited.client() as http:
        streamed = http.post("/api/embed", content=chunks())
        many = http.post("/api/embed", json={"model": "tiny", "input": ["water"] * 9})
        eight = http.post("/api/embed", json={"model": "tiny", "input": ["water"] * 8})
    assert (streamed.status_code, streamed.json()) == (
        413,
        {"error": "request body too large: this server accepts 4096 bytes (OVEMBED_MAX_BODY_BYTES)"},
    )
    assert (many.status_code, many.json()) == (
        400,
        {"error": "too many inputs: 9, this server accepts 8 per request (OVEMBED_MAX_INPUTS)"},
    )
    assert eight.status_code == 200 and len(eight.json()["embeddings"]) == 8


HANG_GUARD = 30.0  # seconds; only so that a daemon that never closes fails the test instead of hanging it


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the daemon closes `sock` (before the hang guard), reading whatever it sends before."""
    sock.settimeout(HANG_GUARD)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    return True


def _closed_while_trickling(sock: socket.socket, data: bytes, gap: float) -> bool:
    """Send `data` a byte every `gap` seconds (each byte would reset an idle timer): whether the daemon closes
    the connection before the last byte is sent."""
    sock.setblocking(False)
    for byte in data:
        try:
            sock.send(bytes([byte]))
            if sock.recv(1, socket.MSG_PEEK) == b"":
                return True
        except BlockingIOError:  # nothing to read yet: still open
            pass
        except OSError:  # reset or broken pipe: closed
            return True
        time.sleep(gap)
    return False


def _read_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """One whole HTTP answer, head and body: read until the body holds Content-Length bytes, or the daemon
    closes; segments arrive as the network cuts them, so one recv may hold only the head."""
    sock.settimeout(HANG_GUARD)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"closed before a whole head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
    while length is None or len(body) < int(length.group(1)):
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return head, body


def test_stalled_clients_lose_their_connection_and_a_slow_one_is_served(limited: Daemon) -> None:
    """OVEMBED_READ_TIMEOUT bounds a silent socket, a head sent a byte at a time, and a pause inside a body."""
    since = len(limited.log())
    host, port = limited.url.removeprefix("http://").split(":")
    body = b'{"model": "tiny", "input": "water"}'
    head = f"POST /api/embed HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    with socket.create_connection((host, int(port))) as silent:
        assert _closed_by_server(silent)
    # A byte every 0.1 s, each well inside the 1 s, outlasts the deadline five times over: closed before whole.
    assert len(head[:-4]) * 0.1 > 5 * 1
    with socket.create_connection((host, int(port))) as trickle:
        assert _closed_while_trickling(trickle, head[:-4], gap=0.1)
    with socket.create_connection((host, int(port))) as stalled:
        stalled.sendall(head + body[:10])
        status, answer = _read_answer(stalled)
    assert status.startswith(b"HTTP/1.1 408 ")
    assert json.loads(answer) == {"error": "request body stalled: nothing arrived for 1 s (OVEMBED_READ_TIMEOUT)"}
    with socket.create_connection((host, int(port))) as slow:  # in time, however slowly
        for piece in (head[:20], head[20:], body[:10], body[10:]):
            slow.sendall(piece)
            time.sleep(0.25)  # a pause well inside the 1 s
        status, answer = _read_answer(slow)
    assert status.startswith(b"HTTP/1.1 200 ")
    assert len(json.loads(answer)["embeddings"]) == 1
    assert "no request head within 1 s" in limited.log()[since:]
    assert limited.process.poll() is None
