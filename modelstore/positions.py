"""How many tokens a network's absolute position table can place, read off the network itself.

OpenVINO's Gather answers zeros for an index past its table, so a text longer than the table runs silently
wrong: the table, not what a config file says, bounds the context. A position table is a constant
[rows, width] gathered on axis 0 by indices that count tokens: a Range, an arange buffer sliced to the length
(torch's export of BERT) or a cumulative sum of the mask (RoBERTa's), with any constant added on the way
(RoBERTa's padding_idx). Word and token-type tables are gathered by the inputs themselves or by zeros, and
rotary networks have no table at all; for them config.json is the word.
"""

from __future__ import annotations

import numpy as np
import openvino as ov

# Ops that carry a tensor of indices on to their first input without changing the largest index.
_CARRY = frozenset({"Convert", "Unsqueeze", "Squeeze", "Reshape", "Broadcast", "Slice", "StridedSlice", "Tile"})
# Ops on a constant table that leave its rows as they are: fp16 or int8 weights decompressed at run time.
_DECOMPRESS = frozenset({"Convert", "Subtract", "Multiply", "Reshape"})
_MAX_DEPTH = 16


def table_positions(model: ov.Model) -> int | None:
    """The most tokens every position table of `model` can place, or None when it has none."""
    placed = (_placed(op) for op in model.get_ordered_ops() if op.get_type_name() == "Gather")
    return min((p for p in placed if p is not None and p > 0), default=None)


def _placed(gather: ov.Node) -> int | None:
    """How many tokens this Gather can place if it reads a position table: rows minus the largest index a text
    of S tokens reaches beyond S - 1."""
    rows = _constant_rows(gather)
    if rows is None:
        return None
    shift = _index_shift(gather.input_value(1), 0)
    return None if shift is None else rows - 1 - shift


def _constant_rows(gather: ov.Node) -> int | None:
    """The rows of a constant 2-D table gathered on its first axis, else None."""
    table, axis = gather.input_value(0), _scalar(gather.input_value(2))
    shape = table.get_partial_shape()
    if not shape.is_static or shape.rank.get_length() != 2 or axis not in (0, -2):
        return None
    node = table.get_node()
    for _ in range(_MAX_DEPTH):
        if node.get_type_name() == "Constant":
            return int(shape[0].get_length())
        if node.get_type_name() not in _DECOMPRESS:
            return None
        node = node.input_value(0).get_node()
    return None


def _index_shift(indices: ov.Output, depth: int) -> int | None:
    """For indices that count a text's S tokens, the largest index minus S; None for any other indices."""
    node = indices.get_node()
    kind = node.get_type_name()
    if depth > _MAX_DEPTH or kind == "Parameter":
        return None
    if kind == "Range":
        start = _scalar(node.input_value(0))
        return None if start is None else start - 1
    if kind == "CumSum":  # of a 0/1 mask: at most S
        return 0
    if kind == "Constant":
        values = node.get_data().reshape(-1)
        counting = values.size > 1 and np.issubdtype(values.dtype, np.integer)
        return -1 if counting and np.array_equal(values, np.arange(values.size)) else None
    if kind in ("Add", "Subtract"):
        counted, added = node.input_value(0), node.input_value(1)
        if kind == "Add" and _scalar(counted) is not None:
            counted, added = added, counted
        offset, shift = _scalar(added), _index_shift(counted, depth + 1)
        if offset is None or shift is None:
            return None
        return shift + offset if kind == "Add" else shift - offset
    if kind == "Multiply":  # counted positions times the 0/1 mask, in either order
        shifts = (_index_shift(node.input_value(i), depth + 1) for i in (0, 1))
        return next((s for s in shifts if s is not None), None)
    if kind in _CARRY:
        return _index_shift(node.input_value(0), depth + 1)
    return None


def _constant(output: ov.Output) -> np.ndarray | None:
    node = output.get_node()
    return node.get_data() if node.get_type_name() == "Constant" else None


def _scalar(output: ov.Output) -> int | None:
    """A one-element integer constant's value, else None."""
    value = _constant(output)
    if value is None or value.size != 1 or not np.issubdtype(value.dtype, np.integer):
        return None
    return int(value.reshape(-1)[0])
