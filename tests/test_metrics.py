"""GET /metrics in process, parsed with prometheus_client's own parser, and each request's access line."""

from __future__ import annotations

import logging
import re

import pytest
from starlette.testclient import TestClient

from tests.conftest import InProcess, scrape_text, wait_for
from tests.conftest import scrape as scrape  # a daemon's /metrics over its socket, for the files that run one


def scrape_app(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return scrape_text(response.text)


def test_metrics_count_requests_batches_and_models(app: InProcess) -> None:
    http = app.client
    # A name of its own, loaded here: the gauge of loaded models is this app's, whatever app in this process
    # (they share one registry) set it before.
    assert http.post("/api/copy", json={"source": "tiny", "destination": "metrics-tiny"}).status_code == 200
    before = scrape_app(http)
    for _ in range(3):
        assert http.post("/api/embed", json={"model": "metrics-tiny", "input": ["water", "fire"]}).status_code == 200
    assert http.post("/api/embed", json={"model": "no-such-model", "input": "x"}).status_code == 404
    assert http.get("/no/such/path").status_code == 404
    after = scrape_app(http)
    assert http.request("DELETE", "/api/delete", json={"model": "metrics-tiny"}).status_code == 200

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
    assert grew("ovembed_model_loads_total") == 1
    assert after[("ovembed_waiting_requests", ())] == 0


def test_each_request_has_one_access_line(app: InProcess, caplog: pytest.LogCaptureFixture) -> None:
    http = app.client
    with caplog.at_level(logging.INFO, logger="ovembed.access"):
        assert http.post("/api/embed", json={"model": "tiny", "input": ["water", "fire"]}).status_code == 200
        assert http.post("/v1/embeddings", json={"model": "tiny", "input": "water"}).status_code == 200
        assert http.post("/api/embed", json={"model": "nope", "input": "x"}).status_code == 404
        assert http.get("/api/tags").status_code == 200  # polled by clients: only with OLLAMA_DEBUG

        def lines() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name == "ovembed.access" and r.levelno >= logging.INFO]

        # A line is written once its answer has gone, which the client may see first.
        wait_for(lambda: len(lines()) >= 3, "three access lines")
    found = lines()
    assert len(found) == 3, found
    assert re.search(r"POST /api/embed 200 [\d.]+ ms 2 texts \d+ tokens$", found[0])
    assert re.search(r"POST /v1/embeddings 200 [\d.]+ ms 1 texts \d+ tokens$", found[1])
    assert re.search(r"POST /api/embed 404 [\d.]+ ms$", found[2])
