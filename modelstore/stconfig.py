"""Reads a sentence-transformers repo's own config files: pooling, normalization, context, prompts."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from modelstore.catalog import language_model_reranker
from modelstore.late_interaction import ColbertError, is_pylate_module, read_colbert
from modelstore.spec import (
    MULTIVECTOR,
    RERANK,
    SPARSE,
    LateInteraction,
    ModelDescription,
    is_cross_encoder,
    is_masked_lm,
)

_LEGACY_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_lasttoken": "lasttoken",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
}
_POOLED_HERE = ("cls", "mean", "lasttoken")
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


def _modules_of(modules: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The modules of one class, by its name: sentence-transformers 2-5 wrote `sentence_transformers.models.Pooling`,
    6 writes `sentence_transformers.sentence_transformer.modules.pooling.Pooling`."""
    return [m for m in modules if str(m.get("type", "")).rsplit(".", 1)[-1] == kind]


def _module(modules: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next(iter(_modules_of(modules, kind)), None)


def _pooling(folder: Path, modules: list[dict[str, Any]], fallback: str) -> str:
    """The Pooling module's mode, in either config format; without a Pooling module, the fallback."""
    module = _module(modules, "Pooling")
    if module is None:
        return fallback
    config = _load(folder / module.get("path", "1_Pooling") / "config.json") or {}
    modes = config.get("pooling_mode")
    if modes is None:  # sentence-transformers reads no flag set as its default, mean
        modes = [mode for flag, mode in _LEGACY_POOLING_FLAGS.items() if config.get(flag)] or ["mean"]
    modes = [modes] if isinstance(modes, str) else list(modes)
    if len(modes) == 1 and modes[0] in _POOLED_HERE:
        return str(modes[0])
    used = ", ".join(map(str, modes)) or "(none)"
    raise ConfigError(f"unsupported pooling {used}: ovembed pools by mean, CLS or last token")


@dataclass(frozen=True)
class DenseModule:
    """A sentence-transformers Dense module: activation(x @ W^T + b) on the pooled vector."""

    activation: str
    weights: Path
    out_features: int


_DENSE_ACTIVATION_CLASSES = {
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.activation.ReLU": "relu",
}


def read_dense(folder: Path) -> list[DenseModule]:
    """The Dense modules after pooling, in order, as sentence-transformers applies them (pylate's projection
    of every token is a ColBERT model's, late_interaction.py)."""
    dense = []
    for module in _modules_of(_load(folder / "modules.json") or [], "Dense"):
        if is_pylate_module(module):
            continue
        where = folder / str(module.get("path", ""))
        config = _load(where / "config.json") or {}
        activation = _DENSE_ACTIVATION_CLASSES.get(str(config.get("activation_function")))
        if activation is None:
            raise ConfigError(f"Dense activation {config.get('activation_function')!r} is not applied by ovembed")
        if config.get("module_input_name", "sentence_embedding") != "sentence_embedding":
            raise ConfigError(f"a Dense module on {config['module_input_name']!r} is not applied by ovembed")
        if not (where / "model.safetensors").is_file():
            raise ConfigError(f"{where.name} has no model.safetensors (ovembed never reads PyTorch pickles)")
        dense.append(DenseModule(activation, where / "model.safetensors", int(config["out_features"])))
    return dense


def _claimed_context(folder: Path, model_config: dict[str, Any]) -> tuple[int, str]:
    """The context the model's configs give it, and which gives it: sentence-transformers' max_seq_length first,
    as sentence-transformers reads it (version 6 keeps it as the tokenizer's model_max_length, earlier ones in
    sentence_bert_config.json), then the tokenizer's, then config.json's positions."""
    st_config = _load(folder / "sentence_bert_config.json") or {}
    if isinstance(st_config.get("max_seq_length"), int) and st_config["max_seq_length"] > 0:
        return int(st_config["max_seq_length"]), "sentence-transformers' max_seq_length"
    max_length = (_load(folder / "tokenizer_config.json") or {}).get("model_max_length")
    if isinstance(max_length, int) and 0 < max_length < _UNBOUNDED_MAX_LENGTH:
        return max_length, "the tokenizer"
    positions = _positions(model_config)
    return (positions, "config.json") if positions else (_FALLBACK_CONTEXT, "")


def _positions(model_config: dict[str, Any]) -> int | None:
    """How many positions config.json gives the network; a RoBERTa-style table starts counting after its
    padding row, so pad_token_id + 1 rows place no token (514 rows, padding 1: 512 tokens)."""
    positions = model_config.get("max_position_embeddings")
    if not isinstance(positions, int) or positions <= 0:
        return None
    if model_config.get("model_type") in _PADDING_OFFSET_TYPES:
        pad = model_config.get("pad_token_id")
        return positions - (pad if isinstance(pad, int) else 1) - 1
    return positions


def within_positions(description: ModelDescription, folder: Path, network_positions: int | None) -> ModelDescription:
    """The context cut to the tokens the network can place; a longer claim is kept, with who made it.

    `network_positions`, read off the network's own position table, is the truth where there is one: Gather
    answers zeros past the table, and a config.json beside an export may describe another checkpoint. A rotary
    network has no table and places any position, but was made for config.json's max_position_embeddings.
    """
    positions = network_positions or _positions(_load(folder / "config.json") or {})
    if positions is None or description.context_length <= positions:
        return description
    claimed = description.context_length if description.context_from else 0
    return replace(description, context_length=positions, context_claimed=claimed)


_SCORE_ACTIVATION_CLASSES = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
}


