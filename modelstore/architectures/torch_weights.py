"""A torch `.pt` state dict (FlagEmbedding's `sparse_linear.pt`, `colbert_linear.pt`) read without torch and
without running its pickle.

torch.save writes a zip: `<name>/data.pkl`, a pickle that rebuilds each tensor from a storage, and the storages'
raw bytes as `<name>/data/<key>`. A pickle can call any importable function while it loads, so this one is read
by an unpickler that resolves only the names a state dict needs (an OrderedDict, torch's tensor rebuild, the
storage types) to stand-ins of its own; anything else is refused before it can run. Each storage is checked to
hold the bytes its element count needs, and each tensor to fit inside its storage.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# torch's storage classes, by the dtype of their elements (bf16 is widened to float32 on reading).
_STORAGES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
_REBUILDS = frozenset({"_rebuild_tensor_v2", "_rebuild_tensor"})


class UnsafeWeights(ValueError):
    """The file is not a plain state dict of tensors; the message says what it asked for."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return _STORAGES[self.name]


@dataclass(frozen=True)
class _Storage:
    data: np.ndarray  # one-dimensional, of the storage's dtype
    bf16: bool


def _rebuild(storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2: a strided view of the storage, copied out, after checking it fits."""
    if not isinstance(storage, _Storage) or len(size) != len(stride):
        raise UnsafeWeights("a tensor is rebuilt from something that is not one of the file's storages")
    if any(int(n) < 0 for n in (*size, *stride)) or int(offset) < 0:
        raise UnsafeWeights("a tensor has a negative size, stride or offset")
    last = int(offset) + sum((int(n) - 1) * int(s) for n, s in zip(size, stride, strict=True)) if all(size) else -1
    if last >= storage.data.size or int(np.prod(size, dtype=np.int64)) > storage.data.size:
        raise UnsafeWeights(f"a tensor of shape {tuple(size)} reaches past its storage of {storage.data.size} elements")
    item = storage.data.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage.data[int(offset) :], shape=tuple(int(n) for n in size), strides=tuple(int(s) * item for s in stride)
    )
    array = np.array(view)
    if storage.bf16:
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only a state dict's names, to this module's stand-ins; storages come from the zip."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name in _REBUILDS:
            return _rebuild
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        raise UnsafeWeights(f"it asks to call {module}.{name}, which a file of tensors never needs")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsafeWeights(f"it refers to {pid!r}, which is not a storage of tensors")
        _, kind, key, _location, count = pid
        raw = _member(self._archive, f"{self._prefix}/data/{key}")
        expected = int(count) * kind.dtype.itemsize
        if len(raw) != expected:
            raise UnsafeWeights(f"its storage {key} holds {len(raw)} bytes where {count} elements need {expected}")
        return _Storage(np.frombuffer(raw, dtype=kind.dtype), kind.name == "BFloat16Storage")


def _member(archive: zipfile.ZipFile, name: str) -> bytes:
    """A member's bytes; torch stores members uncompressed, so a compressed one (a zip bomb's way) is refused."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise UnsafeWeights(f"{name} is missing from the archive") from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise UnsafeWeights(f"{name} is compressed, which torch.save never does")
    return archive.read(info)


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a torch.save'd state dict, by name, as numpy arrays (bf16 widened to float32).

    Raises UnsafeWeights for a file that is not a zip of one pickle of tensors, or that asks for anything else.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsafeWeights(f"{path.name} is not a torch zip archive ({exc})") from exc
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise UnsafeWeights(f"{path.name} does not hold exactly one data.pkl, as torch.save writes it")
        prefix = pickles[0].split("/", 1)[0]
        try:
            loaded = _StateDictUnpickler(_member(archive, pickles[0]), archive, prefix).load()
        except UnsafeWeights as exc:
            raise UnsafeWeights(f"{path.name} was not read: {exc}") from exc
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise UnsafeWeights(f"{path.name} is not a readable state dict ({exc})") from exc
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in loaded.items()
    ):
        raise UnsafeWeights(f"{path.name} is not a state dict of named tensors")
    return dict(loaded)
