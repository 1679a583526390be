"""What the daemon counts, for `GET /metrics` in Prometheus' text format.

Each layer records its own events here (the edge its requests, the batcher its batches, residency its loads,
the pulls their bytes); only the edge knows how they are served. One registry per process, as Prometheus
expects of an exporter.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

# Requests: labelled by the route's path (unknown paths are "other"), never by model, to keep series few.
REQUESTS = Counter("ovembed_requests", "HTTP requests answered", ["route", "status"], registry=REGISTRY)
REQUEST_SECONDS = Histogram(
    "ovembed_request_seconds",
    "Time from a request's arrival to its answer's last byte",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
EMBEDDED_TEXTS = Counter("ovembed_embedded_texts", "Texts embedded", registry=REGISTRY)
EMBEDDED_TOKENS = Counter("ovembed_embedded_tokens", "Tokens that went through a network", registry=REGISTRY)

# The queue and the batcher.
WAITING_REQUESTS = Gauge("ovembed_waiting_requests", "Requests holding a place in OLLAMA_MAX_QUEUE", registry=REGISTRY)
BATCH_TEXTS = Histogram(
    "ovembed_batch_texts",
    "Texts per batch run",
    buckets=(1, 2, 4, 8, 16, 24, 32, 48, 64, 128),
    registry=REGISTRY,
)
BATCH_PADDING = Histogram(
    "ovembed_batch_padding_tokens",
    "Padding tokens per batch run",
    buckets=(0, 8, 32, 128, 512, 2048, 8192),
    registry=REGISTRY,
)
INFERENCE_SECONDS = Histogram(
    "ovembed_inference_seconds",
    "Time a batch spends in the network and pooling",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
    registry=REGISTRY,
)

# Models.
LOADED_MODELS = Gauge("ovembed_loaded_models", "Models loaded now", registry=REGISTRY)
MODEL_LOADS = Counter("ovembed_model_loads", "Models loaded", registry=REGISTRY)
MODEL_UNLOADS = Counter("ovembed_model_unloads", "Models unloaded", registry=REGISTRY)
LOAD_SECONDS = Histogram(
    "ovembed_model_load_seconds",
    "Time to load a model, compile and precision measurement included",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)

# Pulls.
PULL_BYTES = Counter(
    "ovembed_pull_bytes", "Bytes of model files pulled, from the hub or the download cache", registry=REGISTRY
)
