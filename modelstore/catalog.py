"""Ollama library embedding models, mapped to the Hugging Face repos they were built from.

`ovembed pull all-minilm` has no GGUF to fetch: it fetches the model's original Hugging Face repo and converts
it to OpenVINO IR. This table says which repo each Ollama `model:tag` stands for, and records what Ollama's
own GGUF for that tag uses (pooling, Normalize, `num_ctx`), so that our vectors and input limits agree with
Ollama's rather than with whatever the repo's defaults would give. Source: ../shared/model-catalog.md
(ollama.com library pages, GGUF metadata, and the HF repos' sentence-transformers configs).

`context_length` is Ollama's `num_ctx` for the tag where the library page sets one, else the GGUF / HF maximum;
it caps the repo's own limit (sentence-transformers' max_seq_length), so inputs are cut where Ollama cuts them
and never past what the model was trained for (all-minilm:33m: Ollama allows 256, the L12 model was made for 128).
`architecture` is the HF config's `model_type`. `normalize` is whether the repo's sentence-transformers pipeline
has a Normalize module; `/api/embed` normalizes anyway, as Ollama does, so it only shows in `/api/embeddings`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from modelstore.names import DEFAULT_HOST, DEFAULT_NAMESPACE, ModelName
from modelstore.spec import MULTIVECTOR, RERANK, SPARSE, ModelDescription


@dataclass(frozen=True)
class CatalogEntry:
    """One Ollama model size: every tag that selects it, and how to build and run it from Hugging Face.

    Not hashable in practice (the prompts are a dict): key lookups by ``(model, tag)``, never by entry.
    """

    model: str
    tags: tuple[str, ...]
    repo: str
    description: ModelDescription
    mirrors: tuple[str, ...] = ()
    revision: str = "main"
    weights: str | None = None  # the stored weight format when ovembed converts the repo's checkpoint
    quantize: str | None = None  # q8_0: the network made to compute in int8 (modelstore/quantize.py)


# Ollama's tag suffix for 8-bit models; on a name the catalog does not list, ovembed's int8 network.
QUANTIZED_SUFFIX = "q8_0"

_RETRIEVAL_QUERY = "Represent this sentence for searching relevant passages: "
_QWEN3_QUERY = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
_NOMIC_PROMPTS = {"query": "search_query: ", "document": "search_document: "}


EMBEDDERS: tuple[CatalogEntry, ...] = (
    # all-minilm: num_ctx 256 is on the l6-v2 page; assumed the same params blob for the L12 tags (verify).
    # "v2" -> L6 is unconfirmed: the tag exists (10 tags on the page), its size was not seen.
    CatalogEntry(
        model="all-minilm",
        tags=("latest", "l6", "l6-v2", "v2", "22m", "22m-l6-v2-fp16"),
        repo="sentence-transformers/all-MiniLM-L6-v2",
        description=ModelDescription(
            architecture="bert",
            pooling="mean",
            normalize=True,
            context_length=256,
            dimension=384,
        ),
    ),
    CatalogEntry(
        model="all-minilm",
        tags=("33m", "l12", "l12-v2", "33m-l12-v2-fp16"),
        repo="sentence-transformers/all-MiniLM-L12-v2",
        description=ModelDescription(
            architecture="bert",
            pooling="mean",
            normalize=True,
            context_length=256,
            dimension=384,
        ),
    ),
    # nomic-embed-text: the ST pipeline of v1.5 is taken to have no Normalize module (v1 has one; verify), which
    # also matches Ollama's nomic-bert default of raw vectors on /api/embeddings. The repo ships onnx/model.onnx.
    # Ollama truncates at its GGUF's context length, 2048, though the model takes 8192.
    CatalogEntry(
        model="nomic-embed-text",
        tags=("latest", "v1.5", "137m-v1.5-fp16"),
        repo="nomic-ai/nomic-embed-text-v1.5",
        description=ModelDescription(
            architecture="nomic_bert",
            pooling="mean",
            normalize=False,
            context_length=2048,
            dimension=768,
            prompts=dict(_NOMIC_PROMPTS),
        ),
    ),
    CatalogEntry(
        model="mxbai-embed-large",
        tags=("latest", "v1", "335m", "335m-v1-fp16"),
        repo="mixedbread-ai/mxbai-embed-large-v1",
        description=ModelDescription(
            architecture="bert",
            pooling="cls",
            normalize=False,
            context_length=512,
            dimension=1024,
            prompts={"query": _RETRIEVAL_QUERY},
        ),
    ),
    CatalogEntry(
        model="bge-m3",
        tags=("latest", "567m", "567m-fp16"),
        repo="BAAI/bge-m3",
        description=ModelDescription(
            architecture="xlm-roberta",
            pooling="cls",
            normalize=True,
            context_length=8192,
            dimension=1024,
        ),
    ),
    CatalogEntry(
        model="bge-large",
        tags=("latest", "335m", "335m-en-v1.5-fp16"),
        repo="BAAI/bge-large-en-v1.5",
        description=ModelDescription(
            architecture="bert",
            pooling="cls",
            normalize=True,
            context_length=512,
            dimension=1024,
            prompts={"query": _RETRIEVAL_QUERY},
        ),
    ),
    # snowflake-arctic-embed (v1 repos): every size is CLS-pooled in Ollama's GGUFs. The "-fp16" tag forms for xs
    # and m-long follow the pattern of the confirmed 33m-s-fp16, 110m-m-fp16 and 335m-l-fp16 (verify).
    *(
        CatalogEntry(
            model="snowflake-arctic-embed",
            tags=tags,
            repo=f"Snowflake/snowflake-arctic-embed-{size}",
            description=ModelDescription(
                architecture=architecture,
                pooling="cls",
                normalize=True,
                context_length=context,
                dimension=dimension,
                prompts={"query": _RETRIEVAL_QUERY},
            ),
        )
        for size, tags, architecture, context, dimension in (
            ("xs", ("xs", "22m", "22m-xs-fp16"), "bert", 512, 384),
            ("s", ("s", "33m", "33m-s-fp16"), "bert", 512, 384),
            ("m", ("m", "110m", "110m-m-fp16"), "bert", 512, 768),
            # Ollama's GGUF context_length; the HF model stretches to 8192 with RoPE scaling.
            ("m-long", ("m-long", "137m", "137m-m-long-fp16"), "nomic_bert", 2048, 768),
            ("l", ("latest", "l", "335m", "335m-l-fp16"), "bert", 512, 1024),
        )
    ),
    CatalogEntry(
        model="snowflake-arctic-embed2",
        tags=("latest", "568m", "568m-l-fp16"),
        repo="Snowflake/snowflake-arctic-embed-l-v2.0",
        description=ModelDescription(
            architecture="xlm-roberta",
            pooling="cls",
            normalize=True,
            context_length=8192,
            dimension=1024,
            prompts={"query": "query: "},
        ),
    ),
    CatalogEntry(
        model="paraphrase-multilingual",
        tags=("latest", "278m", "278m-mpnet-base-v2-fp16"),
        repo="sentence-transformers/paraphrase-multilingual-mpnet-base-v2",
        description=ModelDescription(
            architecture="xlm-roberta",
            pooling="mean",
            normalize=False,
            context_length=128,
            dimension=768,
        ),
    ),
    # granite-embedding: `latest` is the 30m English model (63MB on the library page). Normalize module: verify.
    CatalogEntry(
        model="granite-embedding",
        tags=("latest", "30m", "30m-en", "30m-en-fp16"),
        repo="ibm-granite/granite-embedding-30m-english",
        description=ModelDescription(
            architecture="roberta",
            pooling="cls",
            normalize=True,
            context_length=512,
            dimension=384,
        ),
    ),
    CatalogEntry(
        model="granite-embedding",
        tags=("278m", "278m-fp16"),
        repo="ibm-granite/granite-embedding-278m-multilingual",
        description=ModelDescription(
            architecture="xlm-roberta",
            pooling="cls",
            normalize=True,
            context_length=512,
            dimension=768,
        ),
    ),
    # embeddinggemma: bidirectional Gemma3, mean pooling, two Dense layers (768 -> 3072 -> 768), Normalize; the
    # repo is gated (the Gemma terms accepted on Hugging Face, then HF_TOKEN). Ollama's QAT tags come as int8:
    # int4 measured worst cosine 0.956 on the Gemma3 fixture, and a 300M model has little to gain from it.
    *(
        CatalogEntry(
            model="embeddinggemma",
            tags=tags,
            repo="google/embeddinggemma-300m",
            description=ModelDescription(
                architecture="gemma3_text",
                pooling="mean",
                normalize=True,
                context_length=2048,
                dimension=768,
                prompts={"query": "task: search result | query: ", "document": "title: none | text: "},
            ),
            weights=weights,
        )
        for tags, weights in ((("latest", "300m", "300m-bf16"), None), (("300m-qat-q4_0", "300m-qat-q8_0"), "int8"))
    ),
    # qwen3-embedding: last-token pooling with left padding. The library page shows "40K" (GGUF context_length);
    # no num_ctx was seen, so this is the HF max_position_embeddings.
    CatalogEntry(
        model="qwen3-embedding",
        tags=("0.6b", "0.6b-q8_0", "0.6b-fp16"),
        repo="Qwen/Qwen3-Embedding-0.6B",
        description=ModelDescription(
            architecture="qwen3",
            pooling="lasttoken",
            normalize=True,
            context_length=32768,
            dimension=1024,
            prompts={"query": _QWEN3_QUERY},
        ),
        mirrors=("OpenVINO/Qwen3-Embedding-0.6B-fp16-ov",),
    ),
    # qwen3-embedding 4b and 8b ship only bf16 safetensors; ovembed converts them. Ollama's default tags are
    # 4-bit (Q4_K_M); here the default is int8 weight matrices, which keep the model compressed in memory once
    # loaded (scripts/bench-convert: 2.0 GB against 7.1 GB for fp16 weights, per billion parameters) and lose
    # little (worst cosine 0.995 on all-MiniLM). int4 is kept for the tag that names 4 bits: measured on
    # all-MiniLM it fell to 0.91, and the large models themselves cannot be measured here.
    *(
        CatalogEntry(
            model="qwen3-embedding",
            tags=tags,
            repo=f"Qwen/Qwen3-Embedding-{size.upper()}",
            description=ModelDescription(
                architecture="qwen3",
                pooling="lasttoken",
                normalize=True,
                context_length=32768,
                dimension=dimension,
                prompts={"query": _QWEN3_QUERY},
            ),
            weights=weights,
        )
        for size, dimension in (("4b", 2560), ("8b", 4096))
        for tags, weights in (
            ((*(("latest",) if size == "8b" else ()), size, f"{size}-q8_0"), "int8"),
            ((f"{size}-q4_K_M",), "int4"),
            ((f"{size}-fp16",), "fp16"),
        )
    ),
    # nomic-embed-text-v2-moe: custom MoE code and no known ONNX/IR; the pull inspects the
    # repo and fails at once if nothing convertible is there.
    CatalogEntry(
        model="nomic-embed-text-v2-moe",
        tags=("latest",),
        repo="nomic-ai/nomic-embed-text-v2-moe",
        description=ModelDescription(
            architecture="nomic_bert",
            pooling="mean",
            normalize=True,
            context_length=512,
            dimension=768,
            prompts=dict(_NOMIC_PROMPTS),
        ),
    ),
)


def _reranker(architecture: str, context_length: int) -> ModelDescription:
    """A cross-encoder: one logit on the first token, sigmoid for its relevance score, as CrossEncoder scores."""
    return ModelDescription(
        architecture=architecture,
        pooling="cls",
        normalize=False,
        context_length=context_length,
        dimension=1,
        task=RERANK,
        score_activation="sigmoid",
    )


# Qwen3-Reranker's model card: the judgement asked of the model, whose "yes" against "no" at the last token
# is the score.
QWEN3_RERANKER_FORMAT = {
    "prefix": "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n',
    "body": "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}",
    "suffix": "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    "instruction": "Given a web search query, retrieve relevant passages that answer the query",
}


def language_model_reranker(architecture: str, context_length: int) -> ModelDescription:
    """A causal language model that reranks by answering yes or no: the last token's "yes" logit minus its
    "no" logit (a one-row Dense layer on the last token's state), sigmoid of that, as softmax over the two."""
    if architecture != "qwen3":
        raise ValueError(f"{architecture} is not a language-model reranker ovembed knows; Qwen3-Reranker (qwen3) is")
    return ModelDescription(
        architecture=architecture,
        pooling="lasttoken",
        normalize=False,
        context_length=context_length,
        dimension=1,
        dense=("identity",),
        task=RERANK,
        score_activation="sigmoid",
        pair_format=dict(QWEN3_RERANKER_FORMAT),
    )


# Rerankers: Ollama's library has none, so these short names are ovembed's own (any cross-encoder repo also
# pulls as hf.co/ORG/REPO). Context: the repos' tokenizer limits, which CrossEncoder truncates at.
RERANKERS: tuple[CatalogEntry, ...] = (
    CatalogEntry("bge-reranker-v2-m3", ("latest", "568m"), "BAAI/bge-reranker-v2-m3", _reranker("xlm-roberta", 8192)),
    CatalogEntry("bge-reranker-base", ("latest", "278m"), "BAAI/bge-reranker-base", _reranker("xlm-roberta", 512)),
    CatalogEntry("bge-reranker-large", ("latest", "560m"), "BAAI/bge-reranker-large", _reranker("xlm-roberta", 512)),
    CatalogEntry(
        "ms-marco-minilm", ("latest", "l6", "l6-v2"), "cross-encoder/ms-marco-MiniLM-L6-v2", _reranker("bert", 512)
    ),
    CatalogEntry("ms-marco-minilm", ("l12", "l12-v2"), "cross-encoder/ms-marco-MiniLM-L12-v2", _reranker("bert", 512)),
    # Qwen3-Reranker, converted from its checkpoint like qwen3-embedding: the 4B and 8B with int8 weight matrices.
    *(
        CatalogEntry(
            "qwen3-reranker",
            tags,
            f"Qwen/Qwen3-Reranker-{size.upper()}",
            language_model_reranker("qwen3", 8192),
            weights=weights,
        )
        for size, tags, weights in (
            ("0.6b", ("latest", "0.6b"), "fp16"),
            ("4b", ("4b",), "int8"),
            ("8b", ("8b",), "int8"),
        )
    ),
)


def _splade(context_length: int) -> ModelDescription:
    """A SPLADE model: BERT's masked LM, its vocabulary logits pooled into one sparse vector per text."""
    return ModelDescription(
        architecture="bert",
        pooling="cls",
        normalize=False,
        context_length=context_length,
        dimension=30522,
        outputs=(SPARSE,),
    )


def _colbert(hidden: int, context_length: int) -> ModelDescription:
    """A ColBERT model: a vector per token, no dense one; `hidden` is its network's width (its projection
    narrows each token's state: 96 or 128 wide); its own files give the rest."""
    return ModelDescription(
        architecture="bert",
        pooling="mean",
        normalize=False,
        context_length=context_length,
        dimension=hidden,
        outputs=(MULTIVECTOR,),
    )


# Sparse and late-interaction models: Ollama's library has none, so these names are ovembed's own (any such repo
# also pulls as hf.co/ORG/REPO). All are under open licences (Apache-2.0, colbertv2.0 MIT); naver's own SPLADE
# checkpoints (CC BY-NC-SA) and jina-colbert-v2 (CC BY-NC, custom code) are left out. bge-m3 gives both outputs
# beside its dense vector.
RETRIEVAL_OUTPUTS: tuple[CatalogEntry, ...] = (
    CatalogEntry("splade-pp-en-v1", ("latest", "110m"), "prithivida/Splade_PP_en_v1", _splade(512)),
    CatalogEntry(
        "opensearch-neural-sparse",
        ("latest", "v1", "133m"),
        "opensearch-project/opensearch-neural-sparse-encoding-v1",
        _splade(512),
    ),
    CatalogEntry(
        "answerai-colbert-small", ("latest", "v1", "33m"), "answerdotai/answerai-colbert-small-v1", _colbert(384, 512)
    ),
    CatalogEntry("colbertv2", ("latest", "110m"), "colbert-ir/colbertv2.0", _colbert(768, 512)),
    CatalogEntry(
        "mxbai-colbert-large", ("latest", "v1", "335m"), "mixedbread-ai/mxbai-colbert-large-v1", _colbert(1024, 512)
    ),
)
ENTRIES = (*EMBEDDERS, *RERANKERS, *RETRIEVAL_OUTPUTS)

_INDEX: dict[tuple[str, str], CatalogEntry] = {
    (entry.model.casefold(), tag.casefold()): entry for entry in ENTRIES for tag in entry.tags
}


def lookup(name: ModelName) -> CatalogEntry | None:
    """The entry for an Ollama library name (default host, namespace `library`), tag matched case-insensitively;
    None otherwise.

    A tag the catalog does not list that ends in `-q8_0` (or is `q8_0`, for latest) names the tag before it
    made int8 by ovembed: `all-minilm:q8_0`, `bge-m3:567m-q8_0`. Tags the catalog lists keep their entry.
    """
    host, namespace, model, tag = name.key
    if host != DEFAULT_HOST or namespace != DEFAULT_NAMESPACE:
        return None
    entry = _INDEX.get((model, tag))
    base = quantized_base(tag)
    if entry is not None or base is None:
        return entry
    entry = _INDEX.get((model, base))
    return None if entry is None else replace(entry, quantize=QUANTIZED_SUFFIX)


def quantized_base(tag: str) -> str | None:
    """The tag a `q8_0` tag is made from (`latest` for `q8_0` alone), or None for a tag that asks no int8."""
    folded = tag.casefold()
    if folded == QUANTIZED_SUFFIX:
        return "latest"
    if folded.endswith(f"-{QUANTIZED_SUFFIX}"):
        return folded.removesuffix(f"-{QUANTIZED_SUFFIX}")
    return None


def catalog_names() -> list[str]:
    """Every `model:tag` the catalog knows, sorted, for docs and `ovembed pull --help`."""
    return sorted(f"{entry.model}:{tag}" for entry in ENTRIES for tag in entry.tags)
