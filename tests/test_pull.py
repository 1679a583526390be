"""POST /api/pull end to end: a real `ovembed serve`, the real huggingface_hub inside it, and the fake hub.

The fake hub runs in a thread of this process; each daemon is a subprocess that reaches it over loopback
(`HF_ENDPOINT`). Every test pulls a repo id of its own, so one module daemon serves most tests without one
test's download cache or store entries changing another's; tests that need a fresh store or a special
environment (SIGKILL, a token) start their own. Request counts come from the hub's own log.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import ollama
import onnx
import pytest
from onnx import numpy_helper
from onnx.external_data_helper import set_external_data

from daemon.shared_pulls import ShuttingDown
from modelstore.names import parse_name
from modelstore.sizes import human_bytes
from modelstore.store import ModelStore
from tests.conftest import (
    MINILM,
    REFERENCE,
    Daemon,
    require_shared,
    sigterm_while_busy,
    start_daemon,
    stop_daemon,
)
from tests.fakehub import LFS_THRESHOLD, FakeHub, running_hub
from tests.test_convert import FIXTURES, minilm_checkpoint, shard_checkpoint
from tests.test_metrics import scrape
from tests.tinymodel import build_tiny_model, reference_vectors

MIN_COSINE = 0.99999
TEXTS = [
    "the water is cold in the morning",
    "a little boy read a great book",
    "my mother and father live near the sea",
    "how many people work in this house",
    "write your name on the first line",
]
# What ovembed needs of a sentence-transformers repo besides the network.
CONFIGS = (
    "1_Pooling/config.json",
    "config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
)
# Files a repo also carries that a pull must never fetch: PyTorch weights and other exports.
NEVER_FETCHED = ("model.safetensors", "pytorch_model.bin", "README.md", "onnx/model_quantized.onnx")
PICKLES = ("pytorch_model.bin", "README.md")
FINAL_STATUSES = ["verifying sha256 digest", "converting to OpenVINO IR", "writing manifest", "success"]
LAYER_STATUS = re.compile(r"pulling ([0-9a-f]{12})")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha1:[0-9a-f]{40}")


# ---------------------------------------------------------------------------------------------- models


def _add_unused_weights(folder: Path, names: tuple[str, ...] = NEVER_FETCHED) -> Path:
    """What real repos carry beside their exports; garbage, so a pull that used them would fail."""
    rng = random.Random(folder.name)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(rng.randbytes(4096))
    return folder


def _bge_m3_like(dest: Path, seed: int) -> Path:
    """bge-m3's layout: onnx/ holds the graph, `model.onnx_data`, a loose extensionless tensor file and the
    only tokenizer.json (none at the root), plus files the engine does not use."""
    build_tiny_model(dest, seed=seed)
    graph_path = dest / "onnx" / "model.onnx"
    model = onnx.load(graph_path)
    for tensor in model.graph.initializer:
        set_external_data(tensor, "Constant_7_attr__value" if tensor.name == "dense.bias" else "model.onnx_data")
    onnx.save_model(model, graph_path)
    (dest / "tokenizer.json").rename(dest / "onnx" / "tokenizer.json")
    shutil.copy(dest / "config.json", dest / "onnx" / "config.json")
    (dest / "onnx" / "sentencepiece.bpe.model").write_bytes(b"\x00" * 512)
    assert (dest / "onnx" / "Constant_7_attr__value").is_file()
    return dest


def _padded(folder: Path) -> Path:
    """Grow onnx/model.onnx past the hub's LFS threshold with an initializer no node reads, so the pull shows
    a sha256 digest for it beside the configs' sha1 ones. (A wider network would do it too, but numpy's
    threaded BLAS can hang once openvino is imported, and the reference vectors need numpy.)"""
    graph_path = folder / "onnx" / "model.onnx"
    model = onnx.load(graph_path)
    padding = np.random.default_rng(0).random(LFS_THRESHOLD // 4 + 50_000, dtype=np.float32)
    model.graph.initializer.append(numpy_helper.from_array(padding, "unused_padding"))
    onnx.save_model(model, graph_path)
    return folder


def _with_config(source: Path, dest: Path, **changes: Any) -> Path:
    folder = shutil.copytree(source, dest)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return folder


def _hub_digest(path: Path) -> str:
    """The digest the pull stream shows for a file: sha256 for the hub's LFS files, the git blob sha1 else."""
    data = path.read_bytes()
    if len(data) >= LFS_THRESHOLD:
        return "sha256:" + hashlib.sha256(data).hexdigest()
    return "sha1:" + hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Models:
    """The folders the hub serves and the vectors each must give."""

    def __init__(self, root: Path) -> None:
        self.tiny = _add_unused_weights(_padded(build_tiny_model(root / "tiny")))
        self.ext = _add_unused_weights(build_tiny_model(root / "ext", external_data=True, seed=3))
        self.ir = _add_unused_weights(build_tiny_model(root / "ir", source="openvino", seed=4))
        # An onnx/ export of different weights beside the IR: used by mistake, it would give wrong vectors.
        shutil.copytree(build_tiny_model(root / "other", seed=9) / "onnx", self.ir / "onnx", dirs_exist_ok=True)
        # PyTorch pickles and nothing else: no export, and no safetensors for ovembed to convert.
        self.none = _add_unused_weights(build_tiny_model(root / "none", source="none"), PICKLES)
        # A safetensors checkpoint only (sentence-transformers 6 layout), whole, sharded, and of an architecture
        # ovembed does not convert.
        self.checkpoint = _add_unused_weights(shutil.copytree(FIXTURES / "bert-mean", root / "checkpoint"), PICKLES)
        self.sharded = shard_checkpoint(FIXTURES / "bert-mean", root / "sharded", shards=3)
        self.qwen3 = _add_unused_weights(shutil.copytree(FIXTURES / "qwen3-lasttoken", root / "qwen3"), PICKLES)
        self.gemma = _add_unused_weights(shutil.copytree(FIXTURES / "gemma3-dense", root / "gemma"), PICKLES)
        self.dense = _add_unused_weights(
            shutil.copytree(FIXTURES / "bert-dense", root / "dense"), (*PICKLES, "2_Dense/pytorch_model.bin")
        )
        (self.sharded / "model-00009-of-00009.safetensors").write_bytes(b"a stray shard the index does not name")
        self.reranker = _add_unused_weights(shutil.copytree(FIXTURES / "bert-rerank", root / "reranker"), PICKLES)
        self.qwen3_reranker = _add_unused_weights(
            shutil.copytree(FIXTURES / "qwen3-rerank", root / "qwen3-reranker"), PICKLES
        )
        self.gpt2 = _with_config(FIXTURES / "bert-mean", root / "gpt2", model_type="gpt2")
        self.yarn = _with_config(
            FIXTURES / "qwen3-lasttoken", root / "yarn", rope_parameters={"rope_type": "yarn", "factor": 4.0}
        )
        self.garbage = build_tiny_model(root / "garbage", seed=6)
        (self.garbage / "onnx" / "model.onnx").write_bytes(random.Random(6).randbytes(50_000))
        self.reference = {folder: reference_vectors(folder, TEXTS) for folder in (self.tiny, self.ext, self.ir)}
        plain = build_tiny_model(root / "m3-reference", seed=7)
        self.reference[root / "m3"] = reference_vectors(plain, TEXTS)
        self.m3 = _bge_m3_like(root / "m3", seed=7)
        (self.m3 / "onnx" / "model_quantized.onnx").write_bytes(b"not a network")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return Models(tmp_path_factory.mktemp("pull-models"))


