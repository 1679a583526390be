"""The vector cache, in process through the real app (real OpenVINO, real tokenizers): what it answers is, bit for
bit, what the network computed; what reaches the lane is counted in /metrics, so "never touches the lane" and
"sends a tenth" are exact numbers; and the LRU itself, held to its byte bound.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from daemon.config import Settings
from daemon.inference.vector_cache import ENTRY_OVERHEAD, KEY_BYTES, VectorCache
from modelstore.create import create_from_folder
from modelstore.names import parse_name
from modelstore.store import ModelStore
from tests.conftest import serving
from tests.test_walk import traced
from tests.tinymodel import build_faulty_model

# Distinct lengths, one past the tiny model's context, so batches and cuts both happen.
TEXTS = [
    "why is the sky blue?",
    "water runs down the road",
    "a",
    "the cat sat on the warm mat while the rain fell",
    "Paris is the capital of France.",
    " ".join(["river"] * 300),
    "seven people attended the meeting",
    "please water the plants on tuesday",
    "an apple a day",
    "turn left after the second traffic light and keep going until the old stone bridge",
    "hello",
    "the museum is closed on mondays",
]
COUNTED = {
    "lane": "ovembed_batch_texts_sum",  # texts that went through the network
    "hits": "ovembed_cache_hits_total",
    "misses": "ovembed_cache_misses_total",
    "bytes": "ovembed_cache_bytes",
    "entries": "ovembed_cache_entries",
}


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path, tiny_variants: dict[str, Path]) -> Path:
    root = tmp_path_factory.mktemp("vector-cache")
    store = ModelStore(root / "models")
    create_from_folder(store, parse_name("tiny"), tiny_dir)
    create_from_folder(store, parse_name("other"), tiny_variants["raw"])
    create_from_folder(store, parse_name("faulty-nan"), build_faulty_model(root / "nan", "nan"))
    return root


@contextlib.contextmanager
def running(root: Path, **overrides: Any) -> Iterator[TestClient]:
    """A daemon of its own, so each test starts with an empty cache, of the default size unless told otherwise."""
    with serving(root, **{"vector_cache_mb": Settings().vector_cache_mb, **overrides}) as client:
        yield client


def counts(client: TestClient) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = {s.name: s.value for f in text_string_to_metric_families(response.text) for s in f.samples}
    return {short: samples.get(name, 0.0) for short, name in COUNTED.items()}


class Growth:
    """What the counters grew by between entering and leaving a `with` block."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.by: dict[str, float] = {}

    def __enter__(self) -> Growth:
        self._before = counts(self.client)
        return self

    def __exit__(self, *_: object) -> None:
        after = counts(self.client)
        self.by = {name: after[name] - self._before[name] for name in COUNTED}


def embed(client: TestClient, texts: list[str], model: str = "tiny", **extra: Any) -> tuple[np.ndarray, int]:
    """/api/embed's vectors as float32 (it writes each float32 in its shortest form, so they come back exact)."""
    response = client.post("/api/embed", json={"model": model, "input": texts, **extra})
    assert response.status_code == 200, response.text
    body = response.json()
    return np.array(body["embeddings"], dtype=np.float32), body["prompt_eval_count"]


def raw(client: TestClient, text: str) -> np.ndarray:
    """/api/embeddings: the raw pooled vector, float32 values written as float64."""
    response = client.post("/api/embeddings", json={"model": "tiny", "prompt": text})
    assert response.status_code == 200, response.text
    return np.array(response.json()["embedding"], dtype=np.float32)


