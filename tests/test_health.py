"""/health and the inference watchdog, in process with real OpenVINO.

The states /health words are staged by holding the real code at a gate the test opens: a preload's compile waits
on an event, and a stalled batch is a real inference that blocks on an event until the test releases it at the
end. The watchdog that abandons it and the rebuild that follows are the production path; no test sleeps.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from daemon.inference.engine import Engine, LoadedModel, Rows
from daemon.inference.tokenize import TokenizedText
from tests.conftest import scrape_text, serving, store_models, wait_for
from tests.tinymodel import build_tiny_model, reference_vectors

HANG_GUARD = 120.0
STALLED = "inference failed: the device stopped responding (a batch of tiny:latest had no answer after "
STALLED_END = " s); ovembed abandoned it and is compiling the model again: send the request again in a moment"
STUCK_LINE = "tiny:latest stopped responding: a batch of 1 texts ran "
STALLS = ("ovembed_inference_stalls_total", ())


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> dict[str, Path]:
    """`tiny`, and `other`: a second model whose lane must keep serving while tiny's is stuck."""
    return {"tiny": tiny_dir, "other": build_tiny_model(tmp_path_factory.mktemp("other") / "other", seed=11)}


def gated_loads(monkeypatch: pytest.MonkeyPatch, gate: threading.Event) -> list[str]:
    """Every Engine.load from now on waits for `gate`: the names asked, in order."""
    load = Engine.load
    asked: list[str] = []

    def held(self: Engine, record: Any) -> LoadedModel:
        asked.append(record.name.display)
        assert gate.wait(HANG_GUARD), "hang guard: the test never opened the load gate"
        return load(self, record)

    monkeypatch.setattr(Engine, "load", held)
    return asked


def stall_once(monkeypatch: pytest.MonkeyPatch, name: str, release: threading.Event) -> threading.Event:
    """The next batch of model `name` blocks in its inference until `release` is set, as a hung device would;
    the event returned is set once that batch is blocked."""
    infer_outputs = LoadedModel.infer_outputs
    armed, blocked = threading.Event(), threading.Event()
    armed.set()
    lock = threading.Lock()

    def device_hangs(
        self: LoadedModel, slot: int, batch: Sequence[TokenizedText], wanted: Sequence[Collection[str]]
    ) -> Rows:
        with lock:
            hang = self.record.name.display == name and armed.is_set()
            armed.clear() if hang else None
        if hang:
            blocked.set()
            release.wait(HANG_GUARD)
        return infer_outputs(self, slot, batch, wanted)

    monkeypatch.setattr(LoadedModel, "infer_outputs", device_hangs)
    return blocked


def health(client: TestClient) -> tuple[int, dict[str, Any]]:
    answer = client.get("/health")
    return answer.status_code, answer.json()


def vectors(client: TestClient, model: str, texts: list[str]) -> np.ndarray:
    answer = client.post("/api/embed", json={"model": model, "input": texts})
    assert answer.status_code == 200, answer.text
    return np.array(answer.json()["embeddings"])


def test_health_is_ok_open_without_the_key_and_logged_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="ovembed.access"), serving(tmp_path, api_key="sesame") as client:
        assert health(client) == (200, {"status": "ok", "loaded": []})
        head = client.head("/health")
        assert (head.status_code, head.content) == (200, b"")
        assert client.get("/api/tags").status_code == 401  # the key guards the rest
    lines = [r for r in caplog.records if r.name == "ovembed.access" and " /health " in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.DEBUG, logging.DEBUG]