# Repo id -> which folder it serves. One repo per test, so no test sees another's cache or store entries.
REPOS = {
    "ovembed-test/tiny": "tiny",
    "ovembed-test/ext": "ext",
    "ovembed-test/bge-m3-like": "m3",
    "ovembed-test/tiny-ir": "ir",
    "ovembed-test/nonet": "none",
    "ovembed-test/garbage": "garbage",
    "ovembed-test/python-client": "tiny",
    "ovembed-test/python-stream": "tiny",
    "ovembed-test/fault500": "ext",
    "ovembed-test/cut": "tiny",
    "ovembed-test/cut-many": "ext",
    "ovembed-test/kept": "ext",
    "ovembed-test/busy": "tiny",
    "ovembed-test/abandoned": "tiny",
    "ovembed-test/rejoined": "tiny",
    "ovembed-test/together": "tiny",
    "ovembed-test/again": "ext",
    "ovembed-test/killed": "ext",
    "ovembed-test/cli": "ext",
    "ovembed-test/js": "ext",
    "ovembed-test/checkpoint": "checkpoint",
    "ovembed-test/sharded": "sharded",
    "ovembed-test/gpt2": "gpt2",
    "ovembed-test/yarn": "yarn",
    "ovembed-test/dense": "dense",
    "ovembed-test/reranker": "reranker",
}
GATED = "ovembed-test/gated"


@pytest.fixture(scope="module")
def hub(models: Models) -> FakeHub:
    fake = FakeHub()
    for repo, attribute in REPOS.items():
        fake.add_repo(repo, getattr(models, attribute))
    fake.add_repo(GATED, models.ext, gated=True)
    return fake


@pytest.fixture(scope="module")
def hub_url(hub: FakeHub) -> Iterator[str]:
    with running_hub(hub) as url:
        yield url


@pytest.fixture(autouse=True)
def _no_faults_left(hub: FakeHub) -> Iterator[None]:
    yield
    hub.clear_faults()


def start_pull_daemon(root: Path, hub_url: str, **env: str) -> Daemon:
    """A daemon that may reach the fake hub; HF_HOME and HF_TOKEN are its own, never the user's."""
    settings = {"HF_ENDPOINT": hub_url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(root / "hf-home"), "HF_TOKEN": ""}
    return start_daemon(root, **{**settings, **env})


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, hub_url: str) -> Iterator[Daemon]:
    """fp32, so pulled tiny models can be held to the float64 reference at 0.99999."""
    running = start_pull_daemon(tmp_path_factory.mktemp("pull-daemon"), hub_url, OVEMBED_PRECISION="fp32")
    yield running
    stop_daemon(running)


# ---------------------------------------------------------------------------------------------- helpers


def _tensor_bytes(folder: Path, files: tuple[str, ...]) -> int:
    """The tensor data in the safetensors files among `files`, read off their headers."""
    total = 0
    for path in (folder / name for name in files if name.endswith(".safetensors")):
        with path.open("rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        total += sum(
            end - begin
            for key, info in header.items()
            if key != "__metadata__"
            for begin, end in [info["data_offsets"]]
        )
    return total


def stream_pull(daemon: Daemon, model: str, **body: Any) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """A streamed pull read to its end; every line must be one JSON object, with no blank lines."""
    with httpx.stream("POST", f"{daemon.url}/api/pull", json={"model": model, **body}, timeout=120) as response:
        raw = response.read()
    if response.status_code != 200:
        return response, [response.json()]
    assert raw.endswith(b"\n"), raw[-200:]
    lines = raw.split(b"\n")[:-1]
    assert all(line.strip() for line in lines), raw
    messages = [json.loads(line) for line in lines]
    assert all(isinstance(m, dict) for m in messages)
    return response, messages


def pull(daemon: Daemon, model: str, field: str = "model") -> httpx.Response:
    return httpx.post(f"{daemon.url}/api/pull", json={field: model, "stream": False}, timeout=120)


def listed(daemon: Daemon) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in httpx.get(f"{daemon.url}/api/tags", timeout=30).json()["models"]}


def embed(daemon: Daemon, model: str, texts: list[str]) -> np.ndarray:
    response = httpx.post(f"{daemon.url}/api/embed", json={"model": model, "input": texts}, timeout=120)
    assert response.status_code == 200, response.text
    return np.array(response.json()["embeddings"], dtype=np.float64)


