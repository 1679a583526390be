"""`ovembed create NAME --from DIR`: a sentence-transformers folder in, a stored model out.

The pull path ends here too after downloading, so a model enters the store one way only.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, processors

from modelstore.architectures.torch_weights import UnsafeWeights, read_state_dict
from modelstore.architectures.weights import Checkpoint, ReadProgress, Tensor, WeightsError
from modelstore.convert import ConversionError, convert_network, find_network
from modelstore.diskspace import disk_full_message, is_disk_full
from modelstore.late_interaction import ColbertError, read_colbert
from modelstore.layout import REPO_HEADS, REPO_TOKENIZERS, TOKENIZER_FILE, dense_file, first_present, head_file
from modelstore.names import ModelName
from modelstore.quantize import QuantizeError, Tried, quantization_level, quantize_network
from modelstore.spec import EMBED, MULTIVECTOR, RERANK, SPARSE, ModelDescription, ModelSpec
from modelstore.stconfig import ConfigError, DenseModule, describe_repo, read_dense, within_positions
from modelstore.store import ModelRecord, ModelStore, Provenance

log = logging.getLogger(__name__)

_END_OF_TEXT = "<|endoftext|>"
# Where a causal language model keeps its output embeddings; tied ones are its input table.
_OUTPUT_EMBEDDINGS = ("lm_head.weight", "model.embed_tokens.weight", "embed_tokens.weight")
# Architectures whose embedding is the state at a final `<|endoftext|>`.
_ENDS_WITH_END_OF_TEXT = frozenset({"qwen3"})


class CreateError(ValueError):
    """The folder cannot become a model; the message says what is missing or wrong."""


class DiskFull(CreateError):
    """The store's disk filled up while the model was written; nothing of it is left behind."""


def _find_tokenizer(folder: Path) -> Path:
    tokenizer = first_present(folder, REPO_TOKENIZERS)
    if tokenizer is None:
        raise CreateError(f"{folder} has no tokenizer.json (a fast tokenizer file is needed beside the network)")
    return tokenizer


def _with_end_of_text(tokenizer: Tokenizer) -> Tokenizer | None:
    """The tokenizer made to end every text with `<|endoftext|>`, or None when it already does.

    Last-token pooling of Qwen3 embeddings reads the state at that token; Qwen's model card appends it by
    hand where a repo's tokenizer.json does not.
    """
    end = tokenizer.token_to_id(_END_OF_TEXT)
    if end is None or tokenizer.encode("a").ids[-1:] == [end]:
        return None
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {_END_OF_TEXT}", pair=f"$A $B {_END_OF_TEXT}", special_tokens=[(_END_OF_TEXT, end)]
    )
    return tokenizer


def _save_linear(path: Path, weight: np.ndarray, bias: np.ndarray | None = None) -> None:
    """A linear layer as the engine reads one: float32 `weight` [out, in] and `bias` [out] (zeros if it has none)."""
    bias = np.zeros(weight.shape[0], np.float32) if bias is None else bias
    np.savez(path, weight=weight.astype(np.float32), bias=bias.astype(np.float32))


def _store_dense(dense: list[DenseModule], staged: Path) -> None:
    """Each Dense module's weight and bias, as float32 arrays beside the network."""
    for index, module in enumerate(dense):
        try:
            checkpoint = Checkpoint.open(module.weights)
            weight = checkpoint.get("linear.weight").as_float32()
            bias = checkpoint.get("linear.bias").as_float32() if "linear.bias" in checkpoint else None
        except WeightsError as exc:
            raise CreateError(f"cannot read {module.weights.parent.name}/{module.weights.name}: {exc}") from exc
        _save_linear(staged / dense_file(index), weight, bias)