def test_health_says_loading_until_the_preload_is_done_then_draining_once_the_stop_begins(
    tmp_path: Path, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store_models(tmp_path, models)
    gate = threading.Event()
    asked = gated_loads(monkeypatch, gate)
    try:
        with serving(tmp_path, preload=("tiny", "other", "absent")) as client:
            wait_for(lambda: asked == ["tiny:latest"], "the preload's first load")
            assert health(client) == (
                503,
                {"status": "loading", "reason": "loading tiny:latest (1 of 3 preloaded models)"},
            )
            gate.set()
            wait_for(lambda: health(client)[0] == 200, "the preload done")
            # A name not in the store is logged and said; the models that loaded serve.
            assert health(client)[1] == {
                "status": "ok",
                "loaded": ["other:latest", "tiny:latest"],
                "preload_failed": ["absent"],
            }
            client.app.state.runtime.shutdown.begun = True  # what the first SIGTERM sets (Parts.begin_stop)
            assert health(client) == (
                503,
                {
                    "status": "draining",
                    "reason": "ovembed is shutting down: it finishes the requests in flight and takes no new ones",
                },
            )
    finally:
        gate.set()


@pytest.fixture
def stalling(
    tmp_path: Path, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, threading.Event, Callable[[], threading.Event]]]:
    """The app with a 2 s floor for the watchdog; the device's release, and what arms the next batch's hang."""
    store_models(tmp_path, models)
    release = threading.Event()
    try:
        with serving(tmp_path, raise_server_exceptions=False, inference_timeout=2) as client:
            yield client, release, lambda: stall_once(monkeypatch, "tiny:latest", release)
    finally:
        release.set()


def test_a_stalled_batch_is_answered_500_the_model_compiled_again_and_served_after(
    stalling: tuple[TestClient, threading.Event, Callable[[], threading.Event]],
    models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, release, arm = stalling
    caplog.set_level(logging.INFO, logger="daemon")
    texts = ["why is the sky blue?", "water runs down the road"]
    before = vectors(client, "tiny", texts)  # the watchdog has the model's batch time
    vectors(client, "other", texts)
    stalls = scrape_text(client.get("/metrics").text).get(STALLS, 0.0)
    recompile = threading.Event()
    compiled = gated_loads(monkeypatch, recompile)
    blocked = arm()

    answer = client.post("/api/embed", json={"model": "tiny", "input": "a text the device never answers"})

    assert blocked.is_set()
    assert answer.status_code == 500
    message = answer.json()["error"]
    assert message.startswith(STALLED) and message.endswith(STALLED_END), message
    wait_for(lambda: compiled == ["tiny:latest"], "the model compiled again")
    assert health(client) == (
        503,
        {
            "status": "stuck",
            "reason": "tiny:latest stopped responding; the model is being compiled again and will answer when it is",
            "stuck": ["tiny:latest"],
        },
    )
    assert scrape_text(client.get("/metrics").text)[STALLS] == stalls + 1
    # The other model's lane serves meanwhile.
    assert np.allclose(vectors(client, "other", texts), reference_vectors(models["other"], texts), atol=1e-5)
    # The stuck thread's stack, logged once: it is in the batcher's call of the network, blocked in the device.
    stuck = [r.getMessage() for r in caplog.records if STUCK_LINE in r.getMessage()]
    assert len(stuck) == 1
    assert "thread ovembed-infer" in stuck[0] and "in _infer" in stuck[0] and "in device_hangs" in stuck[0]

    recompile.set()
    wait_for(lambda: health(client)[0] == 200, "/health ok once the model is compiled again")
    after = vectors(client, "tiny", texts)
    assert np.allclose(after, before, atol=1e-6)
    assert np.allclose(after, reference_vectors(models["tiny"], texts), atol=1e-5)

    # The abandoned thread answers at last: its result is dropped, and the lane serves on.
    release.set()
    late = "an abandoned batch of tiny:latest finished after "
    wait_for(lambda: any(late in r.getMessage() for r in caplog.records), "the abandoned batch's end said")
    assert np.allclose(vectors(client, "tiny", texts), before, atol=1e-6)
    assert health(client)[0] == 200
    assert len([r for r in caplog.records if STUCK_LINE in r.getMessage()]) == 1
