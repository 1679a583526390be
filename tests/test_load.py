"""The batcher under load: batch invariance, fairness, backpressure, disconnects, no leaks.

In process where the outcome is the app's (Starlette's TestClient runs the requests of many threads at once on
the app's loop); over a socket where a client hangs up or a signal stops the daemon. Speed is scripts/bench's
business; these tests assert order and outcomes only. Timeouts are hang guards; where a test needs work under
way, it waits for the app's own metrics to say so.
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from tests.conftest import (
    Daemon,
    InProcess,
    reference_rows,
    require_shared,
    running_minilm,
    scrape,
    scrape_text,
    serving_minilm,
    sigterm_while_busy,
    wait_for,
)
from tests.tinymodel import COMMON_WORDS, reference_vectors

T = TypeVar("T")

SAME = 0.99999  # the fp32 bar: batching may change rounding, never the vector
HANG_GUARD = 120.0  # seconds; only so that a hung daemon fails the test instead of the run
BUSY = "server busy, please try again.  maximum pending requests exceeded"
DROPPED = re.compile(r"dropped (\d+) of (\d+) inputs of a cancelled request")

SHORT_SENTENCES = [
    "why is the sky blue?",
    "Paris is the capital of France.",
    "A short one.",
    "Embeddings map text to vectors so that similar meanings land close together.",
    "OpenVINO runs neural networks on Intel CPUs and GPUs.",
    "How many legs does a spider have?",
    "The train to Berlin leaves at noon.",
    "Please water the plants on Tuesday.",
    "She plays the violin in an orchestra.",
    "What is the boiling point of water at altitude?",
    "My laptop battery drains too fast.",
    "The museum is closed on Mondays.",
    "hello",
    "Turn left after the second traffic light.",
    "Recipes with lentils and spinach",
    "The committee postponed the vote until next week.",
    "Is it going to rain tomorrow?",
    "An apple a day keeps the doctor away.",
    "Upgrade the firmware before resetting the device.",
    "Seven people attended the meeting.",
]


# ---------------------------------------------------------------------------------------------- helpers


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def client(daemon: Daemon) -> httpx.Client:
    return httpx.Client(base_url=daemon.url, timeout=HANG_GUARD)


def embed(http: httpx.Client | TestClient, model: str, texts: list[str] | str, **extra: Any) -> np.ndarray:
    """The vectors of one /api/embed request, which must succeed with one vector per text."""
    response = http.post("/api/embed", json={"model": model, "input": texts, **extra})
    assert response.status_code == 200, response.text
    vectors = np.array(response.json()["embeddings"], dtype=np.float64)
    assert len(vectors) == (1 if isinstance(texts, str) else len(texts))
    return vectors


def embed_once(daemon: Daemon, model: str, texts: list[str] | str, **extra: Any) -> np.ndarray:
    with client(daemon) as http:
        return embed(http, model, texts, **extra)


def alone(http: httpx.Client | TestClient, model: str, texts: list[str]) -> dict[str, np.ndarray]:
    """Each distinct text's vector from a request of its own, sent while nothing else runs."""
    return {text: embed(http, model, [text])[0] for text in dict.fromkeys(texts)}


def run_clients(count: int, work: Callable[[int], T]) -> list[T]:
    """`work(i)` for i in range(count), each on its own thread, all released at once; results in i order."""
    barrier = threading.Barrier(count)

    def start(i: int) -> T:
        barrier.wait(timeout=HANG_GUARD)
        return work(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(start, i) for i in range(count)]
        return [f.result(timeout=HANG_GUARD) for f in futures]


def assert_distinct(vectors: dict[str, np.ndarray]) -> None:
    """No two texts share a vector, so a vector that matches its text's at SAME also proves the order."""
    matrix = np.stack(list(vectors.values()))
    matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    similarity = matrix @ matrix.T
    np.fill_diagonal(similarity, -1.0)
    assert similarity.max() < SAME, "two texts of the pool have the same vector; the order check would be blind"


def assert_match(texts: list[str], got: np.ndarray, expected: dict[str, np.ndarray], what: str) -> None:
    assert len(got) == len(texts), f"{what}: {len(got)} vectors for {len(texts)} texts"
    similarity = cosines(got, np.stack([expected[t] for t in texts]))
    worst = int(np.argmin(similarity))
    assert similarity[worst] >= SAME, f"{what}: text {worst} ({texts[worst][:40]!r}) at cosine {similarity[worst]}"


