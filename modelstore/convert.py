"""Turns a repo's network into the IR the engine loads: one output, named tensors.

The network is the repo's OpenVINO IR or ONNX export, read by OpenVINO, or its safetensors checkpoint,
built by modelstore.architectures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from modelstore.architectures import WEIGHT_FORMATS, ArchitectureError, ReadProgress, WeightsError, build_network
from modelstore.layout import IR_FILE, REPO_CHECKPOINTS, REPO_NETWORKS, first_present, is_checkpoint
from modelstore.positions import table_positions
from modelstore.spec import EMBED, RERANK, SPARSE

_REQUIRED_INPUTS = ("input_ids", "attention_mask")
_OUTPUT_NAMES = ("last_hidden_state", "token_embeddings")
# The name of the one output a converted network keeps, by what the engine reads: the per-token states, a
# reranker's logits, or a SPLADE network's vocabulary logits pooled into one weight per vocabulary entry.
OUTPUT_NAME = {EMBED: "last_hidden_state", RERANK: "logits", SPARSE: "sparse_weights"}
# Where each is found in the source network: by name, else as its only output of that rank.
_SOURCE_OUTPUTS = {EMBED: (set(_OUTPUT_NAMES), 3), RERANK: ({"logits"}, 2), SPARSE: ({"logits"}, 3)}
_EXPECTED = {
    EMBED: "last_hidden_state [batch, tokens, hidden]",
    RERANK: "logits [batch, labels]",
    SPARSE: "logits [batch, tokens, vocabulary]",
}
_WEIGHT_TYPES = {
    ov.Type.f32: "fp32",
    ov.Type.f16: "fp16",
    ov.Type.bf16: "bf16",
    ov.Type.i8: "int8",
    ov.Type.u8: "int8",
    ov.Type.i4: "int4",
    ov.Type.u4: "int4",
}
_PRECISION_RANK = ("fp32", "bf16", "fp16", "int8", "int4")
_FROM_CHECKPOINT_ONLY = ("int8", "int4")


class ConversionError(ValueError):
    """A network the engine could not run, with what is wrong in words a person can act on."""


@dataclass(frozen=True)
class NetworkInfo:
    """Facts read off the converted network, for the manifest."""

    dimension: int | None
    precision: str
    parameter_count: int
    # The tokens its position table can place; None for a network without one (rotary positions).
    positions: int | None


def openvino_reason(exc: BaseException) -> str:
    """The first line a person can act on: OpenVINO's text starts with "Exception from <file>:<line>:" lines."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return next((line for line in lines if not line.startswith("Exception from ")), type(exc).__name__)


def find_network(folder: Path, weights: str | None = None, *, prefer_checkpoint: bool = False) -> Path:
    """The network to convert; int8 and int4 weights are made from a checkpoint, so they look for one first,
    as does whoever asks to prefer it."""
    checkpoint_first = prefer_checkpoint or weights in _FROM_CHECKPOINT_ONLY
    network = (checkpoint_first and first_present(folder, REPO_CHECKPOINTS)) or first_present(folder, REPO_NETWORKS)
    if network is None:
        raise ConversionError(
            f"{folder} has no network to convert: expected openvino/openvino_model.xml, onnx/model.onnx "
            "or model.safetensors"
        )
    return network


def _network_output(model: ov.Model, task: str) -> ov.Output:
    """The per-token hidden states, a reranker's logits or a masked LM's: by name first, else the only output
    of their rank."""
    wanted, rank = _SOURCE_OUTPUTS[task]
    for output in model.outputs:
        if output.get_names() & wanted:
            return output
    of_rank = [o for o in model.outputs if o.get_partial_shape().rank.get_length() == rank]
    if len(of_rank) == 1:
        return of_rank[0]
    names = ", ".join(sorted(n for o in model.outputs for n in o.get_names())) or "(unnamed)"
    raise ConversionError(f"network outputs are {names}; expected {_EXPECTED[task]}")


def _splade_pooled(model: ov.Model, logits: ov.Output) -> ov.Model:
    """SPLADE's pooling in the graph, so the engine reads one row per text rather than a row per token and
    vocabulary entry: the max over real tokens of log(1 + relu(logit)), which is 0 where no token weighs."""
    mask = next(p for p in model.get_parameters() if "attention_mask" in p.output(0).get_names())
    source = logits.get_node().input_value(0)  # what the model's Result node holds, not the Result itself
    weights = ops.log(ops.add(ops.relu(source), ops.constant(np.float32(1.0))))
    real = ops.unsqueeze(ops.convert(mask, "f32"), ops.constant(np.int64(-1)))
    pooled = ops.reduce_max(ops.multiply(weights, real), ops.constant(np.int64(1)), keep_dims=False)
    return ov.Model([pooled], model.get_parameters(), model.get_friendly_name())


