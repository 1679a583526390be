"""Gemma3 text with bidirectional attention (embeddinggemma), as transformers' modeling_gemma3.py runs it.

Embeddings scaled by sqrt(hidden); four RMSNorms a block, each scaling by 1 + weight (before and after
attention, before and after the feed-forward); grouped-query attention scaled by query_pre_attn_scalar, with
RMSNorm on query and key heads and one rotary base for global layers and another for local ones; local layers
see a window of sliding_window / 2 tokens either side; a GELU-tanh gated feed-forward; a final RMSNorm.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from modelstore.architectures.layers import (
    GLOBAL,
    LOCAL,
    ArchitectureError,
    Node,
    Weights,
    absolute_positions,
    check_activation,
    find_prefix,
    gated_mlp,
    grouped_query_attention,
    layer_masks,
    layer_types,
    rms_norm,
    rotary_bases,
    rotary_tables,
    text_inputs,
)
from modelstore.architectures.weights import Checkpoint

MODEL_TYPES = ("gemma3_text",)
_PREFIXES = ("", "model.")


def _layer_types(config: dict[str, Any]) -> list[str]:
    pattern = int(config.get("sliding_window_pattern", 6))
    return layer_types(config, lambda i: (i + 1) % pattern != 0)


def _thetas(config: dict[str, Any]) -> dict[str, float]:
    if config.get("rope_scaling"):
        raise ArchitectureError("rope_scaling is not converted: only the default rotary embedding is")
    return rotary_bases(config, {GLOBAL: ("rope_theta", 1_000_000.0), LOCAL: ("rope_local_base_freq", 10000.0)})


def check(config: dict[str, Any]) -> None:
    """What config.json alone shows this builder cannot do faithfully."""
    check_activation(str(config.get("hidden_activation", "gelu_pytorch_tanh")))
    _thetas(config)
    if not config.get("use_bidirectional_attention"):
        raise ArchitectureError("a causal Gemma3 is a language model; only bidirectional Gemma3 embedders convert")
    if config.get("attn_logit_softcapping"):
        raise ArchitectureError("attn_logit_softcapping is not converted")


def build(config: dict[str, Any], checkpoint: Checkpoint, weights_format: str) -> ov.Model:
    check(config)
    prefix = find_prefix(checkpoint, _PREFIXES, "embed_tokens.weight", "Gemma3 model")
    weights = Weights(checkpoint, prefix, storage=weights_format)
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_size = int(config.get("head_dim") or 256)
    eps = float(config.get("rms_norm_eps", 1e-6))
    act = str(config.get("hidden_activation", "gelu_pytorch_tanh"))
    scale = float(config.get("query_pre_attn_scalar", 256)) ** -0.5

    input_ids, attention_mask = text_inputs()
    embedded = ops.gather(weights.const("embed_tokens.weight"), input_ids, ops.constant(np.int64(0)))
    x: Node = ops.multiply(embedded, ops.constant(np.float32(hidden**0.5)))
    positions = absolute_positions(input_ids)
    tables = {kind: rotary_tables(positions, head_size, theta) for kind, theta in _thetas(config).items()}
    half_window = int(config.get("sliding_window", 512)) // 2
    masks = layer_masks(attention_mask, half_window)
    shape = (heads, kv_heads, head_size)

    def norm(name: str, value: Node) -> Node:
        return rms_norm(weights, name, value, eps, unit_offset=True)

    for i, kind in enumerate(_layer_types(config)):
        layer = f"layers.{i}"
        normed = norm(f"{layer}.input_layernorm", x)
        attended = grouped_query_attention(
            weights, f"{layer}.self_attn", normed, shape, tables[kind], masks[kind], norm, scale
        )
        x = ops.add(x, norm(f"{layer}.post_attention_layernorm", attended))
        fed = gated_mlp(weights, f"{layer}.mlp", norm(f"{layer}.pre_feedforward_layernorm", x), act)
        x = ops.add(x, norm(f"{layer}.post_feedforward_layernorm", fed))

    return ov.Model([norm("norm", x)], [input_ids, attention_mask], "gemma3")