def assert_embeds_like(daemon: Daemon, model: str, expected: np.ndarray) -> None:
    got = embed(daemon, model, TEXTS)
    assert got.shape == expected.shape
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosines = (got * expected).sum(axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= MIN_COSINE, cosines


def file_gets(hub: FakeHub, repo: str) -> Counter[str]:
    """How often each file of `repo` was downloaded (GET on /resolve/), by its path in the repo."""
    prefix = f"/{repo}/resolve/"
    return Counter(path[len(prefix) :].split("/", 1)[1] for path in hub.resolve_gets() if path.startswith(prefix))


def hub_requests(hub: FakeHub, repo: str) -> list[tuple[str, str]]:
    return [(method, path) for method, path in hub.requests if f"/{repo}/" in path or path.endswith(f"/{repo}")]


def partial_files(daemon: Daemon) -> list[Path]:
    return list((daemon.models_dir / "downloads").rglob("*.incomplete"))


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def layer_messages(messages: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Progress messages grouped by digest, in stream order."""
    layers: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        if "digest" in message:
            layers.setdefault(message["digest"], []).append(message)
    return layers


def planned(folder: Path, network: tuple[str, ...]) -> dict[str, str]:
    """The files a pull of `folder` should fetch, path -> digest as the stream shows it."""
    paths = [*network, *(p for p in CONFIGS if (folder / p).is_file())]
    return {path: _hub_digest(folder / path) for path in paths}


# ---------------------------------------------------------------------------------------------- success


def test_streamed_pull_reports_ollama_progress_then_embeds(daemon: Daemon, hub: FakeHub, models: Models) -> None:
    repo = "ovembed-test/tiny"
    response, messages = stream_pull(daemon, f"hf.co/{repo}")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert messages[0] == {"status": "pulling manifest"}
    assert [m["status"] for m in messages[-4:]] == FINAL_STATUSES
    assert all(set(m) == {"status"} for m in messages[-4:])
    assert not any("error" in m for m in messages)

    want = planned(models.tiny, ("onnx/model.onnx",))
    layers = layer_messages(messages)
    assert set(layers) == set(want.values())
    assert want["onnx/model.onnx"].startswith("sha256:")  # an LFS file, as the hub lists it
    assert want["config.json"].startswith("sha1:")  # a plain git file: only its blob id is known
    first_layer = next(m for m in messages if "digest" in m)
    assert first_layer["digest"] == want["onnx/model.onnx"]  # the network first, as Ollama lists the model layer
    sizes = {want[path]: (models.tiny / path).stat().st_size for path in want}
    for digest, updates in layers.items():
        assert DIGEST.fullmatch(digest)
        for update in updates:
            assert set(update) == {"status", "digest", "total", "completed"}
            assert LAYER_STATUS.fullmatch(update["status"])
            assert update["status"] == f"pulling {digest.split(':')[1][:12]}"
            assert update["total"] == sizes[digest]
        completed = [u["completed"] for u in updates]
        assert completed == sorted(completed), (digest, completed)
        assert completed[0] == 0 and completed[-1] == sizes[digest]
    # Layers follow one another: no layer's updates are interleaved with another's.
    order = [m["digest"] for m in messages if "digest" in m]
    assert [d for i, d in enumerate(order) if i == 0 or order[i - 1] != d] == list(dict.fromkeys(order))

    assert file_gets(hub, repo) == Counter(list(want))  # each planned file once, nothing else
    assert not (daemon.models_dir / "downloads" / "models--ovembed-test--tiny").exists()

    again = pull(daemon, f"hf.co/{repo}")
    assert (again.status_code, again.json()) == (200, {"status": "success"})
    assert file_gets(hub, repo) == Counter(list(want))

    item = listed(daemon)[f"hf.co/{repo}:latest"]
    assert item["details"]["format"] == "openvino"
    assert_embeds_like(daemon, f"hf.co/{repo}", models.reference[models.tiny])


@pytest.mark.parametrize(
    ("repo", "network"),
    [
        ("ovembed-test/ext", ("onnx/model.onnx", "onnx/model.onnx_data")),
        (
            "ovembed-test/bge-m3-like",
            ("onnx/model.onnx", "onnx/model.onnx_data", "onnx/Constant_7_attr__value", "onnx/tokenizer.json"),
        ),
    ],
)
def test_onnx_with_external_data_pulls_and_embeds(
    daemon: Daemon, hub: FakeHub, models: Models, repo: str, network: tuple[str, ...]
) -> None:
    folder = getattr(models, REPOS[repo])
    response = pull(daemon, f"hf.co/{repo}")

    assert (response.status_code, response.json()) == (200, {"status": "success"})
    assert file_gets(hub, repo) == Counter(list(planned(folder, network)))
    assert_embeds_like(daemon, f"hf.co/{repo}", models.reference[folder])


def test_openvino_repo_fetches_only_its_ir(daemon: Daemon, hub: FakeHub, models: Models) -> None:
    repo = "ovembed-test/tiny-ir"
    response = pull(daemon, f"hf.co/{repo}")

    assert (response.status_code, response.json()) == (200, {"status": "success"})
    gets = file_gets(hub, repo)
    assert gets == Counter(list(planned(models.ir, ("openvino/openvino_model.xml", "openvino/openvino_model.bin"))))
    assert not [path for path in gets if path.startswith("onnx/") or path in NEVER_FETCHED]
    # The repo's onnx/ holds other weights: these vectors prove the IR was served.
    assert_embeds_like(daemon, f"hf.co/{repo}", models.reference[models.ir])


def _fixture_reference() -> tuple[list[str], np.ndarray]:
    texts = json.loads((FIXTURES / "bert-mean" / "texts.json").read_text(encoding="utf-8"))
    return texts, np.load(FIXTURES / "bert-mean" / "reference.npy").astype(np.float64)


def _assert_cosines(got: np.ndarray, expected: np.ndarray, minimum: float) -> None:
    cosines = (got * expected).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= minimum, cosines


@pytest.mark.parametrize(
    ("repo", "network"),
    [
        ("ovembed-test/checkpoint", ("model.safetensors",)),
        (
            "ovembed-test/sharded",
            (
                "model.safetensors.index.json",
                "model-00001-of-00003.safetensors",
                "model-00002-of-00003.safetensors",
                "model-00003-of-00003.safetensors",
            ),
        ),
    ],
)
def test_a_safetensors_only_repo_is_converted_by_ovembed(
    daemon: Daemon, hub: FakeHub, models: Models, repo: str, network: tuple[str, ...]
) -> None:
    folder = models.checkpoint if repo.endswith("checkpoint") else models.sharded
    pulled_before = scrape(daemon).get(("ovembed_pull_bytes_total", ()), 0.0)
    _, messages = stream_pull(daemon, f"hf.co/{repo}")
    layers = {m["digest"]: m["total"] for m in messages if m.get("digest")}
    assert scrape(daemon)[("ovembed_pull_bytes_total", ())] - pulled_before == sum(layers.values())

    statuses = [m["status"] for m in messages]
    first = statuses.index(FINAL_STATUSES[0])
    assert [s for i, s in enumerate(statuses[first:], first) if s != statuses[i - 1]] == FINAL_STATUSES
    # The conversion counts the checkpoint's tensor bytes as it reads them, up to all of them.
    converting = [m for m in messages if m["status"] == FINAL_STATUSES[1] and "total" in m]
    assert converting, messages
    assert converting[-1]["completed"] == converting[-1]["total"] == _tensor_bytes(folder, network)
    assert all("digest" not in m for m in converting)
    want = planned(folder, network)
    assert file_gets(hub, repo) == Counter(list(want))  # the checkpoint and configs once; never the pickle
    texts, expected = _fixture_reference()
    _assert_cosines(embed(daemon, f"hf.co/{repo}", texts), expected, MIN_COSINE)
    shown = httpx.post(f"{daemon.url}/api/show", json={"model": f"hf.co/{repo}"}, timeout=30).json()
    assert shown["details"]["quantization_level"] == "FP16"  # converted checkpoints store fp16 weights


def test_a_cross_encoder_repo_pulls_as_a_reranker_that_scores_as_its_create_does(
    daemon: Daemon, hub: FakeHub, models: Models
) -> None:
    repo = "ovembed-test/reranker"
    assert pull(daemon, f"hf.co/{repo}").json() == {"status": "success"}
    assert file_gets(hub, repo)["model.safetensors"] == 1 and not file_gets(hub, repo)["pytorch_model.bin"]
    daemon.create("reranker-created", models.reranker)
    query, documents = "why is the sky blue?", ["blue light scatters", "a fox", "the sky at noon"]

    def scores(model: str) -> list[tuple[int, float]]:
        body = {"model": model, "query": query, "documents": documents}
        results = httpx.post(f"{daemon.url}/api/rerank", json=body, timeout=30).json()["results"]
        return [(r["index"], r["relevance_score"]) for r in results]

    assert scores(f"hf.co/{repo}") == scores("reranker-created")
    shown = httpx.post(f"{daemon.url}/api/show", json={"model": f"hf.co/{repo}"}, timeout=30).json()
    assert shown["capabilities"] == ["rerank"]


def test_dense_modules_are_fetched_and_applied(daemon: Daemon, hub: FakeHub, models: Models) -> None:
    repo = "ovembed-test/dense"
    response = pull(daemon, f"hf.co/{repo}")
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    gets = file_gets(hub, repo)
    assert {"2_Dense/config.json", "2_Dense/model.safetensors", "3_Dense/model.safetensors"} <= set(gets)
    assert "2_Dense/pytorch_model.bin" not in gets
    texts = json.loads((FIXTURES / "bert-dense" / "texts.json").read_text(encoding="utf-8"))
    expected = np.load(FIXTURES / "bert-dense" / "reference.npy").astype(np.float64)
    _assert_cosines(embed(daemon, f"hf.co/{repo}", texts), expected, MIN_COSINE)


@pytest.mark.parametrize(
    ("repo", "words"),
    [
        ("ovembed-test/gpt2", ["only a safetensors checkpoint", "does not convert gpt2", "bert"]),
        ("ovembed-test/yarn", ["only a safetensors checkpoint", "rotary embedding type 'yarn'"]),
    ],
)
def test_what_is_not_converted_is_refused_on_its_config_alone(
    daemon: Daemon, hub: FakeHub, repo: str, words: list[str]
) -> None:
    response = pull(daemon, f"hf.co/{repo}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert all(word in error for word in words), error
    assert file_gets(hub, repo) == Counter({"config.json": 1})  # never the weights
    assert f"hf.co/{repo}:latest" not in listed(daemon)


def test_qwen3_embedding_4b_pulls_its_checkpoint_as_int8_and_its_int4_and_fp16_tags_apart(
    daemon: Daemon, hub: FakeHub, models: Models
) -> None:
    """The catalog's Qwen/Qwen3-Embedding-4B, played by the tiny Qwen3 fixture: the default tag converts the
    checkpoint with int8 weight matrices, `4b-q8_0` is the same model, `4b-q4_K_M` (int4) and `4b-fp16` are
    others."""
    repo = "Qwen/Qwen3-Embedding-4B"
    hub.add_repo(repo, models.qwen3)
    texts = json.loads((FIXTURES / "qwen3-lasttoken" / "texts.json").read_text(encoding="utf-8"))
    expected = np.load(FIXTURES / "qwen3-lasttoken" / "reference.npy").astype(np.float64)
    floors = {"INT8": 0.999, "INT4": 0.97, "FP16": 0.9999}
    for tag, level in (("4b", "INT8"), ("4b-q8_0", "INT8"), ("4b-q4_K_M", "INT4"), ("4b-fp16", "FP16")):
        response = pull(daemon, f"qwen3-embedding:{tag}")
        assert (response.status_code, response.json()) == (200, {"status": "success"}), (tag, response.text)
        shown = httpx.post(f"{daemon.url}/api/show", json={"model": f"qwen3-embedding:{tag}"}, timeout=30).json()
        assert shown["details"]["quantization_level"] == level
        _assert_cosines(embed(daemon, f"qwen3-embedding:{tag}", texts), expected, floors[level])
    # q8_0 is a copy of the default tag; the others are conversions of their own (downloads are dropped after one).
    assert file_gets(hub, repo)["model.safetensors"] == 3
    names = listed(daemon)
    assert names["qwen3-embedding:4b"]["digest"] == names["qwen3-embedding:4b-q8_0"]["digest"]
    assert names["qwen3-embedding:4b"]["digest"] != names["qwen3-embedding:4b-fp16"]["digest"]


def test_qwen3_reranker_pulls_by_its_catalog_name_and_scores_as_its_model_card(
    daemon: Daemon, hub: FakeHub, models: Models
) -> None:
    """The catalog's Qwen/Qwen3-Reranker-0.6B, played by the tiny Qwen3 language model: its config says only
    that it is a causal LM, and the catalog makes it a reranker (stored fp16 weights, as the 0.6b tag asks)."""
    hub.add_repo("Qwen/Qwen3-Reranker-0.6B", models.qwen3_reranker)
    response = pull(daemon, "qwen3-reranker:0.6b")
    assert (response.status_code, response.json()) == (200, {"status": "success"}), response.text
    pairs = json.loads((FIXTURES / "qwen3-rerank" / "pairs.json").read_text(encoding="utf-8"))
    expected = np.load(FIXTURES / "qwen3-rerank" / "scores.npy")
    query = pairs[0][0]
    documents = [d for q, d in pairs if q == query]
    body = {"model": "qwen3-reranker:0.6b", "query": query, "documents": documents}
    results = httpx.post(f"{daemon.url}/api/rerank", json=body, timeout=60).json()["results"]
    scores = np.array([r["relevance_score"] for r in sorted(results, key=lambda r: r["index"])])
    assert np.abs(scores - expected[: len(documents)]).max() < 0.01  # fp16 weights
    shown = httpx.post(f"{daemon.url}/api/show", json={"model": "qwen3-reranker:0.6b"}, timeout=30).json()
    assert shown["capabilities"] == ["rerank"] and shown["details"]["quantization_level"] == "FP16"


def test_two_tags_of_one_model_pulled_at_once_convert_once(daemon: Daemon, hub: FakeHub, models: Models) -> None:
    """`bge-reranker-base` and `bge-reranker-base:278m` at the same moment: the second waits for the first's lock,
    then finds the model and copies it, instead of downloading and converting it again."""
    repo = "BAAI/bge-reranker-base"
    hub.add_repo(repo, models.reranker)
    hub.slow("model.safetensors", (models.reranker / "model.safetensors").stat().st_size / 2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda tag: pull(daemon, f"bge-reranker-base:{tag}"), ("latest", "278m")))
    hub.clear_faults()
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"status": "success"})] * 2
    assert file_gets(hub, repo)["model.safetensors"] == 1
    names = listed(daemon)
    assert names["bge-reranker-base:latest"]["digest"] == names["bge-reranker-base:278m"]["digest"]


def test_a_mirrored_model_pulls_once_and_its_other_tags_are_copies(
    daemon: Daemon, hub: FakeHub, models: Models
) -> None:
    """qwen3-embedding:0.6b: the repo has nothing to convert, the catalog's OpenVINO mirror has the IR."""
    hub.add_repo("Qwen/Qwen3-Embedding-0.6B", models.none)
    hub.add_repo("OpenVINO/Qwen3-Embedding-0.6B-fp16-ov", models.ir)
    for tag in ("0.6b", "0.6b", "0.6b-fp16"):
        response = pull(daemon, f"qwen3-embedding:{tag}")
        assert (response.status_code, response.json()) == (200, {"status": "success"}), (tag, response.text)
    assert file_gets(hub, "OpenVINO/Qwen3-Embedding-0.6B-fp16-ov")["openvino/openvino_model.bin"] == 1
    names = listed(daemon)
    assert names["qwen3-embedding:0.6b"]["digest"] == names["qwen3-embedding:0.6b-fp16"]["digest"]


def test_the_real_minilm_checkpoint_pulls_and_matches_sentence_transformers(daemon: Daemon, hub: FakeHub) -> None:
    """all-MiniLM-L6-v2's own safetensors, served as a repo with nothing else to convert."""
    require_shared()
    repo = "ovembed-test/minilm-safetensors"
    hub.add_repo(repo, minilm_checkpoint())
    response = pull(daemon, f"hf.co/{repo}")
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    assert "model.safetensors" in file_gets(hub, repo)
    rows = [json.loads(line) for line in (REFERENCE / "all-MiniLM-L6-v2.texts.jsonl").read_text().splitlines()]
    expected = np.load(REFERENCE / "all-MiniLM-L6-v2.npy").astype(np.float64)
    _assert_cosines(embed(daemon, f"hf.co/{repo}", [row["text"] for row in rows]), expected, MIN_COSINE)


def test_ollama_python_client_pulls(daemon: Daemon, models: Models) -> None:
    client = ollama.Client(host=daemon.url, timeout=120)

    done = client.pull("hf.co/ovembed-test/python-client")
    assert isinstance(done, ollama.ProgressResponse)
    assert done.status == "success"

    progress = list(client.pull("hf.co/ovembed-test/python-stream", stream=True))
    assert progress[0].status == "pulling manifest"
    assert progress[-1].status == "success"
    layers = [p for p in progress if p.digest]
    assert layers and all(p.total and p.completed is not None for p in layers)
    assert layers[-1].completed == layers[-1].total

    with pytest.raises(ollama.ResponseError) as streamed:
        list(client.pull("hf.co/ovembed-test/missing", stream=True))
    assert "ovembed-test/missing" in streamed.value.error
    with pytest.raises(ollama.ResponseError) as waited:
        client.pull("hf.co/ovembed-test/missing")
    assert waited.value.status_code == 404

    names = {m.model for m in client.list().models}
    assert {"hf.co/ovembed-test/python-client:latest", "hf.co/ovembed-test/python-stream:latest"} <= names
    vectors = np.array(client.embed(model="hf.co/ovembed-test/python-client", input=TEXTS).embeddings)
    assert (vectors * models.reference[models.tiny]).sum(axis=1).min() >= MIN_COSINE


# ---------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("model", "status", "words"),
    [
        ("nosuchmodel", 404, ["nosuchmodel"]),
        ("hf.co/ovembed-test/missing", 404, ["file does not exist", "ovembed-test/missing"]),
        # A catalog name whose repo the hub does not have.
        ("mxbai-embed-large", 404, ["file does not exist", "mixedbread-ai/mxbai-embed-large-v1"]),
        ("hf.co/ovembed-test/tiny:nosuchrev", 404, ["file does not exist", "nosuchrev"]),
        (
            "hf.co/ovembed-test/nonet",
            400,
            ["openvino/openvino_model.xml", "onnx/model.onnx", "model.safetensors", "optimum-cli"],
        ),
    ],
)
def test_pulls_that_cannot_succeed_fail_at_once(
    daemon: Daemon, hub: FakeHub, model: str, status: int, words: list[str]
) -> None:
    gets_before = len(hub.resolve_gets())
    started = time.monotonic()
    response = pull(daemon, model)
    _, messages = stream_pull(daemon, model)
    elapsed = time.monotonic() - started

    assert response.status_code == status
    error = response.json()["error"]
    assert all(word in error for word in words), error
    assert messages == [{"status": "pulling manifest"}, {"error": error}]
    assert len(hub.resolve_gets()) == gets_before  # refused before downloading anything
    assert elapsed < 5
    assert parse_name(model).display not in listed(daemon)


def test_embeddinggemma_is_gated_then_converted_with_its_dense_layers(
    daemon: Daemon, hub_url: str, hub: FakeHub, models: Models, tmp_path: Path
) -> None:
    """google/embeddinggemma-300m, played by the tiny bidirectional Gemma3 fixture with two Dense layers."""
    repo = "google/embeddinggemma-300m"
    hub.add_repo(repo, models.gemma, gated=True)
    response = pull(daemon, "embeddinggemma")
    assert response.status_code == 404
    error = response.json()["error"]
    assert "gated" in error and "HF_TOKEN" in error, error

    with_token = start_pull_daemon(tmp_path, hub_url, HF_TOKEN=hub.token, OVEMBED_PRECISION="fp32")
    try:
        for tag, level in (("latest", "FP16"), ("300m-qat-q8_0", "INT8")):
            response = pull(with_token, f"embeddinggemma:{tag}")
            assert (response.status_code, response.json()) == (200, {"status": "success"}), (tag, response.text)
            url = f"{with_token.url}/api/show"
            shown = httpx.post(url, json={"model": f"embeddinggemma:{tag}"}, timeout=30).json()
            assert shown["details"]["quantization_level"] == level
            texts = json.loads((FIXTURES / "gemma3-dense" / "texts.json").read_text(encoding="utf-8"))
            expected = np.load(FIXTURES / "gemma3-dense" / "reference.npy").astype(np.float64)
            minimum = MIN_COSINE if level == "FP16" else 0.999
            _assert_cosines(embed(with_token, f"embeddinggemma:{tag}", texts), expected, minimum)
    finally:
        stop_daemon(with_token)


@pytest.mark.parametrize("model", ["../x", "/abs", "a/../../b", "hf.co/../x", "hf.co/ovembed-test/..", "", "  "])
@pytest.mark.parametrize("field", ["model", "name"])
def test_names_that_could_escape_the_store_are_invalid(daemon: Daemon, model: str, field: str) -> None:
    root = daemon.models_dir.parent
    before = sorted(p for p in root.rglob("*") if p.suffix != ".log")

    waited = pull(daemon, model, field)
    streamed = httpx.post(f"{daemon.url}/api/pull", json={field: model}, timeout=30)

    assert (waited.status_code, waited.json()) == (400, {"error": "invalid model name"})
    assert (streamed.status_code, streamed.json()) == (400, {"error": "invalid model name"})
    assert sorted(p for p in root.rglob("*") if p.suffix != ".log") == before


def test_gated_repo_needs_a_token(daemon: Daemon, hub_url: str, hub: FakeHub, models: Models, tmp_path: Path) -> None:
    response = pull(daemon, f"hf.co/{GATED}")
    assert response.status_code == 404
    error = response.json()["error"]
    assert "gated" in error and "accept" in error and "HF_TOKEN" in error
    assert f"hf.co/{GATED}:latest" not in listed(daemon)

    with_token = start_pull_daemon(tmp_path, hub_url, HF_TOKEN=hub.token, OVEMBED_PRECISION="fp32")
    try:
        response = pull(with_token, f"hf.co/{GATED}")
        assert (response.status_code, response.json()) == (200, {"status": "success"})
        assert_embeds_like(with_token, f"hf.co/{GATED}", models.reference[models.ext])
    finally:
        stop_daemon(with_token)


def test_a_network_that_does_not_convert_fails_the_pull(daemon: Daemon, hub: FakeHub) -> None:
    repo = "ovembed-test/garbage"
    _, messages = stream_pull(daemon, f"hf.co/{repo}")

    statuses = [m.get("status") for m in messages]
    assert "verifying sha256 digest" in statuses and "converting to OpenVINO IR" in statuses
    assert "success" not in statuses and "writing manifest" not in statuses
    error = messages[-1]["error"]
    assert set(messages[-1]) == {"error"}
    assert "convert" in error and repo in error
    assert file_gets(hub, repo)["onnx/model.onnx"] == 1  # it was downloaded, then refused
    assert f"hf.co/{repo}:latest" not in listed(daemon)

    waited = pull(daemon, f"hf.co/{repo}")  # the download is kept: the same refusal, without a second fetch
    assert waited.status_code == 500
    assert waited.json()["error"].startswith(f"hf.co/{repo} downloaded but could not be converted: ")
    assert file_gets(hub, repo)["onnx/model.onnx"] == 1


# ---------------------------------------------------------------------------------------------- hub faults


def test_a_hub_500_fails_the_pull_and_the_retry_fetches_only_the_rest(
    daemon: Daemon, hub: FakeHub, models: Models
) -> None:
    repo = "ovembed-test/fault500"
    hub.fail_with_500("onnx/model.onnx_data")

    _, messages = stream_pull(daemon, f"hf.co/{repo}")
    assert set(messages[-1]) == {"error"}
    assert "500" in messages[-1]["error"] and "onnx/model.onnx_data" in messages[-1]["error"]
    assert not any(m.get("status") in FINAL_STATUSES for m in messages)
    assert f"hf.co/{repo}:latest" not in listed(daemon)
    assert file_gets(hub, repo) == Counter({"onnx/model.onnx": 1, "onnx/model.onnx_data": 1})

    response = pull(daemon, f"hf.co/{repo}")
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    want = Counter(list(planned(models.ext, ("onnx/model.onnx", "onnx/model.onnx_data"))))
    want["onnx/model.onnx_data"] += 1  # the failed GET; model.onnx had finished and is not fetched again
    assert file_gets(hub, repo) == want
    assert_embeds_like(daemon, f"hf.co/{repo}", models.reference[models.ext])


def test_a_cut_transfer_that_the_retries_recover_still_succeeds(daemon: Daemon, hub: FakeHub, models: Models) -> None:
    repo = "ovembed-test/cut"
    hub.cut_after("onnx/model.onnx", 300_000)

    _, messages = stream_pull(daemon, f"hf.co/{repo}")

    assert messages[-1] == {"status": "success"}
    assert file_gets(hub, repo)["onnx/model.onnx"] == 2
    assert_embeds_like(daemon, f"hf.co/{repo}", models.reference[models.tiny])


def test_a_cut_that_outlasts_the_retries_fails_cleanly_then_a_retry_succeeds(
    daemon: Daemon, hub: FakeHub, models: Models
) -> None:
    repo = "ovembed-test/cut-many"
    hub.cut_after("onnx/model.onnx_data", 0, times=6)  # the first try and huggingface_hub's five retries

    response = pull(daemon, f"hf.co/{repo}")

    assert response.status_code == 502
    error = response.json()["error"]
    assert "onnx/model.onnx_data" in error and "pull again" in error
    assert file_gets(hub, repo)["onnx/model.onnx_data"] == 6
    assert f"hf.co/{repo}:latest" not in listed(daemon)
    assert partial_files(daemon) == []

    response = pull(daemon, f"hf.co/{repo}")
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    assert file_gets(hub, repo)["onnx/model.onnx"] == 1
    assert_embeds_like(daemon, f"hf.co/{repo}", models.reference[models.ext])


def test_a_failed_pull_says_what_it_kept_and_prune_removes_only_what_no_pull_holds(
    daemon: Daemon, hub: FakeHub, models: Models
) -> None:
    repo = "ovembed-test/kept"
    hub.cut_after("onnx/model.onnx_data", 0, times=6)
    error = pull(daemon, f"hf.co/{repo}").json()["error"]
    kept = daemon.models_dir / "downloads" / "models--ovembed-test--kept"
    size = sum(p.stat().st_size for p in kept.rglob("*") if p.is_file() and not p.is_symlink())
    assert size > 0
    kept_text = f"the {human_bytes(size)} downloaded so far are kept"
    assert error.endswith(f"pull again to resume: {kept_text} (`ovembed pull --prune` removes them)"), error

    busy = "ovembed-test/busy"
    network = models.tiny / "onnx" / "model.onnx"
    hub.slow("onnx/model.onnx", network.stat().st_size / 3)  # a pull that runs for 3 s
    running = threading.Thread(target=lambda: stream_pull(daemon, f"hf.co/{busy}"))
    running.start()
    wait_for(lambda: file_gets(hub, busy)["onnx/model.onnx"] == 1, 10, "the second pull to start downloading")
    pruned = daemon.cli("pull", "--prune").stdout
    running.join(60)

    assert f"downloaded for hf.co/{repo}\n" in pruned and pruned.startswith("removed "), pruned
    assert f"downloaded for hf.co/{busy}: a pull of it is running" in pruned, pruned
    assert not kept.exists()
    assert f"hf.co/{busy}:latest" in listed(daemon)  # pruning beside it did not harm it
    assert daemon.cli("pull", "--prune").stdout == "no downloads are kept\n"
    assert daemon.cli("pull", check=False).stderr.strip() == "Error: pull needs a MODEL, or --prune"


# ---------------------------------------------------------------------------------------------- clients


def _leave_after_two_lines(daemon: Daemon, model: str) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{daemon.url}/api/pull", json={"model": model}, timeout=60) as response:
        lines = response.iter_lines()
        return [json.loads(next(lines)), json.loads(next(lines))]


def test_a_client_that_leaves_cancels_the_pull(daemon: Daemon, hub: FakeHub, models: Models) -> None:
    repo = "ovembed-test/abandoned"
    network = models.tiny / "onnx" / "model.onnx"
    hub.slow("onnx/model.onnx", network.stat().st_size / 2.5)  # the network takes 2.5 s

    first = _leave_after_two_lines(daemon, f"hf.co/{repo}")
    assert first[1]["digest"] == _hub_digest(network)

    # The download in flight is dropped (huggingface_hub only calls back per 10 MiB read, so at the latest when
    # the file ends), and the pull goes no further: no config file is fetched and no model appears.
    wait_for(lambda: file_gets(hub, repo)["onnx/model.onnx"] == 1, 5, "the network download to start")
    wait_for(lambda: not partial_files(daemon), 10, "the partial download to be dropped")
    time.sleep(0.5)
    assert file_gets(hub, repo) == Counter({"onnx/model.onnx": 1})
    assert f"hf.co/{repo}:latest" not in listed(daemon)
    blobs = daemon.models_dir / "downloads" / "models--ovembed-test--abandoned" / "blobs"
    assert not (blobs / _hub_digest(network).split(":")[1]).exists()

    hub.clear_faults()
    response = pull(daemon, f"hf.co/{repo}")
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    assert file_gets(hub, repo)["onnx/model.onnx"] == 2
    assert_embeds_like(daemon, f"hf.co/{repo}", models.reference[models.tiny])


def test_a_client_that_comes_back_at_once_gets_the_pull(daemon: Daemon, hub: FakeHub, models: Models) -> None:
    """`ollama pull`, Ctrl-C, `ollama pull` again: the second must not inherit the first one's cancellation."""
    repo = "ovembed-test/rejoined"
    network = models.tiny / "onnx" / "model.onnx"
    hub.slow("onnx/model.onnx", network.stat().st_size / 2)

    _leave_after_two_lines(daemon, f"hf.co/{repo}")
    _, messages = stream_pull(daemon, f"hf.co/{repo}")

    assert messages[-1] == {"status": "success"}, messages[-3:]
    assert f"hf.co/{repo}:latest" in listed(daemon)
    assert_embeds_like(daemon, f"hf.co/{repo}", models.reference[models.tiny])


def test_concurrent_pulls_of_one_name_share_one_download(daemon: Daemon, hub: FakeHub, models: Models) -> None:
    repo = "ovembed-test/together"
    network = models.tiny / "onnx" / "model.onnx"
    hub.slow("onnx/model.onnx", network.stat().st_size / 1.5)
    results: dict[str, list[dict[str, Any]]] = {}

    def run(key: str) -> None:
        results[key] = stream_pull(daemon, f"hf.co/{repo}")[1]

    first = threading.Thread(target=run, args=("first",))
    first.start()
    wait_for(lambda: file_gets(hub, repo)["onnx/model.onnx"] == 1, 10, "the first pull to start downloading")
    second = threading.Thread(target=run, args=("second",))
    second.start()
    first.join(60)
    second.join(60)

    for messages in results.values():
        assert messages[-1] == {"status": "success"}
        assert not any("error" in m for m in messages)
        assert _hub_digest(network) in layer_messages(messages)
    assert len(results) == 2
    assert file_gets(hub, repo) == Counter(list(planned(models.tiny, ("onnx/model.onnx",))))  # each once, for both


def test_a_present_model_pulls_quickly_and_other_names_for_it_are_copies(
    daemon: Daemon, hub: FakeHub, models: Models
) -> None:
    repo = "ovembed-test/again"
    _, first = stream_pull(daemon, f"hf.co/{repo}")
    assert first[-1] == {"status": "success"}
    requests_before = len(hub_requests(hub, repo))
    gets_before = file_gets(hub, repo)

    started = time.monotonic()
    _, second = stream_pull(daemon, f"hf.co/{repo}")
    elapsed = time.monotonic() - started

    assert elapsed < 2
    assert second[0] == {"status": "pulling manifest"} and second[-1] == {"status": "success"}
    layers = layer_messages(second)
    assert set(layers) == set(layer_messages(first))
    assert all(len(u) == 1 and u[0]["completed"] == u[0]["total"] for u in layers.values())  # once, complete
    assert [m for m in hub_requests(hub, repo)[requests_before:] if "/resolve/" in m[1]] == []
    assert file_gets(hub, repo) == gets_before

    # `main` and the commit itself name the same repo and commit: a copy, no download.
    commit = hub.add_repo(repo, models.ext)
    for other in (f"hf.co/{repo}:main", f"hf.co/{repo}:{commit}"):
        response = pull(daemon, other)
        assert (response.status_code, response.json()) == (200, {"status": "success"})
    assert file_gets(hub, repo) == gets_before
    names = listed(daemon)
    copies = [names[f"hf.co/{repo}:{tag}"] for tag in ("latest", "main", commit)]
    assert len({item["digest"] for item in copies}) == 1
    assert_embeds_like(daemon, f"hf.co/{repo}:main", models.reference[models.ext])


# ---------------------------------------------------------------------------------------------- restarts


def test_sigkill_mid_pull_then_restart_resumes_from_finished_files(
    tmp_path: Path, hub_url: str, hub: FakeHub, models: Models
) -> None:
    repo = "ovembed-test/killed"
    data = models.ext / "onnx" / "model.onnx_data"
    hub.slow("onnx/model.onnx_data", data.stat().st_size / 20)  # 20 s: the kill comes long before

    first = start_pull_daemon(tmp_path, hub_url, OVEMBED_PRECISION="fp32")
    try:
        with httpx.stream("POST", f"{first.url}/api/pull", json={"model": f"hf.co/{repo}"}, timeout=60) as response:
            for line in response.iter_lines():
                if json.loads(line).get("digest") == _hub_digest(data):
                    break

            # huggingface_hub opens the .incomplete file before it sends the GET: wait for both.
            def started() -> bool:
                return bool(partial_files(first)) and file_gets(hub, repo)["onnx/model.onnx_data"] == 1

            wait_for(started, 10, "the data file's partial download")
            first.process.kill()
            first.process.wait(10)
    finally:
        stop_daemon(first)
    assert partial_files(first)
    assert file_gets(hub, repo) == Counter({"onnx/model.onnx": 1, "onnx/model.onnx_data": 1})
    hub.clear_faults()

    second = start_pull_daemon(tmp_path, hub_url, OVEMBED_PRECISION="fp32")
    try:
        assert partial_files(second) == []  # swept at start
        assert listed(second) == {}
        response = pull(second, f"hf.co/{repo}")
        assert (response.status_code, response.json()) == (200, {"status": "success"})
        want = Counter(list(planned(models.ext, ("onnx/model.onnx", "onnx/model.onnx_data"))))
        want["onnx/model.onnx_data"] += 1  # the killed transfer started again; the finished graph was kept
        assert file_gets(hub, repo) == want
        assert_embeds_like(second, f"hf.co/{repo}", models.reference[models.ext])
    finally:
        stop_daemon(second)


# ---------------------------------------------------------------------------------------------- other clients


def test_ovembed_pull_cli(daemon: Daemon, models: Models) -> None:
    done = daemon.cli("pull", "hf.co/ovembed-test/cli")
    assert done.returncode == 0
    assert "success" in done.stderr
    assert "hf.co/ovembed-test/cli:latest" in listed(daemon)
    assert_embeds_like(daemon, "hf.co/ovembed-test/cli", models.reference[models.ext])

    failed = daemon.cli("pull", "hf.co/ovembed-test/missing", check=False)
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1].startswith("Error: pull model manifest: file does not exist")


