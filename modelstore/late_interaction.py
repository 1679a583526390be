"""What a ColBERT folder says about its model, in either layout ColBERT models ship in.

- pylate's: `config_sentence_transformers.json` (model_type ColBERT) holds the prefixes, lengths, expansion and
  skiplist; the projection is a `pylate.models.Dense` module's `linear.weight` (no bias) in its folder.
- Stanford ColBERT's (colbert-ir/colbertv2.0): config.json's architecture is HF_ColBERT, `artifact.metadata`
  holds the markers and lengths, and the projection is `linear.weight` in model.safetensors beside `bert.*`.

Where a layout is silent, pylate's defaults apply, as pylate reads both layouts (pylate/models/colbert.py).
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelstore.layout import COLBERT_METADATA, REPO_CHECKPOINTS, first_present
from modelstore.spec import LateInteraction

# pylate's defaults: 32-token queries, 180-token documents, [MASK] expansion not attended, punctuation skipped.
_QUERY_LENGTH = 32
_DOCUMENT_LENGTH = 180
_SKIPLIST = tuple(string.punctuation)
# Stanford ColBERT's markers, which pylate falls back to for a Stanford checkpoint.
_STANFORD_PREFIXES = ("[unused0]", "[unused1]")
_IDENTITY = ("torch.nn.modules.linear.Identity", "torch.nn.Identity")


class ColbertError(ValueError):
    """A ColBERT folder whose configs or projection ovembed cannot follow."""


@dataclass(frozen=True)
class ColbertLayout:
    """A ColBERT model's rules and the safetensors file (or shard index) holding its projection's `linear.weight`."""

    rules: LateInteraction
    projection: Path


def _json(path: Path, empty: Any) -> Any:
    """The file's JSON, `empty` for a missing file or one of another shape."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return empty
    except (OSError, ValueError) as exc:
        raise ColbertError(f"cannot read {path.name}: {exc}") from exc
    return data if isinstance(data, type(empty)) else empty


def is_pylate_module(module: dict[str, Any]) -> bool:
    """A modules.json entry of pylate's, which sentence-transformers' own readers must leave alone."""
    return str(module.get("type", "")).startswith("pylate.")


def read_colbert(folder: Path) -> ColbertLayout | None:
    """The folder's ColBERT layout, or None for a folder that is not a ColBERT model."""
    if (_json(folder / "config.json", {}).get("architectures") or [None])[0] == "HF_ColBERT":
        return _stanford(folder)
    st_config = _json(folder / "config_sentence_transformers.json", {})
    modules = [m for m in _json(folder / "modules.json", []) if isinstance(m, dict)]
    dense = [m for m in modules if is_pylate_module(m) and str(m.get("type", "")).endswith(".Dense")]
    if st_config.get("model_type") != "ColBERT" and not dense:
        return None
    if len(dense) != 1:
        raise ColbertError(f"a pylate ColBERT folder with {len(dense)} Dense modules: ovembed applies exactly one")
    return ColbertLayout(_pylate_rules(st_config), _pylate_projection(folder / str(dense[0].get("path", "1_Dense"))))


def _pylate_rules(config: dict[str, Any]) -> LateInteraction:
    return LateInteraction(
        query_prefix=str(config.get("query_prefix", "[Q] ")),
        document_prefix=str(config.get("document_prefix", "[D] ")),
        query_length=int(config.get("query_length") or _QUERY_LENGTH),
        document_length=int(config.get("document_length") or _DOCUMENT_LENGTH),
        expand_queries=bool(config.get("do_query_expansion", True)),
        attend_to_expansion=bool(config.get("attend_to_expansion_tokens", False)),
        skiplist=tuple(str(w) for w in config.get("skiplist_words", _SKIPLIST)),
    )


def _pylate_projection(where: Path) -> Path:
    config = _json(where / "config.json", {})
    activation = str(config.get("activation_function", _IDENTITY[0]))
    if activation not in _IDENTITY or config.get("use_residual"):
        raise ColbertError(f"{where.name}: a projection with {activation} or a residual is not applied by ovembed")
    weights = where / "model.safetensors"
    if not weights.is_file():
        raise ColbertError(f"{where.name} has no model.safetensors (ovembed never reads PyTorch pickles)")
    return weights


def _stanford(folder: Path) -> ColbertLayout:
    metadata = _json(folder / COLBERT_METADATA, {})
    query_prefix, document_prefix = _STANFORD_PREFIXES
    rules = LateInteraction(
        query_prefix=str(metadata.get("query_token_id") or query_prefix),
        document_prefix=str(metadata.get("doc_token_id") or document_prefix),
        query_length=int(metadata.get("query_maxlen") or _QUERY_LENGTH),
        document_length=int(metadata.get("doc_maxlen") or _DOCUMENT_LENGTH),
        attend_to_expansion=bool(metadata.get("attend_to_mask_tokens", False)),
        skiplist=_SKIPLIST if metadata.get("mask_punctuation", True) else (),
    )
    checkpoint = first_present(folder, REPO_CHECKPOINTS)
    if checkpoint is None:
        raise ColbertError("a Stanford ColBERT folder without model.safetensors, where its projection is")
    return ColbertLayout(rules, checkpoint)
