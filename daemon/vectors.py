"""What /api/embed does to pooled vectors before they leave: normalize, shorten, refuse NaN."""

from __future__ import annotations

import base64

import numpy as np

# Ollama divides by max(norm, 1e-12), so an all-zero vector stays zero instead of turning into NaN.
_MIN_NORM = 1e-12


def normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, _MIN_NORM)).astype(np.float32)


def shorten(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """Matryoshka truncation as Ollama does it: normalize, keep the first N, normalize again.

    Any dimensions outside 0 < N < length are ignored, as Ollama ignores them.
    """
    vectors = normalize(vectors)
    if dimensions is not None and 0 < dimensions < vectors.shape[1]:
        vectors = normalize(vectors[:, :dimensions])
    return vectors


def all_finite(vectors: np.ndarray) -> bool:
    return bool(np.isfinite(vectors).all())


def to_base64(vector: np.ndarray) -> str:
    """OpenAI's base64 encoding: float32 little-endian bytes."""
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
