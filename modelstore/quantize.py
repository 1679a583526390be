"""`--quantize q8_0`: a converted network made to compute in int8, or refused with the figure that failed.

NNCF (the optional `quantize` extra) inserts static activation quantization into the IR, calibrated on texts
shaped like real traffic (calibration.py), with SmoothQuant moving activation outliers into the weights and
min-max ranges, which kept one-word texts where percentile ranges clipped them. Candidates are tried fastest
first: every matrix product in int8, then the feed-forward down-projections (the products fed by the
activation function, whose inputs carry the widest outliers) of the first half of the layers kept in float,
then all of them. The first whose vectors stay within the bar of the model's own fp32 network on held-out
texts is kept; if none does, nothing is stored.

Dynamic quantization of activations over int8 weights (the CPU plugin's DYNAMIC_QUANTIZATION_GROUP_SIZE) was
measured beside it on all-MiniLM-L6-v2 and lost: no faster at equal accuracy, and its result is a setting of
one plugin rather than a property of the stored network that every device and node runs the same.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from tokenizers import Tokenizer

from modelstore.calibration import calibration_texts, held_out_texts
from modelstore.layout import IR_FILE, IR_WEIGHTS_FILE, TOKENIZER_FILE
from modelstore.network_io import Head, network_inputs
from modelstore.spec import DENSE, EMBED, RERANK, Fidelity, ModelDescription

# Ollama's `--quantize` spelling first; "int8" says the same.
QUANTIZE_LEVELS = {"q8_0": "q8_0", "int8": "q8_0"}
# The promise an int8 model keeps against its fp32 network, or it is not made.
MIN_WORST_COSINE = 0.99
MIN_MEAN_COSINE = 0.998
MAX_SCORE_CHANGE = 0.01
# SmoothQuant's migration strength for matrix products: 0.75 kept the most of one-word texts on all-MiniLM
# (the transformer preset's 0.95 lost them).
_SMOOTH_QUANT_ALPHA = 0.75
# The activations whose outputs feed a down-projection, alone or gating a product (GLU variants).
_FEED_FORWARD_ACTIVATIONS = frozenset({"Gelu", "Swish", "HSwish", "Mish", "Relu"})
_TIMED_BATCH = 32
# The first candidate, in the words the others use.
EVERYTHING_INT8 = "nothing in float"
# Where the int8 network is written before it replaces the float one, inside the staged model's folder.
_QUANTIZED_FOLDER = "int8"


@dataclass(frozen=True)
class Candidate:
    """One candidate as it goes: what stays float (in words), and once measured its worst and mean figure."""

    kept_in_float: str
    worst: float | None = None
    mean: float | None = None


# Told of each candidate as it starts and again once it is measured.
Tried = Callable[[Candidate], None]


class QuantizeError(ValueError):
    """The network cannot be made int8; the message says why, with the measured figures when it was tried."""


def quantization_level(requested: str) -> str:
    """Ollama's level name for what was asked (q8_0 or int8), or QuantizeError naming what is offered."""
    level = QUANTIZE_LEVELS.get(requested.strip().lower())
    if level is None:
        raise QuantizeError(f"quantization {requested!r} is not supported; use q8_0 (int8 compute)")
    return level


def _nncf() -> Any:
    try:
        import nncf
    except ImportError as exc:
        raise QuantizeError(
            "int8 quantization needs NNCF, which is an optional extra: pip install 'ovembed[quantize]'"
        ) from exc
    # Its step-by-step notes would fill a daemon's log; its warnings still reach it.
    logging.getLogger("nncf").setLevel(logging.WARNING)
    return nncf


