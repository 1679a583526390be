"""The pieces transformer encoders are made of, as OpenVINO nodes with weights from a checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from modelstore.architectures.weights import Checkpoint, Tensor

Node = ov.Node | ov.Output

# Added to the scores of padding keys: the lowest float32, as transformers masks them, finite so a
# softmax over a row never divides zero by zero.
MASKED_SCORE = float(np.finfo(np.float32).min)

# transformers' ACT2FN names, as OpenVINO ops.
_ACTIVATIONS = {
    "gelu": lambda x: ops.gelu(x, "erf"),
    "gelu_new": lambda x: ops.gelu(x, "tanh"),
    "gelu_pytorch_tanh": lambda x: ops.gelu(x, "tanh"),
    "gelu_fast": lambda x: ops.gelu(x, "tanh"),
    "relu": ops.relu,
    "silu": ops.swish,
    "swish": ops.swish,
    "tanh": ops.tanh,
}


class ArchitectureError(ValueError):
    """A config this converter cannot build faithfully, said with what it has and what it supports."""


def find_prefix(checkpoint: Checkpoint, prefixes: tuple[str, ...], tensor: str, family: str) -> str:
    """The prefix the backbone's tensors carry: checkpoints saved from a task model nest it (`bert.`, `model.`)."""
    for prefix in prefixes:
        if f"{prefix}{tensor}" in checkpoint:
            return prefix
    raise ArchitectureError(f"the checkpoint has no {tensor}: not a {family}")


def heads_of(config: dict[str, Any]) -> tuple[int, int, int]:
    """Hidden size, attention heads and the size of each, for encoders whose heads split the hidden size."""
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    return hidden, heads, hidden // heads


def text_inputs() -> tuple[ov.Node, ov.Node]:
    """The engine's two inputs, token ids and attention mask, [batch, tokens] int64."""
    input_ids = ops.parameter([-1, -1], ov.Type.i64, name="input_ids")
    return input_ids, ops.parameter([-1, -1], ov.Type.i64, name="attention_mask")


def check_activation(name: str) -> None:
    if name not in _ACTIVATIONS:
        raise ArchitectureError(f"activation {name!r} is not one of {', '.join(sorted(_ACTIVATIONS))}")


def activation(name: str, x: Node) -> Node:
    check_activation(name)
    return _ACTIVATIONS[name](x)


WEIGHT_FORMATS = ("fp16", "fp32", "int8", "int4")
# int4 groups: the largest of these that divides a matrix's input width; 32 as llama.cpp's Q4_0 blocks
# (on all-MiniLM, groups of 128 measured worst cosine 0.85 against 0.91 for 32).
_INT4_GROUPS = (32, 16)