def openai(client: TestClient, texts: list[str], **extra: Any) -> np.ndarray:
    """/v1/embeddings in base64: the float32 bytes themselves."""
    response = client.post(
        "/v1/embeddings", json={"model": "tiny", "input": texts, "encoding_format": "base64", **extra}
    )
    assert response.status_code == 200, response.text
    return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in response.json()["data"]])


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def every_route(client: TestClient) -> dict[str, np.ndarray]:
    """Each route's answer for TEXTS: normalized in one batch and each alone, cut to 8, raw alone, base64."""
    return {
        "batch": embed(client, TEXTS)[0],
        "alone": np.concatenate([embed(client, [t])[0] for t in TEXTS]),
        "cut": embed(client, TEXTS, dimensions=8)[0],
        "raw": np.stack([raw(client, t) for t in TEXTS]),
        "openai": openai(client, TEXTS, dimensions=8),
    }


def test_a_cached_vector_is_the_computed_one_bit_for_bit(store_root: Path) -> None:
    with running(store_root, vector_cache_mb=0) as off:
        computed = every_route(off)
    # Alone and batched agree to the bit in this network, so "the computed vector" is one vector whatever the
    # company a text was computed in; a real network's last bits may differ (the module's docstring says so).
    assert same_bits(computed["batch"], computed["alone"])
    with running(store_root) as on:
        half = len(TEXTS) // 2
        with Growth(on) as first:  # raw and alone for the first half, inside a batch for the second
            for text in TEXTS[:half]:
                raw(on, text)
            embed(on, TEXTS)
        with Growth(on) as again:
            cached = every_route(on)
    assert first.by["lane"] == len(TEXTS)
    assert first.by["hits"] == half and first.by["misses"] == len(TEXTS)
    assert again.by["lane"] == 0 and again.by["misses"] == 0
    assert again.by["hits"] == 5 * len(TEXTS)
    for route, vectors in computed.items():
        assert same_bits(cached[route], vectors), route


def test_a_request_whose_texts_are_all_cached_never_reaches_the_lane(store_root: Path) -> None:
    with running(store_root) as client:
        first, tokens = embed(client, TEXTS[:3])
        with Growth(client) as repeated:
            again, tokens_again = embed(client, TEXTS[:3])
    assert repeated.by == {"lane": 0, "hits": 3, "misses": 0, "bytes": 0, "entries": 0}
    assert same_bits(again, first)
    assert tokens_again == tokens  # prompt_eval_count counts a cached text's tokens as when it was computed


def test_a_partly_cached_request_sends_only_its_misses_once_and_answers_in_order(store_root: Path) -> None:
    a, b, c, x, y = TEXTS[:5]
    sent = [x, a, y, c, x, b, x]
    with running(store_root, vector_cache_mb=0) as off:
        expected, expected_tokens = embed(off, sent)
    with running(store_root) as client:
        embed(client, [a, b, c])
        with Growth(client) as mixed:
            got, tokens = embed(client, sent)
    assert mixed.by["lane"] == 2  # x and y, x once
    assert mixed.by["misses"] == 2 and mixed.by["hits"] == 5
    assert mixed.by["entries"] == 2
    assert same_bits(got, expected)
    assert tokens == expected_tokens


def test_indexing_a_corpus_again_after_a_tenth_changed_sends_a_tenth_to_the_lane(store_root: Path) -> None:
    corpus = [f"document {n}: {TEXTS[n % len(TEXTS)][:200]}" for n in range(200)]
    changed = list(corpus)
    for n in range(0, 200, 10):
        changed[n] = f"document {n}, revised: {TEXTS[(n + 1) % len(TEXTS)][:200]}"
    with running(store_root) as client:
        with Growth(client) as indexed:
            before, _ = embed(client, corpus)
        with Growth(client) as reindexed:
            after, _ = embed(client, changed)
    assert indexed.by["lane"] == 200 and indexed.by["entries"] == 200
    assert reindexed.by["lane"] == 20
    assert reindexed.by["misses"] == 20 and reindexed.by["hits"] == 180
    kept = [n for n in range(200) if n % 10]
    assert same_bits(after[kept], before[kept])
    assert not (after[::10] == before[::10]).all(axis=1).any()


