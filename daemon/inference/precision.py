"""OVEMBED_PRECISION=auto: each model's compute precision, measured on the device it runs on.

No fixed default is right: bf16 ran 1.7x fp32 on one CPU and slower than fp32 on another, and drifted more
on some. So the first load of a model on a device times each candidate on a few probe texts, holds its
vectors to fp32's (and a text alone to the same text in a batch), and keeps the fastest that passes. The
choice is remembered per model digest, device and OpenVINO version, so later loads cost nothing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Both bars of the accuracy promise: against fp32, and a text alone against the same text in a batch.
MIN_COSINE = 0.9999
# A reranker's bar, on the correlation of its scores: bf16 measured 0.99998 on a MiniLM-backbone
# cross-encoder while moving real scores by up to 0.02 and swapping candidates in a top five.
MIN_SCORE_CORRELATION = 0.99999
# A narrower precision must be clearly faster to be worth its rounding.
MIN_SPEEDUP = 1.1
_TIMED_RUNS = 3

# From a one-word query to a passage of about a hundred tokens, as real traffic has them; short enough that
# measuring a small model costs well under a second.
PROBE_TEXTS = (
    "water",
    "why is the sky blue?",
    "Paris is the capital and most populous city of France.",
    "OpenVINO runs neural networks on Intel CPUs and GPUs; embeddings map text to vectors so that similar "
    "meanings land close together, and a search engine ranks passages by how close they are to a query.",
    "The committee postponed the vote until next week, after members asked for more time to read the report "
    "on housing, transport and the cost of the new bridge across the river, which the city has argued about "
    "for years. Local shops fear the works will keep customers away, while commuters hope for shorter trips.",
    "Zürich, São Paulo, 東京 and Kraków: 42 places, 3.5 million people, and one ☂ between them.",
    "def add(a, b):\n    return a + b\n",
    "hello hello hello",
)


@dataclass(frozen=True)
class Trial:
    """One candidate's measurement: seconds for the probe batch (best of a few), and its worst cosines."""

    precision: str
    seconds: float
    cosine: float  # against fp32
    invariance: float  # a text alone against the same text in the batch
    bar: float = MIN_COSINE

    @property
    def passes(self) -> bool:
        return self.cosine >= self.bar and self.invariance >= self.bar


def candidates(device: str, capabilities: Sequence[str]) -> tuple[str, ...]:
    """fp32 first (the reference), then the narrower precision the device offers: bf16 on a CPU, fp16 on a GPU.

    A virtual device (AUTO, MULTI, HETERO) or an NPU picks for itself: nothing to measure.
    """
    kind = device.split(".", 1)[0]
    narrower = {"CPU": "BF16", "GPU": "FP16"}.get(kind)
    if narrower is None:
        return ()
    return ("fp32", narrower.lower()) if narrower in capabilities else ("fp32",)


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = vectors.astype(np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def worst_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Row by row. A reranker's logits (one column) are compared across the texts, centred (their Pearson
    correlation): the cosine of two single numbers tells only their signs apart, and uncentred logits that all
    sit far from zero agree however their order changes."""
    if a.shape[1] == 1:
        a, b = (a - a.mean()).T, (b - b.mean()).T
    return float((_unit(a) * _unit(b)).sum(axis=1).min())


@dataclass(frozen=True)
class Probe:
    """Vectors of the probe texts, in one batch and each alone, and the best time for the batch."""

    batch: np.ndarray
    alone: np.ndarray
    seconds: float


def probe(embed_batch: Callable[[], np.ndarray], embed_alone: Callable[[int], np.ndarray], count: int) -> Probe:
    """Run the probe batch once to warm up, then time it; then each text alone."""
    batch = embed_batch()
    seconds = float("inf")
    for _ in range(_TIMED_RUNS):
        started = time.perf_counter()
        embed_batch()
        seconds = min(seconds, time.perf_counter() - started)
    alone = np.concatenate([embed_alone(i) for i in range(count)])
    return Probe(batch, alone, seconds)


def trial(precision: str, measured: Probe, reference: Probe, bar: float = MIN_COSINE) -> Trial:
    return Trial(
        precision=precision,
        seconds=measured.seconds,
        cosine=worst_cosine(measured.batch, reference.batch),
        invariance=worst_cosine(measured.alone, measured.batch),
        bar=bar,
    )


def pick(trials: Sequence[Trial]) -> str:
    """The fastest passing trial at least MIN_SPEEDUP faster than fp32 (the first trial), else fp32."""
    reference = trials[0]
    better = [t for t in trials[1:] if t.passes and t.seconds * MIN_SPEEDUP <= reference.seconds]
    return min(better, key=lambda t: t.seconds).precision if better else reference.precision


class Choices:
    """The remembered choices: one JSON file in the cache folder, rewritten whole and atomically.

    Without a folder (tests, a read-only cache) choices last as long as the process.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._known: dict[str, dict[str, object]] = self._read()

    def _read(self) -> dict[str, dict[str, object]]:
        if self._path is None or not self._path.is_file():
            return {}
        try:
            known = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s, which cannot be read (%s); precisions will be measured again", self._path, exc)
            return {}
        return known if isinstance(known, dict) else {}

    def get(self, key: str) -> str | None:
        entry = self._known.get(key)
        precision = entry.get("precision") if isinstance(entry, dict) else None
        return precision if isinstance(precision, str) else None

    def remember(self, key: str, precision: str, trials: Sequence[Trial]) -> None:
        self._known[key] = {"precision": precision, "trials": [asdict(t) for t in trials]}
        self._write()

    def keep(self, wanted: Callable[[str], bool]) -> None:
        """Forget the choices whose key is not wanted."""
        unwanted = [key for key in self._known if not wanted(key)]
        for key in unwanted:
            del self._known[key]
        if unwanted:
            self._write()

    def _write(self) -> None:
        if self._path is None:
            return
        scratch = self._path.with_name(f".{self._path.name}.{os.getpid()}")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            scratch.write_text(json.dumps(self._known, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(scratch, self._path)
        except OSError as exc:
            scratch.unlink(missing_ok=True)
            log.warning("cannot remember precision choices in %s: %s", self._path, exc)
