"""What the daemon counts, for `GET /metrics` in Prometheus' text format.

Each layer records its own events here (the edge its requests, the batcher its batches, residency its loads,
the pulls their bytes); only the edge knows how they are served. One registry per process, as Prometheus
expects of an exporter.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)


def _counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
    return Counter(f"ovembed_{name}", documentation, labels, registry=REGISTRY)


def _gauge(name: str, documentation: str) -> Gauge:
    return Gauge(f"ovembed_{name}", documentation, registry=REGISTRY)


def _histogram(name: str, documentation: str, buckets: Sequence[float], labels: Sequence[str] = ()) -> Histogram:
    return Histogram(f"ovembed_{name}", documentation, labels, buckets=buckets, registry=REGISTRY)


# Requests: labelled by the route's path (unknown paths are "other"), never by model, to keep series few.
REQUESTS = _counter("requests", "HTTP requests answered", ["route", "status"])
REQUEST_SECONDS = _histogram(
    "request_seconds",
    "Time from a request's arrival to its answer's last byte",
    (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    ["route"],
)
# Each task under its own name.
EMBEDDED_TEXTS = _counter("embedded_texts", "Texts embedded")
EMBEDDED_TOKENS = _counter("embedded_tokens", "Tokens of embedded texts that went through a network")
EMBEDDED_OUTPUTS = _counter(
    "embedded_outputs", "Sparse vectors and token vectors given, per text, by output", ["output"]
)
RERANKED_PAIRS = _counter("reranked_pairs", "Query and document pairs scored by a reranker")
RERANKED_TOKENS = _counter("reranked_tokens", "Tokens of reranked pairs that went through a network")

# The vector cache (inference/vector_cache.py): texts answered without the network, texts sent to it, and what is held.
CACHE_HITS = _counter("cache_hits", "Texts answered from the vector cache, or repeated within their request")
CACHE_MISSES = _counter("cache_misses", "Texts the vector cache sent to the network")
CACHE_EVICTIONS = _counter("cache_evictions", "Vectors dropped from the vector cache to stay within OVEMBED_CACHE_MB")
CACHE_BYTES = _gauge("cache_bytes", "Bytes the vector cache holds, keys and bookkeeping included")
CACHE_ENTRIES = _gauge("cache_entries", "Vectors the vector cache holds")

# The queue and the batcher.
WAITING_REQUESTS = _gauge("waiting_requests", "Requests holding a place in OLLAMA_MAX_QUEUE")
BATCH_TEXTS = _histogram("batch_texts", "Texts per batch run", (1, 2, 4, 8, 16, 24, 32, 48, 64, 128))
BATCH_PADDING = _histogram("batch_padding_tokens", "Padding tokens per batch run", (0, 8, 32, 128, 512, 2048, 8192))
INFERENCE_SECONDS = _histogram(
    "inference_seconds",
    "Time a batch spends in the network and pooling",
    (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
INFERENCE_STALLS = _counter("inference_stalls", "Batches abandoned by the watchdog, their model compiled again")

# Models.
LOADED_MODELS = _gauge("loaded_models", "Models loaded now")
MODEL_LOADS = _counter("model_loads", "Models loaded")
MODEL_UNLOADS = _counter("model_unloads", "Models unloaded")
LOAD_SECONDS = _histogram(
    "model_load_seconds",
    "Time to load a model, compile and precision measurement included",
    (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

# Pulls.
PULL_BYTES = _counter("pull_bytes", "Bytes of model files pulled, from the hub or the download cache")
