"""OpenVINO inference for stored models: run the network on tokenized batches and give what it gives, pooled
vectors for an embedding model (and the sparse and per-token outputs its inputs ask for), logits for a reranker.

The engine never normalizes: /api/embed normalizes and /api/embeddings does not, so that choice belongs
to the embedding step (embed.py). Everything here is blocking and runs on worker threads; OpenVINO and
the tokenizer release the GIL while they work.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov

from daemon.inference.device import PRECISION_HINTS, DeviceChoice, compile_config, pick_device
from daemon.inference.precision import (
    MIN_COSINE,
    MIN_SCORE_CORRELATION,
    PROBE_TEXTS,
    RULE,
    Choices,
    Probe,
    Timing,
    candidates,
    interleaved,
    pick,
    probe,
    reasons,
    trial,
)
from daemon.inference.precision_trial import TrialFailed, run_trial
from daemon.inference.tokenize import ModelTokenizer, TokenizedText
from modelstore.layout import IR_FILE
from modelstore.network_io import Extras, Head, TokenHeads, network_inputs
from modelstore.spec import RERANK
from modelstore.store import ModelRecord

log = logging.getLogger(__name__)

# GPU kernels are compiled per shape; rounding the padded length keeps their number small.
_GPU_PAD_MULTIPLE = 16
# In the cache folder: the precision choices, and a folder of compiled blobs per model and precision.
PRECISION_FILE = "precision.json"
COMPILED_FOLDER = "compiled"
# pybind11 sets up its numpy bridge on first use, under a once-flag it enters holding the GIL: two inference
# slots reading their first output at once deadlock on it (the loop waits on the GIL for good). Set up here, once,
# on the importing thread.
ov.Tensor(np.zeros(1, dtype=np.float32)).data  # noqa: B018
# What a quantized model computes in, as /api/ps and the vector cache name it.
INT8 = "int8"
# OpenVINO's element types as OVEMBED_PRECISION names them.
_PRECISION_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def compute_precision(compiled: ov.CompiledModel) -> str:
    """The precision the device computes in, as the compiled model reports it (fp32, bf16, fp16).

    AUTO over several devices answers for none of them but names each one's own; where they differ (a GPU in
    fp16 beside a CPU in bf16) both are said, `bf16+fp16`.
    """
    try:
        kinds = [compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()]
    except RuntimeError:
        members = compiled.get_property("DEVICE_PROPERTIES").values()
        kinds = [m["INFERENCE_PRECISION_HINT"].get_type_name() for m in members if "INFERENCE_PRECISION_HINT" in m]
    return "+".join(sorted({_PRECISION_NAMES.get(kind, kind) for kind in kinds})) or "device default"


def _runs_in(record: ModelRecord, compiled: ov.CompiledModel) -> str:
    """int8 for a quantized network, whose matrix products are int8 whatever the rest computes in."""
    return INT8 if record.spec.quantization else compute_precision(compiled)


@dataclass(frozen=True)
class Rows:
    """A batch's output in input order: one float32 row per input (a pooled vector, a reranker's logit, or the
    weights of a network that pools itself), and the outputs its inputs asked for beside it."""

    rows: np.ndarray
    extras: Extras | None = None


class LoadedModel:
    """A compiled network with its tokenizer (`tokens`) and one infer request per parallel slot.

    `widen` compiles the network in fp32; given one, a batch whose vectors are not finite (fp16 overflows
    where fp32 does not, as Gemma's activations do) is run again in fp32 and the model stays in fp32.
    """

    def __init__(
        self,
        record: ModelRecord,
        compiled: ov.CompiledModel,
        device: DeviceChoice,
        widen: Callable[[], ov.CompiledModel] | None = None,
    ) -> None:
        self.record = record
        self.spec = record.spec
        self.compiled = compiled
        self.precision = _runs_in(record, compiled)
        self.device = device
        self._widen = widen if compute_precision(compiled) != "fp32" else None
        self._widening = threading.Lock()
        self.tokens = ModelTokenizer(record)
        # A cross-encoder's network ends in its logits and a SPLADE network in its vocabulary weights, one row per
        # input; every other network's output is token states to pool.
        rank = compiled.output(0).get_partial_shape().rank
        self._pools_itself = rank.is_static and rank.get_length() == 2
        self._input_names = {name for port in compiled.inputs for name in port.get_names()}
        self._requests = [compiled.create_infer_request() for _ in range(self.slots)]
        self._pad_multiple = _GPU_PAD_MULTIPLE if device.is_gpu else 1
        self._head = Head(record.path, self.spec)
        self._token_heads = TokenHeads(record.path, self.spec, self.tokens.special_ids, self.tokens.skip_ids)
        self.multivector_width = self._token_heads.multivector_width

    @property
    def slots(self) -> int:
        """How many batches the device runs at once, as OpenVINO advises for the compiled model."""
        return max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))

    def infer(self, slot: int, batch: Sequence[TokenizedText]) -> np.ndarray:
        """One float32 row per input of a padded batch, on the given slot's request: its pooled vector
        [dimension] for an embedding model (a SPLADE network's vocabulary weights), its logit [1] for a
        reranker."""
        return self.infer_outputs(slot, batch, ()).rows

    def infer_outputs(self, slot: int, batch: Sequence[TokenizedText], wanted: Sequence[Collection[str]]) -> Rows:
        """`infer`'s rows and, where `wanted` (one set per input, or empty) asks, each input's sparse vector
        and token vectors."""
        ids, kinds = [t.ids for t in batch], [t.type_ids for t in batch]
        attended = [t.attended for t in batch]
        inputs, mask = network_inputs(ids, kinds, self.tokens.pad_id, self._input_names, self._pad_multiple, attended)
        states, rows = self._run(slot, inputs, mask)
        if self._widen is not None and not np.isfinite(rows).all():
            self._pin_to_fp32()
            states, rows = self._run(slot, inputs, mask)
        if not any(wanted):
            return Rows(rows)
        return Rows(rows, self._token_heads(states, rows, ids, wanted, [t.query for t in batch]))

    def _run(self, slot: int, inputs: dict[str, np.ndarray], mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's output (valid until the slot's next run) and its rows."""
        request = self._requests[slot]
        request.infer(inputs)
        output = request.get_output_tensor(0).data
        if self._pools_itself:
            return output, np.array(output, dtype=np.float32)
        return output, self._head(output, mask)

    def _pin_to_fp32(self) -> None:
        """Recompile in fp32 once, whichever slot sees the overflow first; the others wait and reuse it."""
        with self._widening:
            if self._widen is None:
                return
            log.warning(
                "%s gave non-finite vectors in %s on %s; from now on it runs in fp32",
                self.record.name.display,
                self.precision,
                self.device.name,
            )
            compiled = self._widen()
            self._requests = [compiled.create_infer_request() for _ in self._requests]
            self.compiled, self.precision, self._widen = compiled, _runs_in(self.record, compiled), None


class Engine:
    """One OpenVINO core for the process: the device choice, the compile cache and the precision choices are
    shared by all models."""

    def __init__(self, device: str, precision: str, hint: str, cache_dir: Path | None) -> None:
        self.core = ov.Core()
        self._cache_dir = cache_dir
        self._hint = hint
        name = pick_device(device, self.core.available_devices, self._device_type)
        self.device = DeviceChoice(name=name, config=compile_config(precision, hint, name))
        full_name, capabilities = self._full_name(name), self._capabilities(name)
        measured = precision.strip().lower() == "auto"
        self._capabilities_seen = capabilities
        self._candidates = candidates(name, capabilities) if measured else ()
        self.choices = Choices(cache_dir / PRECISION_FILE if cache_dir is not None else None)
        # The same model on another device, CPU or OpenVINO release may well choose otherwise.
        self._machine = f"{name} {full_name} {' '.join(capabilities)} {ov.get_version()}"
        log.info("OpenVINO device %s (%s), settings %s", name, full_name, self.device.config)

    def _device_type(self, device: str) -> str:
        return str(self.core.get_property(device, "DEVICE_TYPE")).rsplit(".", 1)[-1]

    def _full_name(self, device: str) -> str:
        try:
            return str(self.core.get_property(device, "FULL_DEVICE_NAME"))
        except RuntimeError:
            return device

    def _capabilities(self, device: str) -> list[str]:
        try:
            return [str(c) for c in self.core.get_property(device, "OPTIMIZATION_CAPABILITIES")]
        except RuntimeError:
            return []

    def prune_cache(self, digests: set[str]) -> None:
        """Drop the compiled blobs and precision choices of models no longer stored (`digests` are those that
        are), and the choices made under an earlier rule, so a deleted model's cache does not stay on disk for
        good."""
        self.choices.keep(lambda key: key.split(" ")[0] in digests and key.split(" ")[1:2] == [RULE])
        compiled = self._cache_dir / COMPILED_FOLDER if self._cache_dir is not None else None
        if compiled is None or not compiled.is_dir():
            return
        for folder in compiled.iterdir():
            if folder.name not in digests:
                shutil.rmtree(folder, ignore_errors=True)

    def precision_of(self, record: ModelRecord) -> str:
        """The compute precision `record` runs in here: int8 as quantized, forced, remembered, or `auto` until
        first measured."""
        if record.spec.quantization:
            return INT8
        if not self._candidates:
            forced = self.device.config.get("INFERENCE_PRECISION_HINT")
            return _PRECISION_NAMES.get(forced, "device default") if forced else "device default"
        return self.choices.get(self._choice_key(record)) or "auto"

    def load(self, record: ModelRecord) -> LoadedModel:
        """The model compiled in its precision: forced, remembered, or measured now. A quantized network is
        never measured: its int8 was measured when it was made, and its float rest takes the device's default."""
        if record.spec.quantization or not self._candidates:
            return self._loaded(record, self.device.config)
        known = self.choices.get(self._choice_key(record))
        if known in self._candidates:
            return self._loaded(record, self._config(known))
        return self._measure(record)

    def _choice_key(self, record: ModelRecord) -> str:
        return f"{record.digest} {RULE} {self._machine}"

    def _config(self, precision: str) -> dict[str, str]:
        return {**self.device.config, "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision]}

    def _compile(self, record: ModelRecord, config: dict[str, str]) -> ov.CompiledModel:
        """From the IR path, so OpenVINO's model cache can skip the compile next time.

        The cache is a folder per model and precision: OpenVINO's CPU cache names a blob without the
        precision hint, and a bf16 compile that finds the fp32 blob of the same model crashes (2026.4).
        """
        if self._cache_dir is not None:
            precision = config.get("INFERENCE_PRECISION_HINT", "default")
            config = {**config, "CACHE_DIR": str(self._cache_dir / COMPILED_FOLDER / record.digest / precision)}
        return self.core.compile_model(str(record.path / IR_FILE), self.device.name, config)

    def _loaded(self, record: ModelRecord, config: dict[str, str]) -> LoadedModel:
        fp32 = self._config("fp32")
        compiled = self._compile(record, config)
        return LoadedModel(record, compiled, self.device, widen=lambda: self._compile(record, fp32))

    def measure(self, record: ModelRecord) -> LoadedModel:
        """`load` measuring again whatever is remembered (and remembering the new choice)."""
        return self._measure(record) if self._candidates and not record.spec.quantization else self.load(record)

    def _measure(self, record: ModelRecord) -> LoadedModel:
        """fp32, the reference, runs here (its failure is the load's); each narrower candidate in a child
        process, whose crash fails only that candidate, timed there against fp32. The model picked is compiled
        here."""
        started = time.perf_counter()
        reference_model = self._loaded(record, self._config(self._candidates[0]))
        reference = probe_model(reference_model)
        bar = MIN_SCORE_CORRELATION if record.spec.task == RERANK else MIN_COSINE
        trials = [trial(self._candidates[0], reference, reference, bar)]
        if len(self._candidates) > 1:
            # The child holds fp32 and the candidate for its timing: a third copy of a large model is too many.
            del reference_model
        for precision in self._candidates[1:]:
            try:
                measured = run_trial(record, self.device.name, precision, self._hint, self._cache_dir)
            except TrialFailed as exc:
                log.warning("%s cannot run in %s on %s: it %s", record.name.display, precision, self.device.name, exc)
                continue
            trials.append(trial(precision, measured, reference, bar))
        chosen = pick(trials)
        self.choices.remember(self._choice_key(record), chosen, trials)
        log.info(
            "%s runs in %s on %s, measured in %.1f s (rule %s): %s",
            record.name.display,
            chosen,
            self.device.name,
            time.perf_counter() - started,
            RULE,
            reasons(trials, self._capabilities_seen),
        )
        if len(self._candidates) == 1:
            return reference_model
        return self._loaded(record, self._config(chosen))


def _probe_tokens(model: LoadedModel) -> list[TokenizedText]:
    """The probe texts tokenized; a reranker scores each against the second as its query."""
    limit = model.spec.context_length
    if model.spec.task == RERANK:
        return model.tokens.pairs(PROBE_TEXTS[1], PROBE_TEXTS, limit)
    return model.tokens.texts(PROBE_TEXTS, limit, True)


def probe_model(model: LoadedModel) -> Probe:
    """The probe texts through `model`: in one batch, and each alone."""
    tokens = _probe_tokens(model)
    return probe(lambda: model.infer(0, tokens), lambda i: model.infer(0, tokens[i : i + 1]), len(tokens))


def time_against(model: LoadedModel, reference: LoadedModel) -> Timing:
    """The probe batch through `model` and through `reference` (fp32), timed in turn."""
    mine, theirs = _probe_tokens(model), _probe_tokens(reference)
    return interleaved(lambda: model.infer(0, mine), lambda: reference.infer(0, theirs))
