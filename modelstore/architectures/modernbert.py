"""ModernBERT (gte-modernbert, granite-embedding r2), as transformers' modeling_modernbert.py runs it.

Pre-LayerNorm blocks without biases (the first block has no attention norm), one fused QKV projection,
rotary embeddings with one base for global layers and another for local ones, a bidirectional local window
on all but every n-th layer, a GeGLU feed-forward, and a final LayerNorm. Both the config layout of
transformers 4.48 (global_rope_theta, global_attn_every_n_layers) and that of 5 (layer_types,
rope_parameters) are read.
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
    activation,
    attention,
    check_activation,
    find_prefix,
    heads_of,
    layer_masks,
    layer_norm,
    layer_types,
    linear,
    merge_heads,
    rotary_bases,
    rotary_tables,
    rotate,
    split_heads,
    text_inputs,
)
from modelstore.architectures.weights import Checkpoint

MODEL_TYPES = ("modernbert",)
_PREFIXES = ("", "model.")


def _layer_types(config: dict[str, Any]) -> list[str]:
    every = int(config.get("global_attn_every_n_layers", 3))
    return layer_types(config, lambda i: i % every != 0)


def _thetas(config: dict[str, Any]) -> dict[str, float]:
    return rotary_bases(config, {GLOBAL: ("global_rope_theta", 160000.0), LOCAL: ("local_rope_theta", 10000.0)})


def check(config: dict[str, Any]) -> None:
    """What config.json alone shows this builder cannot do faithfully."""
    check_activation(str(config.get("hidden_activation", "gelu")))
    _thetas(config)
    unknown = set(_layer_types(config)) - {GLOBAL, LOCAL}
    if unknown:
        raise ArchitectureError(f"layer types {', '.join(sorted(unknown))} are not converted")


def build(config: dict[str, Any], checkpoint: Checkpoint, weights_format: str) -> ov.Model:
    check(config)
    prefix = find_prefix(checkpoint, _PREFIXES, "embeddings.tok_embeddings.weight", "ModernBERT encoder")
    weights = Weights(checkpoint, prefix, storage=weights_format)
    hidden, heads, head_size = heads_of(config)
    eps = float(config.get("norm_eps", 1e-5))
    act = str(config.get("hidden_activation", "gelu"))
    half_window = int(config.get("local_attention", 128)) // 2

    input_ids, attention_mask = text_inputs()
    x: Node = ops.gather(weights.const("embeddings.tok_embeddings.weight"), input_ids, ops.constant(np.int64(0)))
    x = layer_norm(weights, "embeddings.norm", x, eps)
    positions = absolute_positions(input_ids)
    tables = {kind: rotary_tables(positions, head_size, theta) for kind, theta in _thetas(config).items()}
    masks = layer_masks(attention_mask, half_window)

    for i, kind in enumerate(_layer_types(config)):
        layer = f"layers.{i}"
        normed = layer_norm(weights, f"{layer}.attn_norm", x, eps) if i else x
        q, k, v = ops.split(linear(weights, f"{layer}.attn.Wqkv", normed), -1, 3).outputs()
        cos, sin = tables[kind]
        q = rotate(split_heads(q, heads, head_size), cos, sin)
        k = rotate(split_heads(k, heads, head_size), cos, sin)
        v = split_heads(v, heads, head_size)
        context = merge_heads(attention(q, k, v, masks[kind], head_size**-0.5), hidden)
        x = ops.add(x, linear(weights, f"{layer}.attn.Wo", context))
        inner, gate = ops.split(
            linear(weights, f"{layer}.mlp.Wi", layer_norm(weights, f"{layer}.mlp_norm", x, eps)), -1, 2
        ).outputs()
        x = ops.add(x, linear(weights, f"{layer}.mlp.Wo", ops.multiply(activation(act, inner), gate)))

    x = layer_norm(weights, "final_norm", x, eps)
    return ov.Model([x], [input_ids, attention_mask], "modernbert")