def _score_activation(model_config: dict[str, Any]) -> str:
    """What CrossEncoder applies to the logit: the class its config names (version 4 on, or before), else sigmoid
    for one label; ovembed scores with one relevance logit only."""
    labels = len(model_config.get("id2label") or {}) or int(model_config.get("num_labels", 1))
    if labels != 1:
        raise ConfigError(f"a cross-encoder with {labels} labels: ovembed reranks with one relevance logit")
    named = (model_config.get("sentence_transformers") or {}).get("activation_fn") or model_config.get(
        "sbert_ce_default_activation_function"
    )
    if named is None:
        return "sigmoid"
    activation = _SCORE_ACTIVATION_CLASSES.get(str(named))
    if activation is None:
        raise ConfigError(f"cross-encoder activation {named!r} is not applied by ovembed (sigmoid or identity)")
    return activation


def describe_cross_encoder(model_config: dict[str, Any], context_length: int, context_from: str) -> ModelDescription:
    """A reranker: one score per (query, document) pair, from the classifier head on the first token."""
    return ModelDescription(
        architecture=str(model_config.get("model_type") or "unknown"),
        pooling="cls",
        normalize=False,
        context_length=context_length,
        context_from=context_from,
        dimension=1,
        task=RERANK,
        score_activation=_score_activation(model_config),
    )


def describe_splade(
    folder: Path, model_config: dict[str, Any], modules: list[dict[str, Any]], context_length: int, context_from: str
) -> ModelDescription:
    """A SPLADE model: its masked LM's logits pooled over tokens into one weight per vocabulary entry, as naver's
    SPLADE and sentence-transformers' SpladePooling (max, relu) do; the only output it gives is sparse."""
    module = _module(modules, "SpladePooling")
    config = (_load(folder / module.get("path", "1_SpladePooling") / "config.json") or {}) if module else {}
    strategy, act = config.get("pooling_strategy", "max"), config.get("activation_function", "relu")
    if (strategy, act) != ("max", "relu"):
        raise ConfigError(f"SpladePooling with {strategy} pooling and {act}: ovembed pools SPLADE as max and relu")
    vocabulary = model_config.get("vocab_size")
    return ModelDescription(
        architecture=str(model_config.get("model_type") or "unknown"),
        pooling="cls",  # unused: the network pools itself
        normalize=False,
        context_length=context_length,
        context_from=context_from,
        dimension=int(vocabulary) if isinstance(vocabulary, int) else 0,
        outputs=(SPARSE,),
    )


