"""A stored network's inputs and outputs: token ids padded into its input tensors, its token states pooled
through the model's Dense layers, and the outputs beside the pooled one (sparse weights, a vector per token).

The engine serves with these and the quantizer measures with them, so an int8 network is judged on the very
inputs and vectors it will serve.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelstore.layout import dense_file, head_file
from modelstore.spec import MULTIVECTOR, SPARSE, ModelDescription, ModelSpec

# sentence-transformers Dense activations, as stored in the spec.
_ACTIVATIONS = {"identity": lambda x: x, "tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0)}


def network_inputs(
    ids: Sequence[Sequence[int]],
    type_ids: Sequence[Sequence[int] | None],
    pad_id: int,
    input_names: set[str],
    pad_multiple: int = 1,
    attended: Sequence[int | None] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The padded batch as the network takes it (only the inputs it has), and the attention mask: each row's
    tokens, or its first `attended` ones (a ColBERT query's [MASK] expansion is not attended to)."""
    length = max(len(row) for row in ids)
    length = -(-length // pad_multiple) * pad_multiple
    padded = np.full((len(ids), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), length), dtype=np.int64)
    types = np.zeros((len(ids), length), dtype=np.int64)
    for row, (tokens, kinds) in enumerate(zip(ids, type_ids, strict=True)):
        padded[row, : len(tokens)] = tokens
        seen = attended[row] if attended is not None else None
        mask[row, : len(tokens) if seen is None else seen] = 1
        if kinds is not None:
            types[row, : len(tokens)] = kinds
    inputs = {"input_ids": padded, "attention_mask": mask}
    if "token_type_ids" in input_names:
        inputs["token_type_ids"] = types
    if "position_ids" in input_names:  # decoder exports such as Qwen3's take positions explicitly
        inputs["position_ids"] = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    return inputs, mask


def _linear(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as layer:
        return layer["weight"], layer["bias"]


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
            self._dense.append((*_linear(folder / dense_file(index)), _ACTIVATIONS[activation]))

    def __call__(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One float32 row per input: its pooled states through every Dense layer."""
        pooled = pool(hidden, mask, self.pooling)
        for weight, bias, activation in self._dense:
            pooled = activation(pooled @ weight.T + bias)
        return pooled


@dataclass(frozen=True)
class SparseVector:
    """Token id -> weight: ids ascending, every weight above zero."""

    indices: np.ndarray  # int64
    values: np.ndarray  # float32


def _sparse(ids: np.ndarray, weights: np.ndarray) -> SparseVector:
    """The positive weights by token id, a repeated id keeping its largest weight."""
    keep = weights > 0
    ids, weights = ids[keep], weights[keep]
    order = np.lexsort((-weights, ids))  # by id, the largest weight of each id first
    ids, weights = ids[order], weights[order]
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    return SparseVector(ids[first].astype(np.int64), weights[first].astype(np.float32))


def _normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class Extras:
    """A batch's outputs beside the pooled rows, in input order; None for an input that did not ask."""

    sparse: list[SparseVector | None]
    multivector: list[np.ndarray | None]


class TokenHeads:
    """The outputs made from every token's state rather than the pooled one, as FlagEmbedding makes bge-m3's:

    - sparse: relu of a one-row head on each token's state, the special tokens dropped, by token id;
    - multivector: a square head on every position but the first (the CLS), each vector L2-normalized.

    A network that ends in one weight per vocabulary entry (SPLADE) gives its sparse vector as its row itself.
    A ColBERT model's projection gives a vector for every position, CLS and marker included, as pylate's does;
    a document drops those of its `skip_ids` (punctuation), a query keeps all, its [MASK] expansion too.
    """

    def __init__(
        self, folder: Path, spec: ModelSpec, special_ids: Collection[int], skip_ids: Collection[int] = ()
    ) -> None:
        self._sparse = _linear(folder / head_file(SPARSE)) if SPARSE in spec.heads else None
        self._multivector = _linear(folder / head_file(MULTIVECTOR)) if MULTIVECTOR in spec.heads else None
        self._sparse_from_rows = SPARSE in spec.outputs and SPARSE not in spec.heads
        # How many floats each token vector holds (0 for a model without them).
        self.multivector_width = 0 if self._multivector is None else len(self._multivector[0])
        self._special_ids = np.array(sorted(special_ids), dtype=np.int64)
        self._skip_ids = np.array(sorted(skip_ids), dtype=np.int64)
        self._first_position = 0 if spec.late_interaction else 1

    def __call__(
        self,
        states: np.ndarray,
        rows: np.ndarray,
        ids: Sequence[np.ndarray],
        wanted: Sequence[Collection[str]],
        queries: Sequence[bool],
    ) -> Extras:
        """Each input's asked outputs: `states` are the network's token states (or its rows, for a network
        that pools itself), `rows` the pooled rows, `ids` each input's tokens, `wanted` what each input asks,
        `queries` which inputs are ColBERT queries."""
        sparse: list[SparseVector | None] = [None] * len(ids)
        multivector: list[np.ndarray | None] = [None] * len(ids)
        for row, (tokens, asked, query) in enumerate(zip(ids, wanted, queries, strict=True)):
            if SPARSE in asked:
                sparse[row] = self._sparse_of(states[row], rows[row], tokens)
            if MULTIVECTOR in asked:
                multivector[row] = self._token_vectors(states[row], tokens, query)
        return Extras(sparse, multivector)

    def _token_vectors(self, states: np.ndarray, tokens: np.ndarray, query: bool) -> np.ndarray:
        assert self._multivector is not None
        weight, bias = self._multivector
        kept = np.arange(self._first_position, len(tokens))
        if not query and len(self._skip_ids):
            kept = kept[~np.isin(tokens[kept], self._skip_ids)]
        return _normalized(states[kept] @ weight.T + bias)

    def _sparse_of(self, states: np.ndarray, row: np.ndarray, tokens: np.ndarray) -> SparseVector:
        if self._sparse_from_rows:
            return _sparse(np.arange(len(row), dtype=np.int64), row)
        assert self._sparse is not None
        weight, bias = self._sparse
        weights = np.maximum(states[: len(tokens)] @ weight[0] + bias[0], 0.0)
        ordinary = ~np.isin(tokens, self._special_ids)
        return _sparse(tokens[ordinary], weights[ordinary])
