"""A stored network's inputs and outputs: token ids padded into its input tensors, and its token states
pooled through the model's Dense layers.

The engine serves with these and the quantizer measures with them, so an int8 network is judged on the very
inputs and vectors it will serve.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modelstore.layout import dense_file
from modelstore.spec import ModelDescription

# sentence-transformers Dense activations, as stored in the spec.
_ACTIVATIONS = {"identity": lambda x: x, "tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0)}


def network_inputs(
    ids: Sequence[Sequence[int]],
    type_ids: Sequence[Sequence[int] | None],
    pad_id: int,
    input_names: set[str],
    pad_multiple: int = 1,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The padded batch as the network takes it (only the inputs it has), and the attention mask."""
    length = max(len(row) for row in ids)
    length = -(-length // pad_multiple) * pad_multiple
    padded = np.full((len(ids), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), length), dtype=np.int64)
    types = np.zeros((len(ids), length), dtype=np.int64)
    for row, (tokens, kinds) in enumerate(zip(ids, type_ids, strict=True)):
        padded[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
        if kinds is not None:
            types[row, : len(tokens)] = kinds
    inputs = {"input_ids": padded, "attention_mask": mask}
    if "token_type_ids" in input_names:
        inputs["token_type_ids"] = types
    if "position_ids" in input_names:  # decoder exports such as Qwen3's take positions explicitly
        inputs["position_ids"] = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    return inputs, mask


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """Sentence-transformers' pooling over real tokens only, in float32."""
    if mode == "cls":
        return np.array(hidden[:, 0, :], dtype=np.float32)
    if mode == "lasttoken":
        last = mask.sum(axis=1) - 1
        return np.array(hidden[np.arange(hidden.shape[0]), last, :], dtype=np.float32)
    weights = mask.astype(np.float32)
    summed = np.einsum("bsh,bs->bh", hidden, weights, dtype=np.float32)
    return summed / np.maximum(weights.sum(axis=1, keepdims=True), 1.0)


class Head:
    """A model's pooling and its Dense layers (weights read once from the model's folder)."""

    def __init__(self, folder: Path, description: ModelDescription) -> None:
        self.pooling = description.pooling
        self._dense = []
        for index, activation in enumerate(description.dense):
            with np.load(folder / dense_file(index)) as layer:
                self._dense.append((layer["weight"], layer["bias"], _ACTIVATIONS[activation]))

    def __call__(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One float32 row per input: its pooled states through every Dense layer."""
        pooled = pool(hidden, mask, self.pooling)
        for weight, bias, activation in self._dense:
            pooled = activation(pooled @ weight.T + bias)
        return pooled