def minilm_reference() -> tuple[list[str], dict[str, np.ndarray]]:
    """The 40 reference texts in id order and sentence-transformers' vector for each."""
    require_shared()
    rows, vectors = reference_rows()
    assert [r["id"] for r in rows] == list(range(len(vectors)))
    texts = [r["text"] for r in rows]
    return texts, dict(zip(texts, vectors, strict=True))


def short_reference(limit_tokens: int = 40) -> tuple[list[str], dict[str, np.ndarray]]:
    """The reference texts short enough to send by the thousand, with sentence-transformers' vectors."""
    require_shared()
    rows, vectors = reference_rows()
    short = [r for r in rows if r["n_tokens"] <= limit_tokens]
    return [r["text"] for r in short], {r["text"]: vectors[r["id"]] for r in short}


def ps_names(http: httpx.Client | TestClient) -> list[str]:
    response = http.get("/api/ps")
    assert response.status_code == 200, response.text
    return [m["name"] for m in response.json()["models"]]


def new_log(daemon: Daemon, since: int) -> str:
    return daemon.log()[since:]


def metric(http: TestClient, name: str) -> float:
    """One unlabelled sample of the app's /metrics."""
    response = http.get("/metrics")
    assert response.status_code == 200
    return scrape_text(response.text).get((name, ()), 0.0)


def wait_until_under_way(read: Callable[[str], float], requests: int, batches_before: float) -> None:
    """Until `requests` requests hold places in the queue (read, and in the daemon) and batches have run since
    `batches_before`: the work is under way, and takes seconds more."""
    wait_for(
        lambda: read("ovembed_waiting_requests") >= requests and read("ovembed_batch_texts_count") > batches_before,
        f"{requests} requests in the queue and a batch run",
        HANG_GUARD,
    )


# ---------------------------------------------------------------------------------------------- fast tier


@pytest.fixture(scope="module")
def tiny_pool(tiny_dir: Path, app: InProcess) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """240 distinct texts of 1-40 words the tiny tokenizer knows, their lone vectors and numpy's."""
    words = COMMON_WORDS.split()
    rng = random.Random(20240611)
    texts: list[str] = []
    while len(texts) < 240:
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 40)))
        if text not in texts:
            texts.append(text)
    lone = alone(app.client, "tiny", texts)
    numpy = dict(zip(texts, reference_vectors(tiny_dir, texts).astype(np.float64), strict=True))
    assert_distinct(lone)
    assert_match(texts, np.stack([lone[t] for t in texts]), numpy, "lone vs numpy")
    return texts, lone, numpy


def test_vectors_do_not_depend_on_concurrent_company(
    app: InProcess, tiny_pool: tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]
) -> None:
    """16 clients x 8 requests of 1-40 texts and 16 clients of single texts, all at once: every vector is
    its text's lone vector and numpy's, in input order."""
    texts, lone, numpy = tiny_pool
    http = app.client

    def batches(i: int) -> list[tuple[list[str], np.ndarray]]:
        rng = random.Random(i)
        out = []
        for _ in range(8):
            sent = rng.sample(texts, rng.randint(1, 40))
            out.append((sent, embed(http, "tiny", sent)))
        return out

    def singles(i: int) -> list[tuple[list[str], np.ndarray]]:
        rng = random.Random(1000 + i)
        out = []
        for _ in range(16):
            text = rng.choice(texts)
            out.append(([text], embed(http, "tiny", text)))
        return out

    results = run_clients(32, lambda i: batches(i) if i < 16 else singles(i))
    answered = [pair for per_client in results for pair in per_client]
    assert len(answered) == 16 * 8 + 16 * 16
    assert {len(sent) for sent, _ in answered} - {1}, "no request had more than one text"
    for n, (sent, got) in enumerate(answered):
        assert_match(sent, got, lone, f"response {n} vs lone")
        assert_match(sent, got, numpy, f"response {n} vs numpy")


def daemon_threads(daemon: Daemon) -> int:
    status = Path(f"/proc/{daemon.process.pid}/status")
    if not status.exists():
        pytest.skip("needs /proc to count the daemon's threads")
    return int(re.search(r"^Threads:\s+(\d+)", status.read_text(), re.M).group(1))  # type: ignore[union-attr]


