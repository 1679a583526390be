"""OVEMBED_PRECISION=auto: each model's compute precision, decided the same way every time on the same machine.

Daemons behind one balancer that built the same model must compute the same vectors, so the rule may not
rest on a timing that sits inside its own noise (a bf16 speed-up measured 1.125x on one daemon and 1.08x on
another fell either side of a 1.1x bar, and the same text came back 7e-5 apart). The decision rests on what
does not move between runs:

1. capability: the narrower precision is a candidate only where the device computes it natively (OpenVINO
   lists BF16 in a CPU's OPTIMIZATION_CAPABILITIES only with AVX512_BF16, AVX2-VNNI-2 or AMX; FP16 on a GPU);
2. accuracy: its probe vectors hold to fp32's, and a text alone to the same text in a batch (deterministic on
   one machine, so the same answer each time);
3. timing only as a veto, with a wide margin: the narrower precision is refused when, interleaved with fp32
   in one process, its fastest of many runs is more than MAX_SLOWDOWN times fp32's fastest, and stays so over
   three times the runs. A native precision is seldom slower at all; the margin sits far from where networks
   measure (bf16 at 0.35-0.7x fp32's time for all-MiniLM-L6-v2 on a Zen 4 CPU, 0.8-1.3x for a tiny test
   network, even with a busy loop on one of its two cores), so noise does not carry a measurement across it.

A speed-up is no longer asked for: where both are native and accurate enough the narrower one is taken, and a
precision that is merely as fast costs nothing. The choice is remembered per model digest, rule, device and
OpenVINO version, so later loads cost nothing and a change of rule measures again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Both bars of the accuracy promise: against fp32, and a text alone against the same text in a batch.
MIN_COSINE = 0.9999
# A reranker's bar, on the correlation of its scores: bf16 measured 0.99998 on a MiniLM-backbone
# cross-encoder while moving real scores by up to 0.02 and swapping candidates in a top five.
MIN_SCORE_CORRELATION = 0.99999
# The veto: a native narrower precision is refused only when its time is beyond this many times fp32's.
MAX_SLOWDOWN = 1.5
# The name of the rule in the remembered choices' keys: choices made under another rule are measured again.
RULE = "auto-v2"
# Interleaved runs of the probe batch, fp32 and the candidate in turn: at least MIN_RUNS, then until
# RUN_BUDGET_SECONDS are spent or MAX_RUNS are done (a large model's batch takes a second or more); a candidate
# beyond the veto is run to CONFIRM_RUNS.
MIN_RUNS = 7
MAX_RUNS = 21
CONFIRM_RUNS = 63
RUN_BUDGET_SECONDS = 3.0
# A run repeats a fast batch until it lasts about this long, so the scheduler's slices do not decide its time.
_RUN_SECONDS = 0.01
_MAX_REPEATS = 50

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
    """One candidate's measurement: its fastest seconds for the probe batch, its worst cosines, and that time
    over fp32's fastest in the same interleaved runs (1.0 for fp32 itself)."""

    precision: str
    seconds: float
    cosine: float  # against fp32
    invariance: float  # a text alone against the same text in the batch
    bar: float = MIN_COSINE
    slowdown: float = 1.0
    runs: int = 0

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
    """Vectors of the probe texts, in one batch and each alone; with a candidate, its fastest seconds for the
    batch and that time over fp32's, both from runs interleaved with fp32's."""

    batch: np.ndarray
    alone: np.ndarray
    seconds: float = 0.0
    slowdown: float = 1.0
    runs: int = 0


def probe(embed_batch: Callable[[], np.ndarray], embed_alone: Callable[[int], np.ndarray], count: int) -> Probe:
    """The probe texts' vectors: in one batch, then each alone."""
    batch = embed_batch()
    alone = np.concatenate([embed_alone(i) for i in range(count)])
    return Probe(batch, alone)


@dataclass(frozen=True)
class Timing:
    """The candidate's fastest seconds for the probe batch, that over fp32's fastest, and the runs behind them."""

    seconds: float
    slowdown: float
    runs: int


