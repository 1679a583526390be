"""Reads a sentence-transformers repo's own config files: pooling, normalization, context, prompts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelstore.spec import ModelDescription

_POOLING_MODULE = "sentence_transformers.models.Pooling"
_NORMALIZE_MODULE = "sentence_transformers.models.Normalize"
# Position tables of RoBERTa-style models reserve two rows for the padding offset.
_PADDING_OFFSET_TYPES = {"roberta", "xlm-roberta", "camembert"}
_FALLBACK_CONTEXT = 512
_UNBOUNDED_MAX_LENGTH = 1_000_000


class ConfigError(ValueError):
    """A repo whose config files cannot describe a usable embedding model."""


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path.name}: {exc}") from exc


def _pooling(folder: Path, modules: list[dict[str, Any]], fallback: str) -> str:
    """Sentence-transformers' Pooling flags; without a Pooling module, the fallback (mean, its default)."""
    module = next((m for m in modules if m.get("type") == _POOLING_MODULE), None)
    if module is None:
        return fallback
    flags = _load(folder / module.get("path", "1_Pooling") / "config.json") or {}
    if flags.get("pooling_mode_cls_token"):
        return "cls"
    if flags.get("pooling_mode_lasttoken"):
        return "lasttoken"
    if flags.get("pooling_mode_mean_tokens"):
        return "mean"
    used = sorted(k for k, v in flags.items() if k.startswith("pooling_mode_") and v)
    raise ConfigError(f"unsupported pooling {', '.join(used) or '(none)'}: ovembed pools by mean, CLS or last token")


def _context_length(folder: Path, model_config: dict[str, Any], fallback: int | None) -> int:
    """The model's own limit: sentence-transformers' max_seq_length first, as sentence-transformers does."""
    st_config = _load(folder / "sentence_bert_config.json") or {}
    if isinstance(st_config.get("max_seq_length"), int) and st_config["max_seq_length"] > 0:
        return int(st_config["max_seq_length"])
    if fallback:
        return fallback
    tok_config = _load(folder / "tokenizer_config.json") or {}
    max_length = tok_config.get("model_max_length")
    if isinstance(max_length, int) and 0 < max_length < _UNBOUNDED_MAX_LENGTH:
        return max_length
    positions = model_config.get("max_position_embeddings")
    if isinstance(positions, int) and positions > 0:
        if model_config.get("model_type") in _PADDING_OFFSET_TYPES:
            return positions - 2
        return positions
    return _FALLBACK_CONTEXT


def describe_repo(folder: Path, fallback: ModelDescription | None = None) -> ModelDescription:
    """What a sentence-transformers-style folder says about its model.

    `fallback` (a catalog entry's description) fills only what the folder is silent on, e.g. a pre-converted
    mirror without modules.json; without one, sentence-transformers' own defaults apply (mean, no Normalize).
    """
    modules_data = _load(folder / "modules.json")
    modules = modules_data or []
    model_config = _load(folder / "config.json") or {}
    st_model_config = _load(folder / "config_sentence_transformers.json") or {}
    architectures = model_config.get("architectures") or []
    architecture = model_config.get("model_type") or (architectures[0] if architectures else None)
    hidden = model_config.get("hidden_size")
    prompts = {str(k): str(v) for k, v in (st_model_config.get("prompts") or {}).items() if isinstance(v, str) and v}
    if modules_data:
        normalize = any(m.get("type") == _NORMALIZE_MODULE for m in modules)
    else:
        normalize = fallback.normalize if fallback else False
    return ModelDescription(
        architecture=str(architecture or (fallback.architecture if fallback else "unknown")),
        pooling=_pooling(folder, modules, fallback.pooling if fallback else "mean"),
        normalize=normalize,
        context_length=_context_length(folder, model_config, fallback.context_length if fallback else None),
        dimension=int(hidden) if isinstance(hidden, int) else (fallback.dimension if fallback else 0),
        prompts=prompts or (dict(fallback.prompts) if fallback else {}),
    )