def test_what_changes_the_raw_vector_changes_the_key_and_nothing_else_does(store_root: Path) -> None:
    long, short = TEXTS[5], TEXTS[0]
    with running(store_root) as client:
        with Growth(client) as first:
            whole, _ = embed(client, [long, short])
        with Growth(client) as lowered:
            cut, _ = embed(client, [long, short], options={"num_ctx": 10})
        with Growth(client) as above:  # above the context: the limit in force is the model's, as before
            embed(client, [long, short], options={"num_ctx": 100_000})
        with Growth(client) as untruncated:
            embed(client, [short], truncate=False)
        with Growth(client) as refused:
            response = client.post("/api/embed", json={"model": "tiny", "input": [long], "truncate": False})
        with Growth(client) as finishing:  # normalization and `dimensions` come after the cache
            embed(client, [short], dimensions=4)
            raw(client, short)
            openai(client, [short])
        with Growth(client) as other_model:
            embed(client, [short], model="other")
    assert first.by["misses"] == 2
    assert lowered.by["misses"] == 2 and lowered.by["lane"] == 2
    assert not same_bits(cut[0], whole[0])
    assert above.by["hits"] == 2 and above.by["lane"] == 0
    assert untruncated.by["misses"] == 1
    assert response.status_code == 400
    assert refused.by["bytes"] == 0 and refused.by["entries"] == 0
    assert finishing.by["hits"] == 3 and finishing.by["lane"] == 0
    assert other_model.by["misses"] == 1 and other_model.by["lane"] == 1


def test_the_key_follows_the_precision_the_model_computes_in(store_root: Path) -> None:
    """A model pinned to fp32 (an fp16 overflow does it at run time; this CPU may not compute in fp16, so the
    engine's own pin is called) finds none of its narrower vectors: it computes again, in fp32."""
    text = TEXTS[3]
    with running(store_root) as wide:
        fp32, _ = embed(wide, [text])
    with running(store_root, precision="bf16") as client:
        narrow, _ = embed(client, [text])
        model = client.app.state.runtime.running()[0].lane.model
        if model.precision != "bf16":
            pytest.skip("this CPU does not compute in bf16, so there is no narrower precision to leave")
        assert not same_bits(narrow, fp32)  # else the bits could not tell which precision answered
        model._pin_to_fp32()
        with Growth(client) as pinned:
            got, _ = embed(client, [text])
        with Growth(client) as again:
            embed(client, [text])
    assert pinned.by["misses"] == 1 and pinned.by["lane"] == 1
    assert same_bits(got, fp32)
    assert again.by["hits"] == 1 and again.by["lane"] == 0


def test_a_non_finite_vector_is_refused_every_time_and_never_kept(store_root: Path) -> None:
    with running(store_root) as client, Growth(client) as refused:
        for _ in range(2):
            response = client.post("/api/embed", json={"model": "faulty-nan", "input": ["water"]})
            assert response.status_code == 400
            assert response.json() == {"error": "embedding contains NaN or Inf values"}
    assert refused.by["lane"] == 2 and refused.by["misses"] == 2
    assert refused.by["bytes"] == 0 and refused.by["entries"] == 0


def test_a_deleted_model_created_again_is_not_answered_its_old_vectors(
    store_root: Path, tiny_dir: Path, tiny_variants: dict[str, Path]
) -> None:
    """Each create gives a model a new digest: the old entries are unreachable, held until they age out."""
    text = TEXTS[1]
    with running(store_root) as client:
        create_from_folder(client.app.state.store, parse_name("swap"), tiny_dir)
        old, _ = embed(client, [text], model="swap")
        assert client.request("DELETE", "/api/delete", json={"model": "swap"}).status_code == 200
        create_from_folder(client.app.state.store, parse_name("swap"), tiny_variants["cls"])
        with Growth(client) as recreated:
            new, _ = embed(client, [text], model="swap")
        with running(store_root, vector_cache_mb=0) as off:
            expected, _ = embed(off, [text], model="swap")
        assert client.request("DELETE", "/api/delete", json={"model": "swap"}).status_code == 200
        held = len(client.app.state.runtime.cache)
    assert recreated.by["misses"] == 1 and recreated.by["lane"] == 1
    assert same_bits(new, expected) and not same_bits(new, old)
    assert held == 2  # both models' vectors, counted in the bound until newer work pushes them out