class Weights:
    """A checkpoint's tensors under one name prefix, as OpenVINO constants that compute in float32.

    With fp32 storage a float32 tensor is a constant sharing the mapped file's memory. Otherwise tensors are
    stored as fp16 constants decompressed to float32, narrowed a block at a time (a value out of fp16's
    range keeps its tensor in float32). With int8, weight matrices are symmetric int8 per output channel
    times float scales; with int4, asymmetric 4-bit per group of inputs with a zero point and a scale per
    group (a matrix no group size divides stays int8). Both are OpenVINO's decompression pattern, which its
    plugins run without widening. Embedding tables, norms and biases stay fp16.
    """

    def __init__(self, checkpoint: Checkpoint, prefix: str = "", *, storage: str = "fp16") -> None:
        if storage not in WEIGHT_FORMATS:
            raise ArchitectureError(f"weights {storage!r} is not one of {', '.join(WEIGHT_FORMATS)}")
        self.checkpoint = checkpoint
        self.prefix = prefix
        self.storage = storage

    def __contains__(self, name: str) -> bool:
        return self.prefix + name in self.checkpoint

    def const(self, name: str) -> Node:
        tensor = self.checkpoint.get(self.prefix + name)
        if self.storage != "fp32":
            values = tensor.as_float16()
            if values is not None:
                stored = ops.constant(np.asarray(values, order="C"), shared_memory=True, name=self.prefix + name)
                return ops.convert(stored, "f32")
        return ops.constant(np.asarray(tensor.as_float32(), order="C"), shared_memory=True, name=self.prefix + name)

    def matrix(self, name: str) -> Node:
        """A weight matrix [out, in] in the storage format."""
        if self.storage not in ("int8", "int4"):
            return self.const(name)
        tensor = self.checkpoint.get(self.prefix + name)
        group = next((g for g in _INT4_GROUPS if tensor.array.shape[-1] % g == 0), None)
        if self.storage == "int4" and tensor.array.ndim == 2 and group is not None:
            return self._int4_matrix(name, tensor, group)
        values, scales = tensor.as_int8_rows()
        stored = ops.constant(values, shared_memory=True, name=self.prefix + name)
        return ops.multiply(ops.convert(stored, "f32"), ops.constant(scales, shared_memory=True))

    def _int4_matrix(self, name: str, tensor: Tensor, group: int) -> Node:
        rows, width = tensor.array.shape
        values, zeros, scales = tensor.as_uint4_groups(group)
        grouped = [rows, width // group, group]
        # A packed constant is copied: one sharing the array would outlive it (u4 tensors keep no reference).
        stored = ov.op.Constant(ov.Tensor(values, grouped, ov.Type.u4), shared_memory=False)
        stored.set_friendly_name(self.prefix + name)
        zero = ov.op.Constant(ov.Tensor(zeros, [rows, width // group, 1], ov.Type.u4), shared_memory=False)
        centred = ops.subtract(ops.convert(stored, "f32"), ops.convert(zero, "f32"))
        scaled = ops.multiply(centred, ops.convert(ops.constant(scales, shared_memory=True), "f32"))
        return ops.reshape(scaled, ops.constant(np.array([rows, width], dtype=np.int64)), special_zero=False)


def linear(weights: Weights, name: str, x: Node) -> Node:
    """torch.nn.Linear: x @ W^T (+ b)."""
    y = ops.matmul(x, weights.matrix(f"{name}.weight"), transpose_a=False, transpose_b=True)
    return ops.add(y, weights.const(f"{name}.bias")) if f"{name}.bias" in weights else y


def layer_norm(weights: Weights, name: str, x: Node, eps: float) -> Node:
    """torch.nn.LayerNorm over the last axis: eps inside the square root, then scale and shift."""
    normed = ops.mvn(x, ops.constant(np.array([-1], dtype=np.int64)), True, eps, "inside_sqrt")
    scaled = ops.multiply(normed, weights.const(f"{name}.weight"))
    return ops.add(scaled, weights.const(f"{name}.bias")) if f"{name}.bias" in weights else scaled


def key_mask(attention_mask: Node) -> Node:
    """[batch, 1, 1, keys] additive mask: 0 for real tokens, MASKED_SCORE for padding."""
    padding = ops.subtract(ops.constant(np.float32(1.0)), ops.convert(attention_mask, "f32"))
    bias = ops.multiply(padding, ops.constant(np.float32(MASKED_SCORE)))
    return ops.unsqueeze(bias, ops.constant(np.array([1, 2], dtype=np.int64)))


def split_heads(x: Node, heads: int, head_size: int) -> Node:
    """[batch, tokens, heads * size] -> [batch, heads, tokens, size]."""
    shaped = ops.reshape(x, ops.constant(np.array([0, 0, heads, head_size], dtype=np.int64)), special_zero=True)
    return ops.transpose(shaped, ops.constant(np.array([0, 2, 1, 3], dtype=np.int64)))


def merge_heads(x: Node, width: int) -> Node:
    """[batch, heads, tokens, size] -> [batch, tokens, heads * size]."""
    moved = ops.transpose(x, ops.constant(np.array([0, 2, 1, 3], dtype=np.int64)))
    return ops.reshape(moved, ops.constant(np.array([0, 0, width], dtype=np.int64)), special_zero=True)


def attention(q: Node, k: Node, v: Node, mask: Node, scale: float) -> Node:
    """Softmax(q k^T * scale + mask) v, as OpenVINO's fused scaled-dot-product attention."""
    return ops.scaled_dot_product_attention(q, k, v, mask, ops.constant(np.float32(scale)))


def grouped_query_attention(
    weights: Weights,
    prefix: str,
    x: Node,
    heads: tuple[int, int, int],
    rotary: tuple[Node, Node],
    mask: Node,
    head_norm: Callable[[str, Node], Node],
    scale: float,
) -> Node:
    """Llama-style self-attention with q_proj/k_proj/v_proj/o_proj, RMSNorm on each query and key head before
    the rotary embedding, and `heads` = (query heads, key/value heads, head size)."""
    query_heads, kv_heads, head_size = heads
    q = split_heads(linear(weights, f"{prefix}.q_proj", x), query_heads, head_size)
    k = split_heads(linear(weights, f"{prefix}.k_proj", x), kv_heads, head_size)
    v = split_heads(linear(weights, f"{prefix}.v_proj", x), kv_heads, head_size)
    cos, sin = rotary
    q = rotate(head_norm(f"{prefix}.q_norm", q), cos, sin)
    k = rotate(head_norm(f"{prefix}.k_norm", k), cos, sin)
    groups = query_heads // kv_heads
    k, v = repeat_heads(k, groups, kv_heads, head_size), repeat_heads(v, groups, kv_heads, head_size)
    context = merge_heads(attention(q, k, v, mask, scale), query_heads * head_size)
    return linear(weights, f"{prefix}.o_proj", context)


def gated_mlp(weights: Weights, prefix: str, x: Node, act: str) -> Node:
    """down_proj(act(gate_proj(x)) * up_proj(x)), the feed-forward of Llama-style blocks."""
    gate = activation(act, linear(weights, f"{prefix}.gate_proj", x))
    return linear(weights, f"{prefix}.down_proj", ops.multiply(gate, linear(weights, f"{prefix}.up_proj", x)))


def rms_norm(weights: Weights, name: str, x: Node, eps: float, unit_offset: bool = False) -> Node:
    """T5/Llama RMSNorm: x / sqrt(mean(x^2) + eps) * weight, over the last axis; Gemma's scales by 1 + weight."""
    axis = ops.constant(np.array([-1], dtype=np.int64))
    mean_square = ops.reduce_mean(ops.multiply(x, x), axis, keep_dims=True)
    root = ops.sqrt(ops.add(mean_square, ops.constant(np.float32(eps))))
    normed = ops.divide(x, root)
    scale = weights.const(f"{name}.weight")
    return ops.multiply(normed, ops.add(scale, ops.constant(np.float32(1.0))) if unit_offset else scale)


def rotary_bases(config: dict[str, Any], older_keys: dict[str, tuple[str, float]]) -> dict[str, float]:
    """Each layer type's rotary base: transformers 5's rope_parameters, else the older top-level key and its
    default; only the default rotary embedding is converted."""
    parameters = config.get("rope_parameters") or {}
    bases = {}
    for kind, (old_key, default) in older_keys.items():
        own = parameters.get(kind) or {}
        if own.get("rope_type", "default") != "default":
            raise ArchitectureError(f"rotary embedding type {own['rope_type']!r}: only the default one is converted")
        bases[kind] = float(own.get("rope_theta", config.get(old_key, default)))
    return bases


def rotary_tables(positions: Node, head_size: int, theta: float) -> tuple[Node, Node]:
    """cos and sin of the default rotary embedding, [batch, 1, tokens, head_size], for rotate_half."""
    inverse = 1.0 / (theta ** (np.arange(0, head_size, 2, dtype=np.float64) / head_size))
    angles = ops.multiply(ops.unsqueeze(ops.convert(positions, "f32"), -1), inverse.astype(np.float32))
    both = ops.concat([angles, angles], -1)
    at_heads = ops.constant(np.array([1], dtype=np.int64))
    return ops.unsqueeze(ops.cos(both), at_heads), ops.unsqueeze(ops.sin(both), at_heads)


def rotate(x: Node, cos: Node, sin: Node) -> Node:
    """x * cos + rotate_half(x) * sin, where rotate_half(x) = concat(-x2, x1) of x's two halves."""
    first, second = ops.split(x, -1, 2).outputs()
    rotated = ops.concat([ops.negative(second), first], -1)
    return ops.add(ops.multiply(x, cos), ops.multiply(rotated, sin))


def repeat_heads(x: Node, groups: int, kv_heads: int, head_size: int) -> Node:
    """Grouped-query attention's repeat_kv: [batch, kv_heads, tokens, size] -> [batch, kv_heads*groups, ...]."""
    if groups == 1:
        return x
    expanded = ops.unsqueeze(x, ops.constant(np.array([2], dtype=np.int64)))
    shape = ops.shape_of(expanded)
    target = ops.concat(
        [
            ops.gather(shape, ops.constant(np.array([0, 1], dtype=np.int64)), 0),
            ops.constant(np.array([groups], dtype=np.int64)),
            ops.gather(shape, ops.constant(np.array([3, 4], dtype=np.int64)), 0),
        ],
        0,
    )
    tiled = ops.broadcast(expanded, target)
    return ops.reshape(tiled, ops.constant(np.array([0, kv_heads * groups, -1, head_size], dtype=np.int64)), True)


def _token_index(tokens: Node) -> Node:
    """0..S-1 along the token axis of a [batch, tokens] input."""
    length = ops.gather(ops.shape_of(tokens), ops.constant(np.int64(1)), ops.constant(np.int64(0)))
    return ops.range(ops.constant(np.int64(0)), length, ops.constant(np.int64(1)), "i64")


def _pair_mask(attention_mask: Node, hidden: Callable[[Node, Node], Node]) -> Node:
    """[batch, 1, queries, keys] additive mask: padding keys and pairs where `hidden(query, key)` holds."""
    index = _token_index(attention_mask)
    masked = hidden(ops.unsqueeze(index, 1), ops.unsqueeze(index, 0))  # [queries, keys]
    pairs = ops.select(masked, ops.constant(np.float32(MASKED_SCORE)), ops.constant(np.float32(0.0)))
    return ops.minimum(ops.unsqueeze(pairs, ops.constant(np.array([0, 1], dtype=np.int64))), key_mask(attention_mask))


def causal_key_mask(attention_mask: Node) -> Node:
    """Each token sees itself and earlier real tokens only."""
    return _pair_mask(attention_mask, lambda query, key: ops.greater(key, query))


def window_key_mask(attention_mask: Node, half_window: int) -> Node:
    """A bidirectional local window: each token sees the real tokens with |query - key| <= half_window."""
    limit = ops.constant(np.int64(half_window))
    return _pair_mask(attention_mask, lambda query, key: ops.greater(ops.abs(ops.subtract(key, query)), limit))


def absolute_positions(input_ids: Node) -> Node:
    """0..S-1 for every row, [1, tokens]: with right padding, each text's own positions."""
    return ops.unsqueeze(_token_index(input_ids), 0)


# transformers' names for the two kinds of attention layer in config.json's `layer_types`.
GLOBAL, LOCAL = "full_attention", "sliding_attention"


def layer_types(config: dict[str, Any], local: Callable[[int], bool]) -> list[str]:
    """Each layer's kind: config.json's `layer_types`, else the architecture's older rule (`local(i)` for layer i)."""
    if config.get("layer_types"):
        return [str(t) for t in config["layer_types"]]
    return [LOCAL if local(i) else GLOBAL for i in range(int(config["num_hidden_layers"]))]


def layer_masks(attention_mask: Node, half_window: int) -> dict[str, Node]:
    """The key mask for each kind of layer: every real token for a global one, a window of them for a local one."""
    return {GLOBAL: key_mask(attention_mask), LOCAL: window_key_mask(attention_mask, half_window)}
