"""How vectors are written on the wire: floats or OpenAI's base64, and a sparse vector as Ollama-style JSON
(`{"indices", "values"}`, as Qdrant and fastembed hold one) or TEI's (`[{"index", "value"}]`)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from daemon.http.errors import Err
from daemon.http.request import Fields
from modelstore.network_io import SparseVector

_FORMATS = ("float", "base64")


def encoding_format(fields: Fields) -> str:
    """`encoding_format`: "float" (the default) or "base64", in any case; OpenAI's error for anything else."""
    encoding = fields.string("encoding_format") or "float"
    if encoding.lower() not in _FORMATS:
        raise Err.BAD_ENCODING_FORMAT(value=encoding)
    return encoding.lower()


def to_base64(vector: np.ndarray) -> str:
    """OpenAI's base64 encoding: float32 little-endian bytes."""
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")


def vectors(rows: np.ndarray | list[np.ndarray], encoding: str) -> Any:
    """Rows as JSON arrays of floats (orjson writes the arrays as they are), or each as one base64 string."""
    return [to_base64(row) for row in rows] if encoding == "base64" else rows


def sparse_object(vector: SparseVector) -> dict[str, Any]:
    return {"indices": vector.indices, "values": vector.values}


def tei_sparse(vector: SparseVector) -> list[dict[str, Any]]:
    """Values stay float32, so orjson writes each as short as float32 allows, as TEI does."""
    return [{"index": i, "value": v} for i, v in zip(vector.indices.tolist(), vector.values, strict=True)]
