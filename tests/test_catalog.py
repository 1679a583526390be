import pytest

from modelstore.catalog import ENTRIES, CatalogEntry, catalog_names, lookup
from modelstore.names import parse_name
from modelstore.spec import POOLING_MODES

MINILM_L6 = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_L12 = "sentence-transformers/all-MiniLM-L12-v2"
QWEN3_06B_MIRROR = "OpenVINO/Qwen3-Embedding-0.6B-fp16-ov"


def _entry(text: str) -> CatalogEntry:
    entry = lookup(parse_name(text))
    assert entry is not None, text
    return entry


@pytest.mark.parametrize(
    ("text", "repo", "pooling", "dimension", "context_length"),
    [
        ("all-minilm", MINILM_L6, "mean", 384, 256),
        ("all-minilm:latest", MINILM_L6, "mean", 384, 256),
        ("all-minilm:l6-v2", MINILM_L6, "mean", 384, 256),
        ("All-MiniLM:L6-V2", MINILM_L6, "mean", 384, 256),
        ("all-minilm:22m", MINILM_L6, "mean", 384, 256),
        ("all-minilm:22m-l6-v2-fp16", MINILM_L6, "mean", 384, 256),
        ("library/all-minilm", MINILM_L6, "mean", 384, 256),
        ("all-minilm:33m", MINILM_L12, "mean", 384, 256),
        ("all-minilm:l12", MINILM_L12, "mean", 384, 256),
        ("all-minilm:L12-v2", MINILM_L12, "mean", 384, 256),
        ("all-minilm:33m-l12-v2-fp16", MINILM_L12, "mean", 384, 256),
        ("registry.ollama.ai/library/nomic-embed-text:latest", "nomic-ai/nomic-embed-text-v1.5", "mean", 768, 2048),
        ("nomic-embed-text:v1.5", "nomic-ai/nomic-embed-text-v1.5", "mean", 768, 2048),
        ("mxbai-embed-large", "mixedbread-ai/mxbai-embed-large-v1", "cls", 1024, 512),
        ("mxbai-embed-large:335m-v1-fp16", "mixedbread-ai/mxbai-embed-large-v1", "cls", 1024, 512),
        ("bge-m3", "BAAI/bge-m3", "cls", 1024, 8192),
        ("bge-large", "BAAI/bge-large-en-v1.5", "cls", 1024, 512),
        ("snowflake-arctic-embed", "Snowflake/snowflake-arctic-embed-l", "cls", 1024, 512),
        ("snowflake-arctic-embed:xs", "Snowflake/snowflake-arctic-embed-xs", "cls", 384, 512),
        ("snowflake-arctic-embed:22m", "Snowflake/snowflake-arctic-embed-xs", "cls", 384, 512),
        ("snowflake-arctic-embed:s", "Snowflake/snowflake-arctic-embed-s", "cls", 384, 512),
        ("snowflake-arctic-embed:33m-s-fp16", "Snowflake/snowflake-arctic-embed-s", "cls", 384, 512),
        ("snowflake-arctic-embed:m", "Snowflake/snowflake-arctic-embed-m", "cls", 768, 512),
        ("snowflake-arctic-embed:110m", "Snowflake/snowflake-arctic-embed-m", "cls", 768, 512),
        ("snowflake-arctic-embed:m-long", "Snowflake/snowflake-arctic-embed-m-long", "cls", 768, 2048),
        ("snowflake-arctic-embed:137m", "Snowflake/snowflake-arctic-embed-m-long", "cls", 768, 2048),
        ("snowflake-arctic-embed:l", "Snowflake/snowflake-arctic-embed-l", "cls", 1024, 512),
        ("snowflake-arctic-embed:335m", "Snowflake/snowflake-arctic-embed-l", "cls", 1024, 512),
        ("snowflake-arctic-embed2", "Snowflake/snowflake-arctic-embed-l-v2.0", "cls", 1024, 8192),
        ("paraphrase-multilingual", "sentence-transformers/paraphrase-multilingual-mpnet-base-v2", "mean", 768, 128),
        ("granite-embedding", "ibm-granite/granite-embedding-30m-english", "cls", 384, 512),
        ("granite-embedding:30m", "ibm-granite/granite-embedding-30m-english", "cls", 384, 512),
        ("granite-embedding:278m", "ibm-granite/granite-embedding-278m-multilingual", "cls", 768, 512),
        ("embeddinggemma", "google/embeddinggemma-300m", "mean", 768, 2048),
        ("embeddinggemma:300m-qat-q4_0", "google/embeddinggemma-300m", "mean", 768, 2048),
        ("qwen3-embedding:0.6b", "Qwen/Qwen3-Embedding-0.6B", "lasttoken", 1024, 32768),
        ("qwen3-embedding:0.6b-Q8_0", "Qwen/Qwen3-Embedding-0.6B", "lasttoken", 1024, 32768),
        ("qwen3-embedding:4b-q4_k_m", "Qwen/Qwen3-Embedding-4B", "lasttoken", 2560, 32768),
        ("qwen3-embedding:8b", "Qwen/Qwen3-Embedding-8B", "lasttoken", 4096, 32768),
        ("qwen3-embedding:latest", "Qwen/Qwen3-Embedding-8B", "lasttoken", 4096, 32768),
        ("nomic-embed-text-v2-moe", "nomic-ai/nomic-embed-text-v2-moe", "mean", 768, 512),
        ("bge-reranker-v2-m3", "BAAI/bge-reranker-v2-m3", "cls", 1, 8192),
        ("bge-reranker-base", "BAAI/bge-reranker-base", "cls", 1, 512),
        ("ms-marco-minilm", "cross-encoder/ms-marco-MiniLM-L6-v2", "cls", 1, 512),
        ("ms-marco-minilm:l12", "cross-encoder/ms-marco-MiniLM-L12-v2", "cls", 1, 512),
        ("qwen3-reranker", "Qwen/Qwen3-Reranker-0.6B", "lasttoken", 1, 8192),
        ("qwen3-reranker:8b", "Qwen/Qwen3-Reranker-8B", "lasttoken", 1, 8192),
    ],
)
def test_known_names_resolve(text: str, repo: str, pooling: str, dimension: int, context_length: int) -> None:
    entry = _entry(text)
    assert (entry.repo, entry.description.pooling, entry.description.dimension, entry.description.context_length) == (
        repo,
        pooling,
        dimension,
        context_length,
    )
    assert entry.model == parse_name(text).model.lower()