def _store_projection(weights: Path, staged: Path, width: int | None) -> dict[str, int]:
    """A ColBERT model's projection of every token (`linear.weight`, and a bias if it has one) as its
    multi-vector head; its width."""
    try:
        checkpoint = Checkpoint.open(weights)
        weight = checkpoint.get("linear.weight").as_float32()
        bias = checkpoint.get("linear.bias").as_float32() if "linear.bias" in checkpoint else None
    except (WeightsError, KeyError, OSError) as exc:
        raise CreateError(f"cannot read the ColBERT projection (linear.weight) in {weights.name}: {exc}") from exc
    if width and weight.shape[1] != width:
        raise CreateError(f"the ColBERT projection takes {weight.shape[1]}-wide states and the network gives {width}")
    _save_linear(staged / head_file(MULTIVECTOR), weight, bias)
    return {MULTIVECTOR: int(weight.shape[0])}


def _check_markers(description: ModelDescription, tokenizer: Tokenizer) -> None:
    """A ColBERT model's query and document markers must be tokens of its tokenizer, as pylate inserts them."""
    rules = description.late_interaction
    for marker in (rules.query_prefix, rules.document_prefix) if rules else ():
        if tokenizer.token_to_id(marker) is None:
            raise CreateError(f"the ColBERT marker {marker!r} is not a token of the model's tokenizer")


def _store_heads(folder: Path, staged: Path, width: int | None) -> dict[str, int]:
    """FlagEmbedding's heads in the folder (bge-m3's sparse and ColBERT), each as float32 weight and bias beside
    the network, read without unpickling, or a ColBERT model's projection; the outputs they give, with the width
    of each."""
    try:
        colbert = read_colbert(folder)
    except ColbertError as exc:
        raise CreateError(str(exc)) from exc
    if colbert is not None:
        return _store_projection(colbert.projection, staged, width)
    stored = {}
    for output, name in REPO_HEADS.items():
        path = folder / name
        if not path.is_file():
            continue
        try:
            tensors = read_state_dict(path)
        except UnsafeWeights as exc:
            raise CreateError(str(exc)) from exc
        weight = tensors.get("weight")
        if weight is None or weight.ndim != 2:
            raise CreateError(f"{name} has no two-dimensional `weight`, as a linear head has")
        if width and weight.shape[1] != width:
            raise CreateError(f"{name} takes {weight.shape[1]}-wide states and the network gives {width}")
        _save_linear(staged / head_file(output), weight, tensors.get("bias"))
        stored[output] = int(weight.shape[0])
    return stored


def _store_answer_head(checkpoint_path: Path, tokenizer: Tokenizer, staged: Path) -> None:
    """A language-model reranker's score as a one-row Dense layer on its last token: the output embedding of
    "yes" minus that of "no", so that sigmoid(state . row) is softmax over the two answers' logits."""
    answers = [tokenizer.token_to_id(word) for word in ("yes", "no")]
    if None in answers:
        raise CreateError('the tokenizer has no single "yes" and "no" tokens, which a reranker of this kind answers')
    try:
        checkpoint = Checkpoint.open(checkpoint_path)
        name = next((n for n in _OUTPUT_EMBEDDINGS if n in checkpoint), None)
        if name is None:
            raise CreateError(
                f"{checkpoint_path.name} has no output embeddings (lm_head.weight or embed_tokens.weight)"
            )
        table = checkpoint.get(name)
        rows = Tensor(table.array[answers], table.bf16).as_float32()
    except WeightsError as exc:
        raise CreateError(f"cannot read the answer head from {checkpoint_path.name}: {exc}") from exc
    _save_linear(staged / dense_file(0), (rows[0] - rows[1])[None, :])


def _readable(network: Path, scratch: Path) -> Path:
    """The network where OpenVINO will read it: beside plain copies of its neighbours if any is a symlink.

    A Hugging Face cache snapshot is made of symlinks into the cache's blobs, and OpenVINO refuses ONNX
    external data (bge-m3's `model.onnx_data`) that resolves outside the graph's folder. Hard links cost
    no space; a copy is the fallback across filesystems.
    """
    neighbours = [p for p in network.parent.iterdir() if p.is_file()]
    if not any(p.is_symlink() for p in neighbours):
        return network
    for path in neighbours:
        try:
            os.link(path.resolve(), scratch / path.name)
        except OSError:
            shutil.copyfile(path, scratch / path.name)
    return scratch / network.name