def test_ollama_js_pulls_then_embeds(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> None:
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are not installed")
    folder = tmp_path_factory.mktemp("ollama-js")
    install = subprocess.run(
        ["npm", "install", "--prefix", str(folder), "ollama", "--no-audit", "--no-fund", "--loglevel=error"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    if install.returncode != 0 or not (folder / "node_modules" / "ollama").is_dir():
        pytest.skip(f"could not install ollama from npm: {install.stderr[-500:]}")
    script = folder / "pull.mjs"
    script.write_text(
        """
import { Ollama } from "ollama";
const client = new Ollama({ host: process.argv[2] });
const pulled = await client.pull({ model: process.argv[3], stream: false });
const embedded = await client.embed({ model: process.argv[3], input: ["the water is cold", "a great book"] });
let error = null;
try { await client.pull({ model: "hf.co/ovembed-test/missing", stream: false }); }
catch (e) { error = { message: e.message, status: e.status_code }; }
console.log(JSON.stringify({ pulled, dims: embedded.embeddings.map((v) => v.length), error }));
"""
    )
    ran = subprocess.run(
        ["node", str(script), daemon.url, "hf.co/ovembed-test/js"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert result["pulled"] == {"status": "success"}
    assert result["dims"] == [16, 16]
    assert "ovembed-test/missing" in result["error"]["message"]
    assert result["error"]["status"] == 404


# ---------------------------------------------------------------------------------------------- real tier


@pytest.mark.real
def test_real_all_minilm_pull_matches_sentence_transformers(daemon: Daemon, hub: FakeHub) -> None:
    require_shared()
    repo = "sentence-transformers/all-MiniLM-L6-v2"
    hub.add_repo(repo, MINILM)

    response = pull(daemon, "all-minilm")
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    gets = file_gets(hub, repo)
    assert gets["openvino/openvino_model.bin"] == 1
    assert not [path for path in gets if path.startswith("onnx/") or path in ("vocab.txt", "README.md")]

    alias = pull(daemon, "all-minilm:l6-v2")
    assert (alias.status_code, alias.json()) == (200, {"status": "success"})
    assert file_gets(hub, repo) == gets  # the same repo and commit: a copy
    names = listed(daemon)
    assert names["all-minilm:latest"]["digest"] == names["all-minilm:l6-v2"]["digest"]

    rows = [json.loads(line) for line in (REFERENCE / "all-MiniLM-L6-v2.texts.jsonl").read_text().splitlines()]
    expected = np.load(REFERENCE / "all-MiniLM-L6-v2.npy").astype(np.float64)
    got = embed(daemon, "all-minilm", [row["text"] for row in rows])
    cosines = (got * expected).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= 0.9999, {rows[i]["id"]: float(cosines[i]) for i in np.argsort(cosines)[:3]}


@pytest.fixture()
def small_disk(tmpfs: Callable[[str], Path]) -> Path:
    """A 2 MB filesystem of its own, smaller than what the tiny model needs to download and convert."""
    return tmpfs("2m")


def test_a_disk_too_small_for_the_model_fails_at_once_and_the_retry_after_freeing_succeeds(
    small_disk: Path, hub_url: str, hub: FakeHub, models: Models
) -> None:
    running = start_pull_daemon(small_disk, hub_url)
    try:
        gets_before = len(hub.resolve_gets())
        response = httpx.post(
            f"{running.url}/api/pull", json={"model": "hf.co/ovembed-test/tiny", "stream": False}, timeout=60
        )
        assert response.status_code == 500
        error = response.json()["error"]
        assert error.startswith(f"disk full while pulling hf.co/ovembed-test/tiny under {running.models_dir}: about ")
        assert "MB are needed and" in error and "`ovembed rm`" in error
        assert len(hub.resolve_gets()) == gets_before  # refused before any download
        assert httpx.get(f"{running.url}/api/tags").json() == {"models": []}
        # Space freed (here: the filesystem grown), the same pull goes through.
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
        retried = httpx.post(
            f"{running.url}/api/pull", json={"model": "hf.co/ovembed-test/tiny", "stream": False}, timeout=60
        )
        assert (retried.status_code, retried.json()) == (200, {"status": "success"})
    finally:
        stop_daemon(running)


def test_sigterm_answers_requests_in_flight_ends_the_pull_and_exits_0(
    tmp_path: Path, hub: FakeHub, hub_url: str, models: Models
) -> None:
    """systemctl stop during a pull and a burst of embeds: every embed is answered, the pull ends with a message
    that says why, and the daemon exits with status 0 well within OVEMBED_SHUTDOWN_TIMEOUT."""
    require_shared()
    repo = "ovembed-test/stopped"
    hub.add_repo(repo, models.tiny)
    network = models.tiny / "onnx" / "model.onnx"
    hub.slow("onnx/model.onnx", network.stat().st_size / 4)  # the network takes 4 s
    running = start_pull_daemon(tmp_path, hub_url, OVEMBED_PRECISION="fp32", OVEMBED_SHUTDOWN_TIMEOUT="20")
    running.create("all-minilm", MINILM)
    texts = [f"text number {n} about the water and the river" for n in range(1500)]
    with running.client() as http:
        assert http.post("/api/embed", json={"model": "all-minilm", "input": "warm"}).status_code == 200

    def embed_all() -> httpx.Response:
        return httpx.post(f"{running.url}/api/embed", json={"model": "all-minilm", "input": texts}, timeout=60)

    with ThreadPoolExecutor(max_workers=5) as pool:
        pulling = pool.submit(stream_pull, running, f"hf.co/{repo}")
        wait_for(lambda: file_gets(hub, repo)["onnx/model.onnx"] == 1, 10, "the network download to start")
        embeds = [pool.submit(embed_all) for _ in range(4)]
        status, stopped_in = sigterm_while_busy(running, embeds)
        answers = [f.result() for f in embeds]
        _, messages = pulling.result()
    hub.clear_faults()
    assert status == 0, running.log()[-2000:]
    assert stopped_in < 10, stopped_in
    assert [(a.status_code, len(a.json()["embeddings"])) for a in answers] == [(200, len(texts))] * 4
    assert messages[-1] == {"error": ShuttingDown().args[0]}
    assert f"hf.co/{repo}:latest" not in {r.name.display for r in ModelStore(running.models_dir).list()}
