import dataclasses

import pytest

from modelstore.names import InvalidName, ModelName, parse_name

MINILM = ModelName("registry.ollama.ai", "library", "all-minilm", "latest")


@pytest.mark.parametrize(
    "text",
    [
        "all-minilm",
        "all-minilm:latest",
        "library/all-minilm",
        "registry.ollama.ai/library/all-minilm:latest",
        "  all-minilm\n",
        "\tlibrary/all-minilm:latest ",
    ],
)
def test_default_parts_are_filled(text: str) -> None:
    name = parse_name(text)
    assert name == MINILM
    assert name.key == MINILM.key
    assert name.display == "all-minilm:latest"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("All-MiniLM", "all-minilm"),
        ("REGISTRY.OLLAMA.AI/Library/all-minilm:LATEST", "all-minilm"),
        ("hf.co/Nomic-AI/Nomic-Embed-Text-v1.5", "HF.CO/nomic-ai/nomic-embed-text-v1.5:latest"),
    ],
)
def test_key_is_case_insensitive_and_case_is_preserved(a: str, b: str) -> None:
    left, right = parse_name(a), parse_name(b)
    assert left.key == right.key
    assert left != right
    assert left.path_parts != right.path_parts


def test_key_tells_different_models_apart() -> None:
    assert parse_name("all-minilm").key != parse_name("all-minilm:l6-v2").key
    assert parse_name("all-minilm").key != parse_name("chroma/all-minilm").key


@pytest.mark.parametrize(
    ("text", "parts", "display"),
    [
        (
            "chroma/all-minilm-l6-v2-f32",
            ("registry.ollama.ai", "chroma", "all-minilm-l6-v2-f32", "latest"),
            "chroma/all-minilm-l6-v2-f32:latest",
        ),
        (
            "All-MiniLM:L6-v2",
            ("registry.ollama.ai", "library", "All-MiniLM", "L6-v2"),
            "All-MiniLM:L6-v2",
        ),
        (
            "hf.co/nomic-ai/nomic-embed-text-v1.5",
            ("hf.co", "nomic-ai", "nomic-embed-text-v1.5", "latest"),
            "hf.co/nomic-ai/nomic-embed-text-v1.5:latest",
        ),
        (
            "hf.co/sentence-transformers/all-MiniLM-L6-v2:Q8_0",
            ("hf.co", "sentence-transformers", "all-MiniLM-L6-v2", "Q8_0"),
            "hf.co/sentence-transformers/all-MiniLM-L6-v2:Q8_0",
        ),
        (
            "huggingface.co/BAAI/bge-small-en-v1.5:f16",
            ("huggingface.co", "BAAI", "bge-small-en-v1.5", "f16"),
            "huggingface.co/BAAI/bge-small-en-v1.5:f16",
        ),
        (
            "localhost:5000/ns/m:tag",
            ("localhost:5000", "ns", "m", "tag"),
            "localhost:5000/ns/m:tag",
        ),
        (
            "localhost:5000/ns/m",
            ("localhost:5000", "ns", "m", "latest"),
            "localhost:5000/ns/m:latest",
        ),
        # A non-default host keeps the "library" namespace in the display, as Ollama's DisplayShortest does.
        (
            "example.com/library/m",
            ("example.com", "library", "m", "latest"),
            "example.com/library/m:latest",
        ),
        # Ollama strips a URL scheme from the host.
        (
            "https://hf.co/nomic-ai/nomic-embed-text-v1.5:Q4_K_M",
            ("hf.co", "nomic-ai", "nomic-embed-text-v1.5", "Q4_K_M"),
            "hf.co/nomic-ai/nomic-embed-text-v1.5:Q4_K_M",
        ),
    ],
)
def test_parts_and_display(text: str, parts: tuple[str, str, str, str], display: str) -> None:
    name = parse_name(text)
    assert name.path_parts == parts
    assert (name.host, name.namespace, name.model, name.tag) == parts
    assert name.display == display
    assert parse_name(name.display) == name


@pytest.mark.parametrize(
    ("text", "repo"),
    [
        ("hf.co/nomic-ai/nomic-embed-text-v1.5", "nomic-ai/nomic-embed-text-v1.5"),
        ("HF.co/BAAI/bge-m3:Q8_0", "BAAI/bge-m3"),
        ("huggingface.co/sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
        ("all-minilm", None),
        ("hf/nomic-embed-text", None),
        ("example.com/nomic-ai/nomic-embed-text-v1.5", None),
    ],
)
def test_huggingface(text: str, repo: str | None) -> None:
    name = parse_name(text)
    assert name.is_huggingface is (repo is not None)
    assert name.hf_repo == repo


@pytest.mark.parametrize(
    ("text", "cloud"),
    [
        ("gpt-oss:cloud", True),
        ("gpt-oss:120b-cloud", True),
        ("gpt-oss:120B-CLOUD", True),
        ("ns/model:Cloud", True),
        ("cloud", False),
        ("cloud-embed", False),
        ("all-minilm:cloudy", False),
        ("all-minilm:latest", False),
    ],
)
def test_is_cloud(text: str, cloud: bool) -> None:
    assert parse_name(text).is_cloud is cloud


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "bad name!",
        "a b",
        "a/../b",
        "..",
        "../x",
        "x/..",
        ".hidden",
        "/abs/path",
        "/model",
        "model/",
        "a//b",
        "a/b/c/d",
        "m@sha256:abc",
        "@sha256:abc",
        "x:",
        ":tag",
        "a/:tag",
        "a\\b",
        "..\\x",
        "m" * 81,
        "m:" + "t" * 81,
        "n" * 81 + "/m",
        "h" * 351 + "/n/m",
        "ns.with.dot/model",
        "hf.co/org.with.dot/repo",
        "-model",
        "model:-tag",
        "model:.tag",
        "ns/model:ta:g",
        "mödel",
        "model\x00",
        "h" * 256 + "/n/m",
        "h" * 350 + "/n/m",
    ],
)
def test_invalid_names(text: str) -> None:
    with pytest.raises(InvalidName):
        parse_name(text)


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("m" * 80, ("registry.ollama.ai", "library", "m" * 80, "latest")),
        ("m:" + "t" * 80, ("registry.ollama.ai", "library", "m", "t" * 80)),
        ("n" * 80 + "/m", ("registry.ollama.ai", "n" * 80, "m", "latest")),
        # Ollama allows a 350-character host; a store folder name holds 255 bytes.
        ("h" * 255 + "/n/m", ("h" * 255, "n", "m", "latest")),
        ("_/_/_:_", ("_", "_", "_", "_")),
        ("a..b", ("registry.ollama.ai", "library", "a..b", "latest")),
    ],
)
def test_limits_accept_the_maximum(text: str, parts: tuple[str, str, str, str]) -> None:
    assert parse_name(text).path_parts == parts


def test_invalid_name_is_a_value_error() -> None:
    assert issubclass(InvalidName, ValueError)


@pytest.mark.parametrize(
    "parts",
    [
        ("registry.ollama.ai", "library", "..", "latest"),
        ("registry.ollama.ai", "a/b", "m", "latest"),
        ("", "library", "m", "latest"),
        ("registry.ollama.ai", "library", "m", ""),
    ],
)
def test_direct_construction_is_validated(parts: tuple[str, str, str, str]) -> None:
    with pytest.raises(InvalidName):
        ModelName(*parts)


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        MINILM.model = "other"  # type: ignore[misc]