def create_from_folder(
    store: ModelStore,
    name: ModelName,
    folder: Path,
    source: str | None = None,
    *,
    fallback: ModelDescription | None = None,
    provenance: Provenance | None = None,
    weights: str | None = None,
    progress: ReadProgress | None = None,
    task: str | None = None,
    quantize: str | None = None,
    tried: Tried | None = None,
) -> ModelRecord:
    """Convert and store the model in `folder` under `name`; nothing appears unless every step succeeds.

    `fallback` fills what the folder's own configs leave open; `provenance` is kept in the manifest;
    `weights` (fp16, fp32, int8, int4) is the stored weight format, by default as convert_network chooses;
    `progress` follows the conversion of a checkpoint; `task` rerank makes a language model a reranker;
    `quantize` (q8_0) makes the network compute in int8, each candidate's figures told to `tried`.
    """
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise CreateError(f"{folder} is not a folder")
    try:
        level = quantization_level(quantize) if quantize else ""
        description = describe_repo(folder, fallback, task)
        # A language-model reranker's answer head is read from its checkpoint, so that is what converts.
        answers = description.task == RERANK and bool(description.pair_format)
        network = find_network(folder, weights, prefer_checkpoint=answers)
        tokenizer = _find_tokenizer(folder)
    except (ConversionError, ConfigError, QuantizeError) as exc:
        raise CreateError(str(exc)) from exc
    try:
        loaded = Tokenizer.from_file(str(tokenizer))
    except Exception as exc:  # the tokenizers library raises its own Exception type
        raise CreateError(f"cannot read {tokenizer.name}: {exc}") from exc
    ends_with_eos = (
        description.task == EMBED
        and description.architecture in _ENDS_WITH_END_OF_TEXT
        and description.pooling == "lasttoken"
    )
    patched = _with_end_of_text(loaded) if ends_with_eos else None
    _check_markers(description, loaded)
    with store.staging() as staged, store.staging() as scratch:
        # Told apart before the staging folders go: OpenVINO's error is a full disk only while it is full.
        try:
            try:
                # A language model's states, then its answer head; a SPLADE model's vocabulary weights.
                output = EMBED if answers else SPARSE if description.outputs == (SPARSE,) else description.task
                info = convert_network(_readable(network, scratch), staged, weights, progress, output)
            except ConversionError as exc:
                raise CreateError(str(exc)) from exc
            if patched is None:
                shutil.copyfile(tokenizer, staged / TOKENIZER_FILE)
            else:
                patched.save(str(staged / TOKENIZER_FILE))
            heads: dict[str, int] = {}
            if answers:
                _store_answer_head(network, loaded, staged)
                dimension = 1
            else:
                dense = read_dense(folder)
                _store_dense(dense, staged)
                heads = _store_heads(folder, staged, info.dimension) if output == EMBED else {}
                dimension = dense[-1].out_features if dense else info.dimension or description.dimension
            if not dimension:
                raise CreateError(f"cannot tell the embedding size of {network.name}")
            described = replace(within_positions(description, folder, info.positions), dimension=dimension)
            try:
                fidelity = quantize_network(staged, described, tried=tried) if level else None
            except QuantizeError as exc:
                raise CreateError(str(exc)) from exc
            spec = ModelSpec.of(
                described,
                precision="int8" if level else info.precision,
                parameter_count=info.parameter_count,
                quantization=level,
                fidelity=fidelity,
                heads=tuple(heads),
                multivector_dimension=heads.get(MULTIVECTOR, 0),
            )
            source = source or str(folder)
            record = store.commit(name, staged, spec, f"{source} ({network.relative_to(folder)})", provenance)
        except (OSError, RuntimeError) as exc:
            if is_disk_full(exc, store.root):
                raise DiskFull(disk_full_message("writing the model", store.root, _network_size(network))) from exc
            raise
    if note := spec.context_note():  # the daemon's log says it for a pull, as `ovembed create` prints it
        log.info("%s: context %d (%s)", name.display, spec.context_length, note)
    return record


def _network_size(network: Path) -> int:
    """The network's files (graph, weights, external data, shards): about what its IR will take."""
    return sum(p.stat().st_size for p in network.parent.iterdir() if p.is_file() and p.suffix != ".json") or 0
