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

from modelstore.build.layers import (
    ArchitectureError,
    Node,
    Weights,
    absolute_positions,
    activation,
    check_activation,
    find_prefix,
    key_mask,
    linear,
    merge_heads,
    repeat_heads,
    rms_norm,
    rotary_bases,
    rotary_tables,
    rotate,
    split_heads,
    text_inputs,
    window_key_mask,
)
from modelstore.build.weights import Checkpoint

MODEL_TYPES = ("gemma3_text",)
_PREFIXES = ("", "model.")
_GLOBAL, _LOCAL = "full_attention", "sliding_attention"


def _layer_types(config: dict[str, Any]) -> list[str]:
    if config.get("layer_types"):
        return [str(t) for t in config["layer_types"]]
    pattern = int(config.get("sliding_window_pattern", 6))
    return [_LOCAL if (i + 1) % pattern else _GLOBAL for i in range(int(config["num_hidden_layers"]))]


def _thetas(config: dict[str, Any]) -> dict[str, float]:
    if config.get("rope_scaling"):
        raise ArchitectureError("rope_scaling is not converted: only the default rotary embedding is")
    return rotary_bases(config, {_GLOBAL: ("rope_theta", 1_000_000.0), _LOCAL: ("rope_local_base_freq", 10000.0)})


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
    masks = {_GLOBAL: key_mask(attention_mask), _LOCAL: window_key_mask(attention_mask, half_window)}

    def norm(name: str, value: Node) -> Node:
        return rms_norm(weights, name, value, eps, unit_offset=True)

    for i, kind in enumerate(_layer_types(config)):
        layer = f"layers.{i}"
        normed = norm(f"{layer}.input_layernorm", x)
        q = split_heads(linear(weights, f"{layer}.self_attn.q_proj", normed), heads, head_size)
        k = split_heads(linear(weights, f"{layer}.self_attn.k_proj", normed), kv_heads, head_size)
        v = split_heads(linear(weights, f"{layer}.self_attn.v_proj", normed), kv_heads, head_size)
        cos, sin = tables[kind]
        q = rotate(norm(f"{layer}.self_attn.q_norm", q), cos, sin)
        k = rotate(norm(f"{layer}.self_attn.k_norm", k), cos, sin)
        groups = heads // kv_heads
        k, v = repeat_heads(k, groups, kv_heads, head_size), repeat_heads(v, groups, kv_heads, head_size)
        context = ops.scaled_dot_product_attention(q, k, v, masks[kind], ops.constant(np.float32(scale)))
        attended = linear(weights, f"{layer}.self_attn.o_proj", merge_heads(context, heads * head_size))
        x = ops.add(x, norm(f"{layer}.post_attention_layernorm", attended))
        normed = norm(f"{layer}.pre_feedforward_layernorm", x)
        gate = activation(act, linear(weights, f"{layer}.mlp.gate_proj", normed))
        inner = ops.multiply(gate, linear(weights, f"{layer}.mlp.up_proj", normed))
        x = ops.add(x, norm(f"{layer}.post_feedforward_layernorm", linear(weights, f"{layer}.mlp.down_proj", inner)))

    return ov.Model([norm("norm", x)], [input_ids, attention_mask], "gemma3")
