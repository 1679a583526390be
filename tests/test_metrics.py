"""GET /metrics over a socket, parsed with prometheus_client's own parser."""

from __future__ import annotations

import re
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Daemon


def scrape(daemon: Daemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{daemon.url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_count_requests_batches_and_models(daemon: Daemon) -> None:
    before = scrape(daemon)
    with daemon.client() as http:
        for _ in range(3):
            assert http.post("/api/embed", json={"model": "tiny", "input": ["water", "fire"]}).status_code == 200
        assert http.post("/api/embed", json={"model": "no-such-model", "input": "x"}).status_code == 404
        assert http.get("/no/such/path").status_code == 404
    after = scrape(daemon)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("ovembed_requests_total", route="/api/embed", status="200") == 3
    assert grew("ovembed_requests_total", route="/api/embed", status="404") == 1
    assert grew("ovembed_requests_total", route="other", status="404") == 1
    assert grew("ovembed_request_seconds_count", route="/api/embed") == 4
    assert grew("ovembed_embedded_texts_total") == 6
    assert grew("ovembed_embedded_tokens_total") > 6
    assert grew("ovembed_batch_texts_count") >= 3
    assert grew("ovembed_inference_seconds_count") == grew("ovembed_batch_texts_count")
    assert after[("ovembed_loaded_models", ())] >= 1
    assert after[("ovembed_model_loads_total", ())] >= 1
    assert after[("ovembed_waiting_requests", ())] == 0


def test_each_request_has_one_access_line(daemon: Daemon) -> None:
    since = len(daemon.log())
    with daemon.client() as http:
        assert http.post("/api/embed", json={"model": "tiny", "input": ["water", "fire"]}).status_code == 200
        assert http.post("/v1/embeddings", json={"model": "tiny", "input": "water"}).status_code == 200
        assert http.post("/api/embed", json={"model": "nope", "input": "x"}).status_code == 404
        assert http.get("/api/tags").status_code == 200  # polled by clients: only with OLLAMA_DEBUG
    deadline = time.monotonic() + 10
    while daemon.log()[since:].count("ovembed.access") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [line for line in daemon.log()[since:].splitlines() if "ovembed.access" in line]
    assert len(lines) == 3, lines
    assert re.search(r"POST /api/embed 200 [\d.]+ ms 2 texts \d+ tokens$", lines[0])
    assert re.search(r"POST /v1/embeddings 200 [\d.]+ ms 1 texts \d+ tokens$", lines[1])
    assert re.search(r"POST /api/embed 404 [\d.]+ ms$", lines[2])