@pytest.mark.parametrize(
    ("text", "weights"),
    [
        ("qwen3-embedding", "int8"),
        ("qwen3-embedding:8b", "int8"),
        ("qwen3-embedding:4b-q4_K_M", "int4"),
        ("qwen3-embedding:8b-q4_K_M", "int4"),
        ("qwen3-embedding:4b-q8_0", "int8"),
        ("qwen3-embedding:4b-fp16", "fp16"),
        ("qwen3-embedding:8b-fp16", "fp16"),
        ("qwen3-embedding:0.6b", None),
        ("all-minilm", None),
        ("embeddinggemma", None),
        ("embeddinggemma:300m-qat-q4_0", "int8"),
        ("embeddinggemma:300m-qat-q8_0", "int8"),
    ],
)
def test_quantized_tags_convert_to_int8_unless_they_name_4_bits_or_fp16(text: str, weights: str | None) -> None:
    assert _entry(text).weights == weights


def test_qwen3_small_uses_the_openvino_mirror() -> None:
    entry = _entry("qwen3-embedding:0.6b-fp16")
    assert entry.mirrors == (QWEN3_06B_MIRROR,)
    assert entry.description.prompts["query"].startswith("Instruct: ")


@pytest.mark.parametrize(
    ("text", "prompts"),
    [
        ("nomic-embed-text", {"query": "search_query: ", "document": "search_document: "}),
        ("snowflake-arctic-embed2", {"query": "query: "}),
        ("embeddinggemma", {"query": "task: search result | query: ", "document": "title: none | text: "}),
        ("all-minilm", {}),
    ],
)
def test_prompts(text: str, prompts: dict[str, str]) -> None:
    assert _entry(text).description.prompts == prompts


@pytest.mark.parametrize(
    "text",
    [
        "all-minilm:nope",
        "all-minilm:cloud",
        "llama3",
        "nomic-embed",
        "chroma/all-minilm-l6-v2-f32",
        "chroma/all-minilm",
        "hf.co/org/repo",
        "hf.co/sentence-transformers/all-MiniLM-L6-v2",
        "example.com/library/all-minilm",
    ],
)
def test_unknown_names_give_none(text: str) -> None:
    assert lookup(parse_name(text)) is None


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e.model}:{e.tags[0]}")
def test_entries_are_well_formed(entry: CatalogEntry) -> None:
    assert entry.description.pooling in POOLING_MODES
    assert entry.description.dimension > 0
    assert entry.description.context_length > 0
    assert entry.tags
    assert entry.repo.count("/") == 1
    assert all(prompt for prompt in entry.description.prompts.values())
    assert set(entry.description.prompts) <= {"query", "document"}
    assert entry.revision
    assert all(mirror.count("/") == 1 for mirror in entry.mirrors)
    for tag in entry.tags:
        assert lookup(parse_name(f"{entry.model}:{tag}")) is entry


def test_no_tag_is_claimed_twice() -> None:
    seen: dict[tuple[str, str], str] = {}
    for entry in ENTRIES:
        for tag in entry.tags:
            key = (entry.model.casefold(), tag.casefold())
            assert key not in seen, f"{entry.model}:{tag} is both {seen[key]} and {entry.repo}"
            seen[key] = entry.repo


def test_every_model_has_latest() -> None:
    models = {entry.model for entry in ENTRIES}
    for model in models:
        assert lookup(parse_name(model)) is not None, model


def test_catalog_names() -> None:
    names = catalog_names()
    assert names == sorted(names)
    assert len(names) == len(set(names))
    assert "all-minilm:latest" in names
    assert "qwen3-embedding:0.6b" in names
    assert len(names) == sum(len(entry.tags) for entry in ENTRIES)


@pytest.mark.parametrize(
    ("text", "base"),
    [("all-minilm:q8_0", "all-minilm"), ("all-minilm:l6-v2-q8_0", "all-minilm:l6-v2"), ("bge-m3:567M-Q8_0", "bge-m3")],
)
def test_a_q8_0_tag_the_catalog_lacks_is_its_base_tag_made_int8(text: str, base: str) -> None:
    entry, plain = lookup(parse_name(text)), lookup(parse_name(base))
    assert entry is not None and plain is not None
    assert entry.quantize == "q8_0" and plain.quantize is None
    assert (entry.repo, entry.description, entry.weights) == (plain.repo, plain.description, plain.weights)


def test_a_q8_0_tag_the_catalog_lists_keeps_its_own_entry() -> None:
    entry = lookup(parse_name("embeddinggemma:300m-qat-q8_0"))
    assert entry is not None and entry.quantize is None and entry.weights == "int8"


@pytest.mark.parametrize("text", ["all-minilm:nothing-q8_0", "no-such-model:q8_0", "all-minilm:q8_0-q8_0"])
def test_a_q8_0_tag_of_no_known_tag_is_unknown(text: str) -> None:
    assert lookup(parse_name(text)) is None
