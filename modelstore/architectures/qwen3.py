"""Qwen3 (qwen3-embedding), as transformers' modeling_qwen3.py runs it for an embedding.

Pre-RMSNorm decoder blocks with grouped-query attention, RMSNorm on each query and key head, the default
rotary embedding, a causal mask and a SiLU-gated feed-forward; a final RMSNorm. Positions count each text's
own tokens from 0, so a right-padded batch gives every text the vector it has alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from modelstore.architectures.layers import (
    ArchitectureError,
    Node,
    Weights,
    causal_key_mask,
    check_activation,
    find_prefix,
    gated_mlp,
    grouped_query_attention,
    rms_norm,
    rotary_tables,
    text_inputs,
)
from modelstore.architectures.weights import Checkpoint

MODEL_TYPES = ("qwen3",)
_PREFIXES = ("", "model.")


def rope_theta(config: dict[str, Any]) -> float:
    """The default rotary embedding's base; scaled variants (yarn, dynamic, ...) are refused."""
    parameters = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    kind = parameters.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise ArchitectureError(f"rotary embedding type {kind!r}: only the default one is converted")
    return float(parameters.get("rope_theta", config.get("rope_theta", 10000.0)))


def _positions(attention_mask: Node) -> Node:
    """Each text's own token index, cumsum(mask) - 1; right padding repeats the last one, and is masked."""
    counted = ops.cumsum(attention_mask, ops.constant(np.int64(1)))
    return ops.maximum(ops.subtract(counted, ops.constant(np.int64(1))), ops.constant(np.int64(0)))


def check(config: dict[str, Any]) -> None:
    """What config.json alone shows this builder cannot do faithfully."""
    check_activation(str(config.get("hidden_act", "silu")))
    rope_theta(config)
    if config.get("use_sliding_window"):
        raise ArchitectureError("use_sliding_window: true is not converted; Qwen3 embedding models use full attention")


def build(config: dict[str, Any], checkpoint: Checkpoint, weights_format: str) -> ov.Model:
    check(config)
    weights = Weights(
        checkpoint, find_prefix(checkpoint, _PREFIXES, "embed_tokens.weight", "Qwen3 decoder"), storage=weights_format
    )
    heads = int(config["num_attention_heads"])
    # Qwen3Config's own defaults where a config.json leaves them out.
    kv_heads = int(config.get("num_key_value_heads") or 32)
    head_size = int(config.get("head_dim") or 128)
    eps = float(config.get("rms_norm_eps", 1e-6))
    act = str(config.get("hidden_act", "silu"))

    input_ids, attention_mask = text_inputs()
    x: Node = ops.gather(weights.const("embed_tokens.weight"), input_ids, ops.constant(np.int64(0)))
    cos, sin = rotary_tables(_positions(attention_mask), head_size, rope_theta(config))
    mask = causal_key_mask(attention_mask)
    shape = (heads, kv_heads, head_size)

    def norm(name: str, value: Node) -> Node:
        return rms_norm(weights, name, value, eps)

    for i in range(int(config["num_hidden_layers"])):
        layer = f"layers.{i}"
        normed = norm(f"{layer}.input_layernorm", x)
        attended = grouped_query_attention(
            weights, f"{layer}.self_attn", normed, shape, (cos, sin), mask, norm, head_size**-0.5
        )
        x = ops.add(x, attended)
        x = ops.add(x, gated_mlp(weights, f"{layer}.mlp", norm(f"{layer}.post_attention_layernorm", x), act))

    return ov.Model([norm("norm", x)], [input_ids, attention_mask], "qwen3")