def test_off_sends_every_text_to_the_lane_and_counts_nothing(store_root: Path) -> None:
    with running(store_root, vector_cache_mb=0) as client:
        with Growth(client) as off:
            embed(client, [TEXTS[0]] * 3)
            embed(client, [TEXTS[0]] * 3)
        assert len(client.app.state.runtime.cache) == 0
    assert off.by == {"lane": 6, "hits": 0, "misses": 0, "bytes": 0, "entries": 0}


def test_a_cached_request_walks_through_the_cache_and_not_the_lane(store_root: Path) -> None:
    with running(store_root) as client:
        embed(client, TEXTS[:2])
        walks = traced(client, lambda: embed(client, TEXTS[:2]))
    seen = walks.modules()
    assert "daemon.inference.vector_cache" in seen
    assert "daemon.inference.engine" not in seen
    assert not walks.doubled_back(), "\n".join(walks.doubled_back())


def _looked_up(cache: VectorCache, texts: list[str], precision: str = "fp32") -> list[str]:
    """Look `texts` up and add a vector for each miss (its first value the text's length); the misses."""
    lookup = cache.look_up("digest", precision, 512, True, texts)
    vectors = np.array([[len(t), 0, 0, 0] for t in lookup.missing], dtype=np.float32).reshape(-1, 4)
    cache.add(lookup, vectors, [len(t) for t in lookup.missing], precision)
    return lookup.missing


ENTRY = 4 * 4 + KEY_BYTES + ENTRY_OVERHEAD  # the bytes one 4-dimension vector holds


def test_the_lru_holds_its_bound_in_bytes_and_drops_the_least_recently_used() -> None:
    cache = VectorCache(3 * ENTRY)
    assert _looked_up(cache, ["a", "bb", "ccc"]) == ["a", "bb", "ccc"]
    assert cache.size == 3 * ENTRY and len(cache) == 3
    assert all(entry.vector.base is None for entry in cache._lru.values())  # their own memory, not the batch's
    assert _looked_up(cache, ["a"]) == []  # "a" is now the most recently used
    assert _looked_up(cache, ["dddd"]) == ["dddd"]  # over the bound by one: "bb" goes
    assert cache.size == 3 * ENTRY and len(cache) == 3
    assert _looked_up(cache, ["a", "ccc", "dddd"]) == []
    assert _looked_up(cache, ["bb"]) == ["bb"]
    cache.clear()
    assert cache.size == 0 and len(cache) == 0


def test_nothing_is_kept_that_is_not_finite_too_big_or_computed_in_another_precision() -> None:
    cache = VectorCache(3 * ENTRY)
    lookup = cache.look_up("digest", "fp16", 512, True, ["pinned meanwhile"])
    cache.add(lookup, np.ones((1, 4), dtype=np.float32), [3], "fp32")  # the model was pinned during the request
    lookup = cache.look_up("digest", "fp32", 512, True, ["nan", "fine"])
    cache.add(lookup, np.array([[np.nan] * 4, [1.0] * 4], dtype=np.float32), [3, 3], "fp32")
    assert len(cache) == 1
    small = VectorCache(ENTRY - 1)
    _looked_up(small, ["too big"])
    assert len(small) == 0 and small.size == 0
    assert cache.look_up("digest", "fp32", 512, True, ["pinned meanwhile", "nan", "fine"]).missing == [
        "pinned meanwhile",
        "nan",
    ]


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("64", 64), ("", 128), ("-5", 128), ("lots", 128)])
def test_ovembed_cache_mb(monkeypatch: pytest.MonkeyPatch, value: str, expected: int) -> None:
    monkeypatch.setenv("OVEMBED_CACHE_MB", value)
    assert Settings.from_env().vector_cache_mb == expected