def _weights(model: ov.Model) -> tuple[str, int]:
    """The lowest weight precision present and the number of weights, as `ollama show` reports them."""
    seen: set[str] = set()
    count = 0
    for op in model.get_ops():
        if op.get_type_name() != "Constant":
            continue
        kind = _WEIGHT_TYPES.get(op.get_output_element_type(0))
        size = int(np.prod(op.get_output_shape(0))) if op.get_output_partial_shape(0).is_static else 0
        if kind is None or size <= 1:
            continue
        seen.add(kind)
        count += size
    precision = max(seen, key=_PRECISION_RANK.index) if seen else "fp32"
    return precision, count


def _name_in_order(model: ov.Model) -> None:
    """Give each node OpenVINO named by its own counter (`Add_4812`) its place in the graph instead.

    The counter runs across a process, so the same source converted twice in one daemon would be saved with
    other names, as other bytes under another digest; named by place, one source always makes one IR.
    """
    for index, node in enumerate(model.get_ordered_ops()):
        kind = node.get_type_name()
        if re.fullmatch(rf"{re.escape(kind)}_\d+", node.get_friendly_name()):
            node.set_friendly_name(f"{kind}_{index}")
    if re.fullmatch(r"Model\d+", model.get_friendly_name()):
        model.set_friendly_name("Model")


def convert_network(
    source: Path,
    destination: Path,
    weights: str | None = None,
    progress: ReadProgress | None = None,
    task: str = EMBED,
) -> NetworkInfo:
    """Read or build the source network and save it as IR in `destination`.

    ONNX external data is found beside the .onnx file. By default read networks keep the precision their
    weights came in (fp16-compressed IR stays compressed, fp32 ONNX stays fp32) and built networks get fp16
    weights; `weights` asks for fp16 or fp32 where the source has fp32, or, for a checkpoint, int8 or int4 weight
    matrices. The engine decides the compute precision. `progress` follows a checkpoint being built. `task`
    says which output the engine reads: per-token states, a reranker's logits, or (SPARSE) a masked LM's logits
    pooled as SPLADE pools them.
    """
    if weights not in (None, *WEIGHT_FORMATS):
        raise ConversionError(f"weights {weights!r} is not one of {', '.join(WEIGHT_FORMATS)}")
    core = ov.Core()
    built = is_checkpoint(source)
    if weights in _FROM_CHECKPOINT_ONLY and not built:
        raise ConversionError(f"{weights} weights are made from a safetensors checkpoint, and {source.name} is not one")
    # A built network has its weights in their storage format already; a read one is compressed if asked.
    compress = weights == "fp16" and not built
    try:
        model = build_network(source, weights or "fp16", progress) if built else core.read_model(source)
    except (ArchitectureError, WeightsError) as exc:
        raise ConversionError(str(exc)) from exc
    except RuntimeError as exc:
        raise ConversionError(f"OpenVINO cannot read {source.name}: {openvino_reason(exc)}") from exc
    inputs = {name for port in model.inputs for name in port.get_names()}
    missing = [name for name in _REQUIRED_INPUTS if name not in inputs]
    if missing:
        raise ConversionError(f"network inputs are {', '.join(sorted(inputs))}; missing {', '.join(missing)}")
    output = _network_output(model, task)
    if task == SPARSE:
        model = _splade_pooled(model, output)
        output = model.output(0)
    elif len(model.outputs) != 1:
        model = ov.Model([output], model.get_parameters(), model.get_friendly_name())
        output = model.output(0)
    output.get_tensor().set_names({OUTPUT_NAME[task]})
    last = output.get_partial_shape()[-1]
    dimension = last.get_length() if last.is_static else None
    _name_in_order(model)
    ov.save_model(model, destination / IR_FILE, compress_to_fp16=compress)
    # Only a compression at save time changes the weights from those of the model in memory.
    precision, parameters = _weights(core.read_model(destination / IR_FILE) if compress else model)
    return NetworkInfo(dimension, precision, parameters, table_positions(model))