class _Measured:
    """The model's inputs (texts, or a cross-encoder's pairs) tokenized once, and what a network makes of them."""

    def __init__(self, folder: Path, description: ModelDescription, input_names: set[str]) -> None:
        tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        # Padded places are masked, so their id is never read; the repo's own is used where it names one.
        self._pad_id = int((tokenizer.padding or {}).get("pad_id", 0))
        tokenizer.no_padding()
        tokenizer.enable_truncation(description.context_length)
        self._input_names = input_names
        self.scores = description.task == RERANK
        self._head = None if self.scores else Head(folder, description)
        self._sigmoid = description.score_activation == "sigmoid"
        encode = _pairs_of(tokenizer) if self.scores else lambda texts: tokenizer.encode_batch(texts)
        self.calibration = encode(calibration_texts())
        self.held_out = encode(held_out_texts())

    def feed(self, encodings: list) -> tuple[dict[str, np.ndarray], np.ndarray]:
        ids = [e.ids for e in encodings]
        kinds = [e.type_ids for e in encodings]
        return network_inputs(ids, kinds, self._pad_id, self._input_names)

    def outputs(self, compiled: ov.CompiledModel, encodings: list) -> np.ndarray:
        """Vectors (embedding model) or scores (cross-encoder), in batches of near-equal lengths."""
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        rows: list[np.ndarray] = [np.empty(0)] * len(encodings)
        request = compiled.create_infer_request()
        for start in range(0, len(order), _TIMED_BATCH):
            chunk = order[start : start + _TIMED_BATCH]
            inputs, mask = self.feed([encodings[i] for i in chunk])
            request.infer(inputs)
            states = request.get_output_tensor(0).data
            result = (
                np.array(states, np.float32).reshape(len(chunk), -1) if self._head is None else self._head(states, mask)
            )
            for row, index in zip(result, chunk, strict=True):
                rows[index] = row
        stacked = np.stack(rows).astype(np.float64)
        if self.scores and self._sigmoid:
            return 1.0 / (1.0 + np.exp(-stacked[:, 0]))
        return stacked[:, 0] if self.scores else stacked


def _pairs_of(tokenizer: Tokenizer) -> Callable[[list[str]], list]:
    """A cross-encoder's inputs: each question of the corpus against a few of its passages."""

    def encode(texts: list[str]) -> list:
        queries = [t for t in texts if len(t.split()) <= 8]
        passages = [t for t in texts if len(t.split()) > 8]
        pairs = [(queries[i % len(queries)], passage) for i, passage in enumerate(passages)]
        return tokenizer.encode_batch(pairs)

    return encode


def _down_projections(model: ov.Model) -> list[str]:
    """The matrix products fed by a feed-forward activation (through a gating product, for GLU blocks)."""

    def activation(node: ov.Node, depth: int = 0) -> bool:
        kind = node.get_type_name()
        if kind in _FEED_FORWARD_ACTIVATIONS:
            return True
        if kind == "Convert" or (kind == "Multiply" and depth == 0):
            return any(activation(node.input_value(i).get_node(), depth + 1) for i in range(node.get_input_size()))
        return False

    return [
        op.get_friendly_name()
        for op in model.get_ops()
        if op.get_type_name() == "MatMul" and activation(op.input_value(0).get_node())
    ]


def _fidelity(reference: np.ndarray, candidate: np.ndarray, scores: bool) -> tuple[float, float]:
    if scores:
        change = np.abs(candidate - reference)
        return float(change.max()), float(change.mean())
    unit = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # noqa: E731
    cosines = (unit(reference) * unit(candidate)).sum(axis=1)
    return float(cosines.min()), float(cosines.mean())


def _passes(worst: float, mean: float, scores: bool) -> bool:
    if scores:
        return worst <= MAX_SCORE_CHANGE
    return worst >= MIN_WORST_COSINE and mean >= MIN_MEAN_COSINE


def _rate(compiled: ov.CompiledModel, measured: _Measured, encodings: list) -> float:
    """Inputs a second through `compiled`, best of three passes after a warm-up."""
    measured.outputs(compiled, encodings)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        measured.outputs(compiled, encodings)
        best = min(best, time.perf_counter() - started)
    return len(encodings) / best


def _machine(core: ov.Core) -> str:
    try:
        return str(core.get_property("CPU", "FULL_DEVICE_NAME"))
    except RuntimeError:
        return platform.processor() or platform.machine()


