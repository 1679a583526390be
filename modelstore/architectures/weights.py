"""Tensors of a safetensors checkpoint, memory-mapped from disk so converting never holds a model twice.

The format is an 8-byte little-endian header length, a JSON header naming each tensor's dtype, shape and byte
range, then the raw data. Reading it here (rather than through the safetensors package) keeps every tensor a
view of the mapped file: a float32 checkpoint becomes OpenVINO constants without one byte copied. A sharded
checkpoint (`model.safetensors.index.json`) is one mapping per shard.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# bf16 has no numpy type: its raw 16 bits are the upper half of a float32, read here as uint16.
_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_MAX_HEADER = 100 << 20
_FP16_MAX = float(np.finfo(np.float16).max)
_ROWS_PER_BLOCK = 4096


# Told the bytes of tensor data handed out so far and the checkpoint's total, as a conversion goes.
ReadProgress = Callable[[int, int], None]


class WeightsError(ValueError):
    """A checkpoint that cannot be read, or lacks a tensor the architecture needs."""


def _widen_bf16(bits: np.ndarray) -> np.ndarray:
    """bf16 bits (as uint16) to the float32 values they are the upper half of."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


@dataclass(frozen=True)
class Tensor:
    """One stored tensor: its array (a view of the file) and whether the bits are bf16."""

    array: np.ndarray
    bf16: bool

    def as_float32(self) -> np.ndarray:
        """float32 values; a view for float32 data, a new array otherwise."""
        if self.bf16:
            return _widen_bf16(self.array)
        return self.array if self.array.dtype == np.float32 else self.array.astype(np.float32)

    def _row_blocks(self) -> Iterator[tuple[slice, np.ndarray]]:
        """The tensor as rows (a 0-d one as one row), a block at a time in float32 (bf16 widened per block)."""
        rows = self.array.reshape(self.array.shape[0], -1) if self.array.ndim else self.array.reshape(1, 1)
        for start in range(0, rows.shape[0], _ROWS_PER_BLOCK):
            block = rows[start : start + _ROWS_PER_BLOCK]
            yield (
                slice(start, start + len(block)),
                _widen_bf16(block) if self.bf16 else block.astype(np.float32, copy=False),
            )

    def as_int8_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Symmetric int8 per row (a weight matrix's output channel): values and float32 scales [rows, 1].

        Done a block of rows at a time from the mapped file, so only the int8 copy is ever held whole.
        """
        rows = self.array.shape[0]
        values = np.empty((rows, self.array.size // rows), dtype=np.int8)
        scales = np.empty((rows, 1), dtype=np.float32)
        for where, block in self._row_blocks():
            scale = np.maximum(np.abs(block).max(axis=1, keepdims=True), 1e-30) / 127.0
            values[where] = np.clip(np.rint(block / scale), -127, 127)
            scales[where] = scale
        return values.reshape(self.array.shape), scales

    def as_uint4_groups(self, group: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Asymmetric 4-bit per group of `group` inputs in each row: packed values [rows, in / 2], packed zero
        points [rows * groups / 2] (both two to a byte, first in the low nibble, as OpenVINO packs u4) and
        fp16 scales [rows, groups, 1]. A block of rows at a time, like the int8 rows.
        """
        rows, width = self.array.shape
        groups = width // group
        values = np.empty((rows, width // 2), dtype=np.uint8)
        zeros = np.empty((rows, groups), dtype=np.uint8)
        scales = np.empty((rows, groups, 1), dtype=np.float16)
        for where, block in self._row_blocks():
            grouped = block.reshape(len(block), groups, group)
            low = grouped.min(axis=2, keepdims=True)
            span = grouped.max(axis=2, keepdims=True) - low
            scale = np.where(span > 0, span / 15.0, 1.0).astype(np.float16).astype(np.float32)
            zero = np.clip(np.rint(-low / scale), 0, 15)
            levels = np.clip(np.rint(grouped / scale) + zero, 0, 15).astype(np.uint8).reshape(len(block), width)
            values[where] = levels[:, 0::2] | (levels[:, 1::2] << 4)
            zeros[where] = zero.reshape(len(block), groups)
            scales[where] = scale
        flat = zeros.reshape(-1)
        if flat.size % 2:
            flat = np.append(flat, np.uint8(0))
        return values, flat[0::2] | (flat[1::2] << 4), scales

    def as_float16(self) -> np.ndarray | None:
        """fp16 values (a view of fp16 data), or None where a value lies outside fp16's range.

        bf16 and float32 are narrowed a block of rows at a time, so a large embedding table is never held
        twice in memory.
        """
        if self.array.dtype == np.float16:
            return self.array
        if not (self.bf16 or self.array.dtype == np.float32):
            return None
        out = np.empty(self.array.shape, dtype=np.float16)
        flat = out.reshape(self.array.shape[0], -1) if self.array.ndim else out.reshape(1, 1)
        for where, block in self._row_blocks():
            if np.abs(block).max(initial=0.0) > _FP16_MAX:
                return None
            flat[where] = block
        return out


def _read_header(path: Path) -> tuple[int, dict[str, dict]]:
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise WeightsError(f"{path.name} is not a safetensors file (it is {len(raw)} bytes long)")
        (length,) = struct.unpack("<Q", raw)
        if length > _MAX_HEADER:
            raise WeightsError(f"{path.name} is not a safetensors file (header of {length} bytes)")
        try:
            header = json.loads(handle.read(length))
        except ValueError as exc:
            raise WeightsError(f"{path.name} has a damaged header: {exc}") from exc
    header.pop("__metadata__", None)
    return 8 + length, header


class Checkpoint:
    """Every tensor of one checkpoint by name, each a view of its memory-mapped shard."""

    def __init__(self, files: list[Path], progress: ReadProgress | None = None) -> None:
        self._where: dict[str, tuple[np.memmap, int, dict]] = {}
        self._progress = progress
        self._handed_out: set[str] = set()
        self._read = 0
        for path in files:
            start, header = _read_header(path)
            # Copy-on-write: OpenVINO shares only writable memory, and nothing here ever writes to it.
            mapped = np.memmap(path, dtype=np.uint8, mode="c")
            for name, info in header.items():
                self._where[name] = (mapped, start, info)
        self._total = sum(end - begin for _, _, info in self._where.values() for begin, end in [info["data_offsets"]])

    @classmethod
    def open(cls, path: Path, progress: ReadProgress | None = None) -> Checkpoint:
        """`model.safetensors`, or the shards an index file lists."""
        if path.name.endswith(".index.json"):
            try:
                shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, ValueError, KeyError, AttributeError) as exc:
                raise WeightsError(f"cannot read {path.name}: {exc}") from exc
            missing = [s for s in shards if not (path.parent / s).is_file()]
            if missing:
                raise WeightsError(f"{path.name} lists shards that are not there: {', '.join(missing)}")
            return cls([path.parent / s for s in shards], progress)
        return cls([path], progress)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def finish(self) -> None:
        """Progress at its end: a network need not read every tensor (poolers, heads, buffers)."""
        if self._progress is not None:
            self._progress(self._total, self._total)

    def get(self, name: str) -> Tensor:
        try:
            mapped, start, info = self._where[name]
        except KeyError:
            raise WeightsError(f"the checkpoint has no tensor {name}") from None
        dtype = info["dtype"]
        if dtype not in _DTYPES:
            raise WeightsError(f"tensor {name} has dtype {dtype}, which ovembed does not read")
        begin, end = info["data_offsets"]
        if self._progress is not None and name not in self._handed_out:
            self._handed_out.add(name)
            self._read += end - begin
            self._progress(self._read, self._total)
        data = mapped[start + begin : start + end].view(_DTYPES[dtype])
        return Tensor(data.reshape(info["shape"]), dtype == "BF16")
