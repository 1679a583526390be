"""BERT, RoBERTa and XLM-RoBERTa encoders, as transformers' modeling_bert.py and modeling_roberta.py run them.

Post-LayerNorm blocks: attention, add, LayerNorm; feed-forward, add, LayerNorm. The embeddings sum words,
absolute positions and token types, then LayerNorm. RoBERTa differs only in its positions: they count real
tokens from `padding_idx + 1`, and padding keeps `padding_idx`.

A `*ForSequenceClassification` checkpoint (a cross-encoder reranker) ends in its head instead, on the first
token: BERT's pooler (dense, tanh) and classifier; RoBERTa's classification head (dense, tanh, out_proj). Its
one output is `logits` [batch, labels]. A `BertForMaskedLM` checkpoint (a SPLADE model) ends in its language-model
head on every token (dense, activation, LayerNorm, then the decoder tied to the word embeddings, plus a bias):
`logits` [batch, tokens, vocabulary].
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
    absolute_positions,
    activation,
    attention,
    check_activation,
    find_prefix,
    heads_of,
    key_mask,
    layer_norm,
    linear,
    merge_heads,
    split_heads,
    text_inputs,
)
from modelstore.architectures.weights import Checkpoint
from modelstore.spec import is_cross_encoder, is_masked_lm

MODEL_TYPES = ("bert", "roberta", "xlm-roberta")
_PREFIXES = ("", "bert.", "roberta.", "model.")


def _positions(input_ids: Node, config: dict[str, Any]) -> Node:
    """Absolute positions 0..S-1, or RoBERTa's count of real tokens offset by padding_idx."""
    if config["model_type"] == "bert":
        return absolute_positions(input_ids)
    padding_idx = int(config.get("pad_token_id", 1))
    real = ops.convert(ops.not_equal(input_ids, ops.constant(np.int64(padding_idx))), "i64")
    counted = ops.multiply(ops.cumsum(real, ops.constant(np.int64(1))), real)
    return ops.add(counted, ops.constant(np.int64(padding_idx)))


def check(config: dict[str, Any]) -> None:
    """What config.json alone shows this builder cannot do faithfully."""
    check_activation(str(config.get("hidden_act", "gelu")))
    kind = config.get("position_embedding_type", "absolute")
    if kind != "absolute":
        raise ArchitectureError(f"position_embedding_type {kind!r}: only absolute positions are converted")
    if config.get("is_decoder"):
        raise ArchitectureError("a BERT decoder (is_decoder: true) is not an embedding encoder")


def build(config: dict[str, Any], checkpoint: Checkpoint, weights_format: str) -> ov.Model:
    check(config)
    prefix = find_prefix(checkpoint, _PREFIXES, "embeddings.word_embeddings.weight", "BERT-style encoder")
    weights = Weights(checkpoint, prefix, storage=weights_format)
    hidden, heads, head_size = heads_of(config)
    eps = float(config.get("layer_norm_eps", 1e-12))
    act = str(config.get("hidden_act", "gelu"))

    input_ids, attention_mask = text_inputs()
    token_type_ids = ops.parameter([-1, -1], ov.Type.i64, name="token_type_ids")
    axis0 = ops.constant(np.int64(0))

    x = ops.gather(weights.const("embeddings.word_embeddings.weight"), input_ids, axis0)
    positions = _positions(input_ids, config)
    x = ops.add(x, ops.gather(weights.const("embeddings.position_embeddings.weight"), positions, axis0))
    if "embeddings.token_type_embeddings.weight" in weights:
        types = weights.const("embeddings.token_type_embeddings.weight")
        x = ops.add(x, ops.gather(types, token_type_ids, axis0))
    x = layer_norm(weights, "embeddings.LayerNorm", x, eps)
    mask = key_mask(attention_mask)

    for i in range(int(config["num_hidden_layers"])):
        layer = f"encoder.layer.{i}"
        q, k, v = (
            split_heads(linear(weights, f"{layer}.attention.self.{n}", x), heads, head_size)
            for n in ("query", "key", "value")
        )
        context = merge_heads(attention(q, k, v, mask, head_size**-0.5), hidden)
        attended = linear(weights, f"{layer}.attention.output.dense", context)
        x = layer_norm(weights, f"{layer}.attention.output.LayerNorm", ops.add(attended, x), eps)
        inner = activation(act, linear(weights, f"{layer}.intermediate.dense", x))
        out = linear(weights, f"{layer}.output.dense", inner)
        x = layer_norm(weights, f"{layer}.output.LayerNorm", ops.add(out, x), eps)

    inputs = [input_ids, attention_mask, token_type_ids]
    if is_masked_lm(config):
        logits, name = _masked_lm_head(Weights(checkpoint, storage=weights_format), prefix, x, act, eps), "bert-mlm"
    elif is_cross_encoder(config):
        logits = _classification_head(Weights(checkpoint, storage=weights_format), prefix, x)
        name = "bert-cross-encoder"
    else:
        return ov.Model([x], inputs, "bert")
    logits.output(0).get_tensor().set_names({"logits"})
    return ov.Model([logits], inputs, name)


def _masked_lm_head(weights: Weights, prefix: str, x: Node, act: str, eps: float) -> Node:
    """BertLMPredictionHead on every token. save_pretrained drops the decoder's tied copies, so its matrix is
    the word embeddings and its bias `cls.predictions.bias` unless the checkpoint holds its own."""
    if "cls.predictions.transform.dense.weight" not in weights:
        raise ArchitectureError("the masked-LM checkpoint has no language-model head (cls.predictions.*)")
    transformed = activation(act, linear(weights, "cls.predictions.transform.dense", x))
    transformed = layer_norm(weights, "cls.predictions.transform.LayerNorm", transformed, eps)
    decoder = "cls.predictions.decoder.weight"
    matrix = weights.matrix(decoder if decoder in weights else f"{prefix}embeddings.word_embeddings.weight")
    logits = ops.matmul(transformed, matrix, transpose_a=False, transpose_b=True)
    bias = next((b for b in ("cls.predictions.decoder.bias", "cls.predictions.bias") if b in weights), None)
    return ops.add(logits, weights.const(bias)) if bias else logits


def _classification_head(weights: Weights, prefix: str, x: Node) -> Node:
    """The head on the first token; its tensors sit beside the backbone's, not under its prefix."""
    first = ops.gather(x, ops.constant(np.int64(0)), ops.constant(np.int64(1)))
    if "classifier.out_proj.weight" in weights:  # RobertaClassificationHead
        pooled = ops.tanh(linear(weights, "classifier.dense", first))
        return linear(weights, "classifier.out_proj", pooled)
    if f"{prefix}pooler.dense.weight" not in weights:
        raise ArchitectureError("the cross-encoder checkpoint has no pooler or classification head")
    pooled = ops.tanh(linear(weights, f"{prefix}pooler.dense", first))
    return linear(weights, "classifier", pooled)
