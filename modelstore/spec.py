"""What a model is, declared once: the catalog, the repo config reader and the manifest all use these."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

POOLING_MODES = ("mean", "cls", "lasttoken")
# What a model is for: embedding texts, or scoring (query, document) pairs as a cross-encoder does.
EMBED = "embed"
RERANK = "rerank"
# What an embedding model gives per input: a dense vector, a sparse one (token id -> weight, as bge-m3's lexical
# weights and SPLADE's) and a vector per token (ColBERT's late interaction), in this order.
DENSE = "dense"
SPARSE = "sparse"
MULTIVECTOR = "multivector"
OUTPUTS = (DENSE, SPARSE, MULTIVECTOR)


def is_masked_lm(config: dict[str, Any]) -> bool:
    """A transformers config.json for a masked language model: as an embedder, a SPLADE model, whose sparse
    vector is read off its vocabulary logits."""
    return any(str(a).endswith("ForMaskedLM") for a in config.get("architectures") or ())


def is_cross_encoder(config: dict[str, Any]) -> bool:
    """A transformers config.json for a sequence classifier: a reranker, scoring the pair it is given."""
    return any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or ())


@dataclass(frozen=True)
class LateInteraction:
    """How a ColBERT model makes its token vectors (pylate's and Stanford ColBERT's rules): a marker token after
    [CLS] says query or document; a query is padded with [MASK] to `query_length` (its expansion tokens, attended
    to or not, each give a vector); a document is cut at `document_length` and drops the vectors of `skiplist`
    tokens (punctuation)."""

    query_prefix: str
    document_prefix: str
    query_length: int
    document_length: int
    expand_queries: bool = True
    attend_to_expansion: bool = False
    skiplist: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LateInteraction:
        values = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**{**values, "skiplist": tuple(str(w) for w in data.get("skiplist") or ())})


@dataclass(frozen=True)
class ModelDescription:
    """How a model's vectors are made: pooling, Normalize, the context it was trained for, their size, prompts.

    `dimension` is 0 while only a repo's configs are known; the converted network's output settles it.
    """

    architecture: str
    pooling: str
    normalize: bool
    context_length: int
    dimension: int
    prompts: dict[str, str] = field(default_factory=dict)
    # sentence-transformers Dense modules after pooling, by their activation; weights in layout.dense_file(i).
    dense: tuple[str, ...] = ()
    task: str = EMBED
    # A reranker's activation on its one logit (its `dimension` is 1); empty for an embedding model.
    score_activation: str = ""
    # A language-model reranker's prompt (Qwen3-Reranker's): `prefix`, `body` with {instruction}, {query} and
    # {document}, `suffix`, and the default `instruction`. Empty for a cross-encoder, which joins a pair with
    # its tokenizer's own template.
    pair_format: dict[str, str] = field(default_factory=dict)
    # Which config set the context ("the tokenizer", "config.json", ...; empty for ovembed's default), and the
    # longer context it claimed where the network holds fewer positions, which then cut it (0: nothing cut).
    context_from: str = ""
    context_claimed: int = 0
    # What an embedding model serves (OUTPUTS); a reranker has its own task and ignores this.
    outputs: tuple[str, ...] = (DENSE,)
    # A ColBERT model's input rules; None for every other model.
    late_interaction: LateInteraction | None = None

    def context_note(self) -> str:
        """Why the context is shorter than a config says, in words for the person who made the model; or ""."""
        if not self.context_claimed:
            return ""
        return f"{self.context_from} claims {self.context_claimed}; the network holds {self.context_length} positions"


@dataclass(frozen=True)
class Fidelity:
    """How far an int8 network's outputs moved from its fp32 network's on held-out inputs, and how much faster
    than the unquantized network it ran, measured when it was made (on `machine`).

    For an embedding model `worst` and `mean` are cosines (higher is closer); for a cross-encoder they are the
    largest and the mean change of a score (lower is closer), as `measure` says.
    """

    measure: str
    worst: float
    mean: float
    inputs: int
    speedup: float
    machine: str
    kept_in_float: str  # which layers stayed float, in words ("" when every matrix product is int8)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fidelity:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ModelSpec(ModelDescription):
    """A stored model's description and the facts of its converted weights, as kept in the manifest.

    `quantization` is "q8_0" for a network that computes in int8 (`fidelity` then says how faithfully); a
    model whose weights alone are int8 keeps "" here and says so in `precision`.
    """

    precision: str = field(kw_only=True)
    parameter_count: int = field(kw_only=True)
    quantization: str = field(default="", kw_only=True)
    fidelity: Fidelity | None = field(default=None, kw_only=True)
    # The outputs whose heads are stored beside the network (layout.head_file): sparse, multivector. They are
    # among `outputs` too.
    heads: tuple[str, ...] = field(default=(), kw_only=True)
    # How many floats each token vector holds (its head's width); 0 for a model without them.
    multivector_dimension: int = field(default=0, kw_only=True)

    @classmethod
    def of(
        cls,
        description: ModelDescription,
        *,
        precision: str,
        parameter_count: int,
        quantization: str = "",
        fidelity: Fidelity | None = None,
        heads: tuple[str, ...] = (),
        multivector_dimension: int = 0,
    ) -> ModelSpec:
        served = {*description.outputs, *heads}
        return cls(
            **{
                **asdict(description),
                "outputs": tuple(o for o in OUTPUTS if o in served),
                "late_interaction": description.late_interaction,  # asdict made it a dict
            },
            precision=precision,
            parameter_count=parameter_count,
            quantization=quantization,
            fidelity=fidelity,
            heads=heads,
            multivector_dimension=multivector_dimension,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        heads = tuple(str(h) for h in data.get("heads") or ())
        return cls(
            architecture=str(data["architecture"]),
            pooling=str(data["pooling"]),
            normalize=bool(data["normalize"]),
            context_length=int(data["context_length"]),
            dimension=int(data["dimension"]),
            precision=str(data["precision"]),
            parameter_count=int(data["parameter_count"]),
            prompts=dict(data.get("prompts") or {}),
            dense=tuple(str(a) for a in data.get("dense") or ()),
            task=str(data.get("task") or EMBED),
            score_activation=str(data.get("score_activation") or ""),
            pair_format={str(k): str(v) for k, v in (data.get("pair_format") or {}).items()},
            context_from=str(data.get("context_from") or ""),
            context_claimed=int(data.get("context_claimed") or 0),
            quantization=str(data.get("quantization") or ""),
            fidelity=Fidelity.from_json(data["fidelity"]) if data.get("fidelity") else None,
            heads=heads,
            multivector_dimension=int(data.get("multivector_dimension") or 0),
            # Manifests from before `outputs` was kept: dense, and the outputs of their stored heads.
            outputs=tuple(str(o) for o in data.get("outputs") or (o for o in OUTPUTS if o == DENSE or o in heads)),
            late_interaction=LateInteraction.from_json(data["late_interaction"])
            if data.get("late_interaction")
            else None,
        )