def describe_colbert(
    model_config: dict[str, Any], rules: LateInteraction, fallback: ModelDescription | None
) -> ModelDescription:
    """A ColBERT model: a vector per token and no dense one. Its context is the document length, as pylate cuts
    documents there whatever the tokenizer allows (a catalog entry may lower it)."""
    context, context_from = rules.document_length, "the ColBERT document length"
    if fallback is not None and fallback.context_length < context:
        context, context_from = fallback.context_length, "ovembed's catalog"
    hidden = model_config.get("hidden_size")
    return ModelDescription(
        architecture=str(model_config.get("model_type") or "unknown"),
        pooling="mean",  # no dense output; what the precision measurement compares
        normalize=False,
        context_length=context,
        context_from=context_from,
        dimension=int(hidden) if isinstance(hidden, int) else 0,
        outputs=(MULTIVECTOR,),
        late_interaction=rules,
    )


def describe_repo(folder: Path, fallback: ModelDescription | None = None, task: str | None = None) -> ModelDescription:
    """What a sentence-transformers-style folder says about its model.

    The context is what the configs claim, and which claims it; `within_positions` cuts it to the network's
    positions once the network is read. `fallback` (a catalog entry's description) caps it at Ollama's and
    otherwise fills only what the folder is silent on, e.g. a pre-converted mirror without modules.json; without
    one, sentence-transformers' own defaults apply (mean, no Normalize). `task` rerank makes a language model
    (Qwen3) a reranker, which its config cannot say; a cross-encoder is one by its config alone.
    """
    model_config = _load(folder / "config.json") or {}
    cross_encoder = is_cross_encoder(model_config)
    if task == RERANK and fallback is None and not cross_encoder:  # a language model's config cannot say it
        try:
            fallback = language_model_reranker(str(model_config.get("model_type")), _UNBOUNDED_MAX_LENGTH)
        except ValueError as exc:
            raise ConfigError(f"{exc}; a cross-encoder says so in its config.json") from exc
    modules_data = _load(folder / "modules.json")
    modules = modules_data or []
    # Ollama truncates at its context for the tag (the catalog's num_ctx); never past what the model was made for.
    context, context_from = _claimed_context(folder, model_config)
    if fallback is not None and fallback.context_length < context:
        context, context_from = fallback.context_length, "ovembed's catalog"
    if cross_encoder:
        return describe_cross_encoder(model_config, context, context_from)
    try:
        colbert = read_colbert(folder)
    except ColbertError as exc:
        raise ConfigError(str(exc)) from exc
    if colbert is not None:  # before SPLADE: a ColBERT checkpoint's config may name a masked LM
        return describe_colbert(model_config, colbert.rules, fallback)
    if is_masked_lm(model_config):
        return describe_splade(folder, model_config, modules, context, context_from)
    if fallback is not None and fallback.task == RERANK:  # a language-model reranker: its config is an LM's
        return replace(fallback, context_length=context, context_from=context_from)
    st_model_config = _load(folder / "config_sentence_transformers.json") or {}
    architectures = model_config.get("architectures") or []
    architecture = model_config.get("model_type") or (architectures[0] if architectures else None)
    hidden = model_config.get("hidden_size")
    prompts = {str(k): str(v) for k, v in (st_model_config.get("prompts") or {}).items() if isinstance(v, str) and v}
    silent_normalize = fallback.normalize if fallback else False
    normalize = _module(modules, "Normalize") is not None if modules_data else silent_normalize
    dense = read_dense(folder)
    return ModelDescription(
        architecture=str(architecture or (fallback.architecture if fallback else "unknown")),
        pooling=_pooling(folder, modules, fallback.pooling if fallback else "mean"),
        normalize=normalize,
        context_length=context,
        context_from=context_from,
        dimension=int(hidden) if isinstance(hidden, int) else (fallback.dimension if fallback else 0),
        prompts=prompts or (dict(fallback.prompts) if fallback else {}),
        dense=tuple(d.activation for d in dense),
    )