def test_thousands_of_quick_requests_leave_nothing_behind(
    daemon: Daemon, tiny_pool: tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]
) -> None:
    """2,000 single-text requests from 32 clients all succeed with numpy's vectors; afterwards the daemon
    answers, lists `tiny` once in /api/ps and runs no more threads than after a warm-up of the same load.

    Over a socket: what leaks is counted in the daemon's own process, after 32 real connections."""
    texts, _, numpy = tiny_pool

    def hammer(i: int, count: int) -> list[tuple[str, int, list[list[float]]]]:
        with client(daemon) as http:
            out = []
            for n in range(count):
                text = texts[(i * 61 + n) % len(texts)]
                response = http.post("/api/embed", json={"model": "tiny", "input": text})
                out.append((text, response.status_code, response.json().get("embeddings", [])))
            return out

    run_clients(32, lambda i: hammer(i, 8))  # warm-up: every thread pool the load needs is started
    threads_before = daemon_threads(daemon)
    results = [row for per_client in run_clients(32, lambda i: hammer(i, 2000 // 32 + 1)) for row in per_client]
    assert len(results) >= 2000
    assert [status for _, status, _ in results] == [200] * len(results)
    sent = [text for text, _, _ in results]
    got = np.array([vectors[0] for _, _, vectors in results if len(vectors) == 1])
    assert_match(sent, got, numpy, "quick requests vs numpy")

    with client(daemon) as http:
        follow_up = texts[:5]
        assert_match(follow_up, embed(http, "tiny", follow_up), numpy, "follow-up")
        assert ps_names(http).count("tiny:latest") == 1
    assert daemon_threads(daemon) <= threads_before


# ---------------------------------------------------------------------------------------------- real tier


@pytest.fixture(scope="module")
def minilm_pool(minilm_fp32_app: TestClient) -> tuple[list[str], dict[str, np.ndarray]]:
    """The 40 reference texts (up to 1,049 tokens) and 20 short sentences, with their lone vectors."""
    reference_texts, expected = minilm_reference()
    texts = reference_texts + SHORT_SENTENCES
    lone = alone(minilm_fp32_app, "all-minilm", texts)
    assert_distinct(lone)
    # Alone, the daemon agrees with sentence-transformers, so "equals the lone vector" means "is right".
    assert_match(
        reference_texts,
        np.stack([lone[t] for t in reference_texts]),
        expected,
        "lone vs reference",
    )
    return texts, lone


@pytest.mark.real
def test_minilm_vectors_do_not_depend_on_concurrent_company(
    minilm_fp32_app: TestClient, minilm_pool: tuple[list[str], dict[str, np.ndarray]]
) -> None:
    """8 clients x 32 mixed short and long texts at once: each vector is its text's lone vector, in order."""
    texts, lone = minilm_pool

    def work(i: int) -> tuple[list[str], np.ndarray]:
        sent = random.Random(i).sample(texts, 32)
        return sent, embed(minilm_fp32_app, "all-minilm", sent)

    for i, (sent, got) in enumerate(run_clients(8, work)):
        assert_match(sent, got, lone, f"client {i}")


def thousand_texts() -> list[str]:
    """1,000 distinct texts: numbered short sentences, every 25th one built on a long reference text."""
    reference_texts, _ = minilm_reference()
    long = [t for t in reference_texts if len(t) > 800]
    out = []
    for i in range(1000):
        base = long[i // 25 % len(long)] if i % 25 == 0 else SHORT_SENTENCES[i % len(SHORT_SENTENCES)]
        out.append(f"Note {i}. {base}")
    return out


@pytest.mark.real
def test_one_request_of_a_thousand_equals_a_thousand_requests(minilm_fp32_app: TestClient) -> None:
    texts = thousand_texts()
    together = embed(minilm_fp32_app, "all-minilm", texts)

    def work(i: int) -> list[tuple[int, np.ndarray]]:
        return [(n, embed(minilm_fp32_app, "all-minilm", [texts[n]])[0]) for n in range(i, len(texts), 16)]

    separate: dict[int, np.ndarray] = dict(pair for per_client in run_clients(16, work) for pair in per_client)
    assert sorted(separate) == list(range(len(texts)))
    by_text = {texts[n]: vector for n, vector in separate.items()}
    assert_distinct(by_text)
    assert_match(texts, together, by_text, "1,000 in one request vs 1,000 requests")


@pytest.mark.real
def test_a_big_request_does_not_starve_small_ones(minilm_fp32_app: TestClient) -> None:
    """Five one-text requests sent one after another while 3,000 texts are being embedded all come back
    first, with sentence-transformers' vectors."""
    http = minilm_fp32_app
    reference_texts, expected = minilm_reference()
    big = [f"Query {i}: {SHORT_SENTENCES[i % len(SHORT_SENTENCES)]}" for i in range(3000)]
    finished: list[str] = []
    lock = threading.Lock()

    def send_big() -> np.ndarray:
        vectors = embed(http, "all-minilm", big)
        with lock:
            finished.append("big")
        return vectors

    assert embed(http, "all-minilm", []).shape == (0,)  # loaded first: no load in the way
    assert "all-minilm:latest" in ps_names(http)
    batches = metric(http, "ovembed_batch_texts_count")
    with ThreadPoolExecutor(max_workers=1) as pool:
        big_future = pool.submit(send_big)
        # The 3,000 texts are read, tokenized and pooled, and their batches run; embedding them takes seconds.
        wait_until_under_way(lambda name: metric(http, name), 1, batches)
        assert not big_future.done(), "the big request ended before the small ones were sent; make it bigger"
        singles = []
        for n in range(5):
            singles.append(embed(http, "all-minilm", reference_texts[n])[0])
            with lock:
                finished.append(f"single {n}")
        big_vectors = big_future.result(timeout=HANG_GUARD)

    assert finished == [f"single {n}" for n in range(5)] + ["big"]
    assert_match(reference_texts[:5], np.stack(singles), expected, "singles")
    assert len(big_vectors) == len(big)
    spot = [big[n] for n in (0, 1, 1499, 2998, 2999)]
    assert_match(spot, big_vectors[[0, 1, 1499, 2998, 2999]], alone(http, "all-minilm", spot), "big")


@pytest.fixture(scope="module")
def queue_of_two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with serving_minilm(tmp_path_factory.mktemp("queue-of-two"), max_queue=2) as running:
        yield running


@pytest.mark.real
def test_a_full_queue_answers_503_and_recovers(queue_of_two: TestClient) -> None:
    """With OLLAMA_MAX_QUEUE=2 and two requests of 2,000 texts in flight, a third is refused with Ollama's
    503; the two finish with every vector right, and the next request is served."""
    http = queue_of_two
    texts, expected = short_reference()
    rng = random.Random(7)
    bigs = [[rng.choice(texts) for _ in range(2000)] for _ in range(2)]
    assert embed(http, "all-minilm", []).shape == (0,)  # load first: pending counts queued requests only
    batches = metric(http, "ovembed_batch_texts_count")

    def send(i: int) -> httpx.Response:
        return http.post("/api/embed", json={"model": "all-minilm", "input": bigs[i]})

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(send, i) for i in range(2)]
        # Both are read and queued, and batches run; 4,000 texts keep the app busy for seconds.
        wait_until_under_way(lambda name: metric(http, name), 2, batches)
        assert not any(f.done() for f in futures), "a big request ended before the third was sent"
        refused = http.post("/api/embed", json={"model": "all-minilm", "input": "one more"})
        assert not any(f.done() for f in futures), "the 503 may have come after a big request ended"
        responses = [f.result(timeout=HANG_GUARD) for f in futures]

    assert refused.status_code == 503
    assert refused.json() == {"error": BUSY}
    for sent, response in zip(bigs, responses, strict=True):
        assert response.status_code == 200, response.text
        assert_match(sent, np.array(response.json()["embeddings"]), expected, "big request")
    assert_match(texts[:3], embed(http, "all-minilm", texts[:3]), expected, "after the rush")


# ---------------------------------------------------------------------------------------------- over a socket


def send_and_hang_up(daemon: Daemon, body: dict[str, Any]) -> None:
    """Send `body` on a socket of its own and hang up once the daemon is embedding it, before it can answer.

    Nothing else runs, so a batch run after the request holds its place in the queue is one of its own: its
    texts are tokenized and waiting in the pool, where a hang-up drops them.
    """
    host, port = daemon.url.removeprefix("http://").split(":")
    batches = scrape(daemon).get(("ovembed_batch_texts_count", ()), 0.0)
    data = json.dumps(body).encode()
    with socket.create_connection((host, int(port)), timeout=HANG_GUARD) as sock:
        sock.sendall(
            f"POST /api/embed HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        wait_until_under_way(lambda name: scrape(daemon).get((name, ()), 0.0), 1, batches)


@pytest.mark.real
def test_clients_that_hang_up_have_their_texts_dropped(minilm_fp32_daemon: Daemon) -> None:
    """Three clients abandon 2,000-text requests mid-way, one after another: the daemon logs each drop, stays up,
    and the next request gets sentence-transformers' vectors."""
    texts, expected = short_reference()
    # Loaded first, so the hang-ups land while texts are queued, not while the model loads (nothing to drop).
    with client(minilm_fp32_daemon) as http:
        assert http.post("/api/embed", json={"model": "all-minilm"}).status_code == 200
    since = len(minilm_fp32_daemon.log())
    bigs = [[f"{i}-{n}: {texts[n % len(texts)]}" for n in range(2000)] for i in range(3)]
    for i, big in enumerate(bigs, start=1):
        send_and_hang_up(minilm_fp32_daemon, {"model": "all-minilm", "input": big})
        wait_for(lambda i=i: len(DROPPED.findall(new_log(minilm_fp32_daemon, since))) >= i, f"drop {i} in the log")

    assert len(DROPPED.findall(new_log(minilm_fp32_daemon, since))) == 3
    for dropped, total in DROPPED.findall(new_log(minilm_fp32_daemon, since)):
        assert int(total) == 2000
        assert 0 < int(dropped) <= 2000
    assert minilm_fp32_daemon.process.poll() is None
    with client(minilm_fp32_daemon) as http:
        assert_match(texts[:4], embed(http, "all-minilm", texts[:4]), expected, "after the hang-ups")


@pytest.mark.real
def test_a_hang_up_with_keep_alive_0_still_unloads(minilm_fp32_daemon: Daemon) -> None:
    """A client that hangs up on a `keep_alive: 0` request: its texts are dropped, the model unloads
    rather than staying loaded, and the next requests load it again and are served."""
    texts, expected = short_reference()
    since = len(minilm_fp32_daemon.log())
    with client(minilm_fp32_daemon) as http:  # loaded first, so that texts are queued when the client leaves
        assert http.post("/api/embed", json={"model": "all-minilm"}).status_code == 200
    big = [f"{n}: {texts[n % len(texts)]}" for n in range(2000)]
    send_and_hang_up(minilm_fp32_daemon, {"model": "all-minilm", "input": big, "keep_alive": 0})

    with client(minilm_fp32_daemon) as http:
        wait_for(lambda: "all-minilm:latest" not in ps_names(http), "the unload after keep_alive 0")
        wait_for(lambda: len(DROPPED.findall(new_log(minilm_fp32_daemon, since))) >= 1, "the drop in the log")
        assert len(DROPPED.findall(new_log(minilm_fp32_daemon, since))) == 1
        assert minilm_fp32_daemon.process.poll() is None
        # No keep_alive: the reloaded model gets the default again, so later tests find it loaded.
        results = run_clients(4, lambda i: embed_once(minilm_fp32_daemon, "all-minilm", texts[i : i + 3]))
        for i, got in enumerate(results):
            assert_match(texts[i : i + 3], got, expected, f"reload {i}")
        assert ps_names(http).count("all-minilm:latest") == 1


def test_requests_still_running_at_the_shutdown_bound_are_answered_503_and_the_daemon_exits_0(
    tmp_path: Path,
) -> None:
    """OVEMBED_SHUTDOWN_TIMEOUT=1 with four 1,500-text requests in flight: each gets Ollama-style JSON, none a
    500 or a reset, the log holds no traceback, and the process exits 0 on its own bound, not uvicorn's
    backstop (which would cancel the requests, unanswered)."""
    texts = [f"text number {n} about the water and the river" for n in range(1500)]
    with running_minilm(tmp_path, OVEMBED_PRECISION="fp32", OVEMBED_SHUTDOWN_TIMEOUT="1") as daemon:
        with ThreadPoolExecutor(max_workers=4) as pool:
            embeds = [
                pool.submit(
                    httpx.post, f"{daemon.url}/api/embed", json={"model": "all-minilm", "input": texts}, timeout=60
                )
                for _ in range(4)
            ]
            status, _ = sigterm_while_busy(daemon, embeds)
            answers = [f.result() for f in embeds]
        log = daemon.log()
    assert status == 0, status
    assert "timeout graceful shutdown exceeded" not in log, log[-3000:]
    assert [(a.status_code, a.json()) for a in answers] == [
        (503, {"error": "ovembed is shutting down and could not finish this request in time; send it again later"})
    ] * 4
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