def quantize_network(
    folder: Path,
    description: ModelDescription,
    *,
    tried: Tried | None = None,
) -> Fidelity:
    """Replace the network in `folder` with its int8 version and say how faithful and fast it is.

    `tried` hears of each candidate as it starts and once it is measured (`ovembed create` prints the figures).
    Raises QuantizeError, leaving the folder's network as it was, when no candidate keeps the bar.
    """
    if description.pair_format:
        raise QuantizeError(
            "q8_0 is made for embedding models and cross-encoders; a language-model reranker keeps its weights' "
            "precision (try --weights int8 for its memory)"
        )
    if description.task == EMBED and DENSE not in description.outputs:
        raise QuantizeError(
            "q8_0 is measured on dense vectors, and a SPLADE or ColBERT model gives none; it keeps its weights' "
            "precision (try --weights int8 for its memory)"
        )
    nncf = _nncf()
    core = ov.Core()
    network = core.read_model(folder / IR_FILE)
    measured = _Measured(folder, description, {n for port in network.inputs for n in port.get_names()})
    reference = measured.outputs(
        core.compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}), measured.held_out
    )
    calibration = nncf.Dataset(measured.calibration, lambda encoding: measured.feed([encoding])[0])
    figures: list[str] = []
    heard = tried or (lambda candidate: None)
    for kept, ignored in _candidates(network):
        heard(Candidate(kept))
        candidate = nncf.quantize(
            network,
            calibration,
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(measured.calibration),
            ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None,
            advanced_parameters=_advanced(),
        )
        compiled = core.compile_model(candidate, "CPU")
        worst, mean = _fidelity(reference, measured.outputs(compiled, measured.held_out), measured.scores)
        heard(Candidate(kept, worst, mean))
        figures.append(f"{kept}: {_said(worst, mean, measured.scores)}")
        if _passes(worst, mean, measured.scores):
            unquantized = _rate(core.compile_model(network, "CPU"), measured, measured.held_out)
            speedup = _rate(compiled, measured, measured.held_out) / unquantized
            _replace_network(candidate, folder)
            return Fidelity(
                measure="score change" if measured.scores else "cosine",
                worst=round(worst, 6),
                mean=round(mean, 6),
                inputs=len(measured.held_out),
                speedup=round(speedup, 3),
                machine=_machine(core),
                kept_in_float="" if kept == EVERYTHING_INT8 else kept,
            )
    bar = (
        f"no score may move by more than {MAX_SCORE_CHANGE}"
        if measured.scores
        else f"worst cosine to fp32 at least {MIN_WORST_COSINE} and mean at least {MIN_MEAN_COSINE}"
    )
    raise QuantizeError(f"int8 is not faithful enough for this model ({'; '.join(figures)}; the bar is {bar})")


def _replace_network(model: ov.Model, folder: Path) -> None:
    """Write `model` beside the network it came from, then move it over that one: the old weights file is
    memory-mapped by the model read from it, and writing into a mapped file kills the process (SIGBUS)."""
    written = folder / _QUANTIZED_FOLDER
    written.mkdir()
    ov.save_model(model, written / IR_FILE, compress_to_fp16=False)
    for name in (IR_FILE, IR_WEIGHTS_FILE):
        os.replace(written / name, folder / name)
    written.rmdir()


def _candidates(network: ov.Model) -> Iterable[tuple[str, list[str]]]:
    """(what stays float, in words; the names NNCF leaves alone), fastest first.

    Between all and none of the down-projections, those of the first half of the layers: on all-MiniLM the
    early ones moved one-word texts most (layer 1's alone in float kept 0.9928 worst, layers 4-6's 0.9776).
    """
    yield EVERYTHING_INT8, []
    down = _down_projections(network)  # in the graph's order, first layer first
    early = down[: (len(down) + 1) // 2]
    if early and len(early) < len(down):
        yield "the first half of the layers' feed-forward down-projections in float", early
    if down:
        yield "feed-forward down-projections in float", down


def _advanced() -> Any:
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    return AdvancedQuantizationParameters(
        smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=_SMOOTH_QUANT_ALPHA),
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
    )


def _said(worst: float, mean: float, scores: bool) -> str:
    if scores:
        return f"largest score change {worst:.4f}, mean {mean:.4f}"
    return f"worst cosine {worst:.5f}, mean {mean:.5f}"