def interleaved(candidate: Callable[[], object], reference: Callable[[], object]) -> Timing:
    """Time the candidate and fp32 in turn, each first in every other run, and compare their fastest runs.

    Interference (another process on the cores, a preempted thread) only ever adds time, so the fastest of
    many runs is the figure it moves least; interleaved in one process, both sides get the same chances of a
    clean run. A batch of a small model takes a fraction of a millisecond, so a run repeats it to last about
    _RUN_SECONDS. A veto is confirmed before it stands: runs go on (to CONFIRM_RUNS) while the candidate looks
    beyond MAX_SLOWDOWN, so that a noisy spell cannot refuse it, while a truly slow one stays slow.
    """
    candidate()
    reference()  # warmed up: the first run of a compiled network allocates
    begun = time.perf_counter()
    candidate()
    repeats = min(_MAX_REPEATS, max(1, math.ceil(_RUN_SECONDS / max(time.perf_counter() - begun, 1e-6))))
    seconds: list[float] = []
    theirs: list[float] = []
    started = time.perf_counter()
    while not _enough(seconds, theirs, time.perf_counter() - started):
        first, second = (candidate, reference) if len(seconds) % 2 == 0 else (reference, candidate)
        taken = []
        for run in (first, second):
            begun = time.perf_counter()
            for _ in range(repeats):
                run()
            taken.append((time.perf_counter() - begun) / repeats)
        mine, fp32 = taken if first is candidate else taken[::-1]
        seconds.append(mine)
        theirs.append(fp32)
    return Timing(min(seconds), _slowdown(seconds, theirs), len(seconds))


def _slowdown(seconds: Sequence[float], theirs: Sequence[float]) -> float:
    return min(seconds) / max(min(theirs), 1e-9)


def _enough(seconds: Sequence[float], theirs: Sequence[float], spent: float) -> bool:
    """At least MIN_RUNS; then MAX_RUNS or the budget, unless a veto wants confirming."""
    runs = len(seconds)
    if runs < MIN_RUNS:
        return False
    if _slowdown(seconds, theirs) > MAX_SLOWDOWN:
        return runs >= CONFIRM_RUNS
    return runs >= MAX_RUNS or spent >= RUN_BUDGET_SECONDS


def trial(precision: str, measured: Probe, reference: Probe, bar: float = MIN_COSINE) -> Trial:
    return Trial(
        precision=precision,
        seconds=measured.seconds,
        cosine=worst_cosine(measured.batch, reference.batch),
        invariance=worst_cosine(measured.alone, measured.batch),
        bar=bar,
        slowdown=measured.slowdown,
        runs=measured.runs,
    )


def pick(trials: Sequence[Trial]) -> str:
    """The first narrower trial (the device's native one) that passes the accuracy bars and is not more than
    MAX_SLOWDOWN times slower than fp32 (the first trial), else fp32."""
    kept = [t for t in trials[1:] if t.passes and t.slowdown <= MAX_SLOWDOWN]
    return kept[0].precision if kept else trials[0].precision


def reasons(trials: Sequence[Trial], capabilities: Sequence[str]) -> str:
    """The figures behind `pick`, for the log line."""
    if len(trials) == 1:
        offered = " ".join(capabilities) or "unknown"
        return f"fp32 alone: no narrower precision is native here, or none ran (capabilities {offered})"
    said = []
    for t in trials[1:]:
        accurate = "passes" if t.passes else "fails"
        speed = "within" if t.slowdown <= MAX_SLOWDOWN else "beyond"
        said.append(
            f"{t.precision} is native (in the device's capabilities); cosine {t.cosine:.6f} to fp32, "
            f"{t.invariance:.6f} alone vs batch "
            f"({accurate} {t.bar}); fastest {t.seconds * 1000:.2f} ms against fp32's "
            f"{t.seconds / max(t.slowdown, 1e-9) * 1000:.2f} ms over {t.runs} interleaved runs, {t.slowdown:.2f}x "
            f"its time ({speed} the {MAX_SLOWDOWN}x veto)"
        )
    return "; ".join(said)


class Choices:
    """The remembered choices: one JSON file in the cache folder, rewritten whole and atomically.

    Several daemons may share the folder (one per device on one box): each change reads the file again under a
    lock and adds to it, so no daemon's choice overwrites another's, and a choice missing here is looked for in
    the file before it is measured. Without a folder (tests, a read-only cache) choices last as long as the
    process.
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
        if key not in self._known:  # another daemon on this cache may have measured it
            self._known.update(self._read())
        entry = self._known.get(key)
        precision = entry.get("precision") if isinstance(entry, dict) else None
        return precision if isinstance(precision, str) else None

    def remember(self, key: str, precision: str, trials: Sequence[Trial]) -> None:
        with self._locked():
            self._known = {**self._read(), key: {"precision": precision, "trials": [asdict(t) for t in trials]}}
            self._write()

    def keep(self, wanted: Callable[[str], bool]) -> None:
        """Forget the choices whose key is not wanted."""
        with self._locked():
            current = self._read() if self._path is not None else self._known
            self._known = {key: entry for key, entry in current.items() if wanted(key)}
            if len(self._known) < len(current):
                self._write()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The file's lock, held across a read and the write that follows it (no lock without a folder)."""
        if self._path is None:
            yield
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            lock = self._path.with_name(f".{self._path.name}.lock").open("a")
        except OSError:
            yield  # a read-only cache: _write says so
            return
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

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
