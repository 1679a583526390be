"""POST /api/pull end to end: the real app, the real huggingface_hub inside it, and the fake hub.

The fake hub runs in a thread of this process and is reached over loopback (`HF_ENDPOINT`). Most tests drive
the app in this process (`app`, Starlette's TestClient, through conftest's `serving`); those that need a
process boundary (a client that hangs up, concurrent clients, signals, SIGKILL, the CLI, other languages'
clients, a token) use a real `ovembed serve` (`daemon`, `socket`) or start their own. Every test pulls a repo id
of its own, so one store serves many tests without one test's download cache or store entries changing
another's. Request counts come from the hub's own log.
"""

from __future__ import annotations

import contextlib
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import huggingface_hub.constants
import numpy as np
import ollama
import onnx
import pytest
from onnx import numpy_helper
from onnx.external_data_helper import set_external_data
from prometheus_client.parser import text_string_to_metric_families

from modelstore import fetch, quantize
from modelstore.create import create_from_folder
from modelstore.layout import REPO_HEADS
from modelstore.names import parse_name
from modelstore.sizes import human_bytes
from modelstore.store import ModelStore
from tests.conftest import (
    MINILM,
    Daemon,
    reference_rows,
    require_shared,
    serving,
    sigterm_while_busy,
    start_daemon,
    stop_daemon,
)
from tests.fakehub import LFS_THRESHOLD, FakeHub, running_hub
from tests.test_convert import FIXTURES, minilm_checkpoint, shard_checkpoint
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
SHUTTING_DOWN = "ovembed is shutting down; the files downloaded so far are kept, and pulling again resumes"


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
        self.shards_missing = shard_checkpoint(FIXTURES / "bert-mean", root / "shards-missing", shards=3)
        (self.shards_missing / "model-00002-of-00003.safetensors").unlink()
        self.index_damaged = shard_checkpoint(FIXTURES / "bert-mean", root / "index-damaged", shards=3)
        (self.index_damaged / "model.safetensors.index.json").write_text('{"weight_map": ["not", "a", "map"]}')
        self.garbage = build_tiny_model(root / "garbage", seed=6)
        (self.garbage / "onnx" / "model.onnx").write_bytes(random.Random(6).randbytes(50_000))
        self.reference = {folder: reference_vectors(folder, TEXTS) for folder in (self.tiny, self.ext, self.ir)}
        plain = build_tiny_model(root / "m3-reference", seed=7)
        self.reference[root / "m3"] = reference_vectors(plain, TEXTS)
        self.m3 = _bge_m3_like(root / "m3", seed=7)
        (self.m3 / "onnx" / "model_quantized.onnx").write_bytes(b"not a network")
        # bge-m3's root as FlagEmbedding reads it: its network's pickle beside the two heads' pickles.
        self.m3_heads = _add_unused_weights(_bge_m3_like(root / "m3-heads", seed=7), PICKLES)
        for head in REPO_HEADS.values():
            shutil.copyfile(FIXTURES / "torch-weights" / head, self.m3_heads / head)
        # A SPLADE model and a ColBERT model in pylate's and in Stanford's layout, each beside a pickle of itself.
        self.splade = _add_unused_weights(shutil.copytree(FIXTURES / "bert-splade", root / "splade"), PICKLES)
        self.colbert = _add_unused_weights(
            shutil.copytree(FIXTURES / "bert-colbert", root / "colbert"), (*PICKLES, "1_Dense/pytorch_model.bin")
        )
        self.stanford = _add_unused_weights(
            shutil.copytree(FIXTURES / "bert-colbert-stanford", root / "stanford"), PICKLES
        )


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
    "ovembed-test/shards-missing": "shards_missing",
    "ovembed-test/index-damaged": "index_damaged",
    "ovembed-test/file-missing": "tiny",
    "ovembed-test/corrupted": "tiny",
    "ovembed-test/offline": "tiny",
    "ovembed-test/broken": "tiny",
    "ovembed-test/filled": "tiny",
    "ovembed-test/legacy": "ext",
    "ovembed-test/shared-store": "tiny",
    "ovembed-test/quantized": "tiny",
    "ovembed-test/m3-heads": "m3_heads",
    "ovembed-test/splade": "splade",
    "ovembed-test/colbert": "colbert",
    "ovembed-test/colbert-stanford": "stanford",
    "ovembed-test/unfaithful": "tiny",
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


@dataclass
class Served:
    """A daemon as these tests reach it: its HTTP (in this process, or over a socket) and its store."""

    http: httpx.Client
    models_dir: Path


@contextlib.contextmanager
def over_socket(running: Daemon) -> Iterator[Served]:
    with httpx.Client(base_url=running.url, timeout=120) as http:
        yield Served(http, running.models_dir)


@pytest.fixture(scope="module")
def socket(daemon: Daemon) -> Iterator[Served]:
    """The module's daemon over its socket, for what needs one: disconnects, signals, concurrent clients."""
    with over_socket(daemon) as served:
        yield served


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, hub_url: str) -> Iterator[Served]:
    """The app in this process, as tests/test_error_table.py drives it, for what needs no process boundary;
    fp32 too. Its pulls reach the fake hub over loopback as the daemon's do."""
    root = tmp_path_factory.mktemp("pull-app")
    with serving(root, hf_endpoint=hub_url) as http:
        yield Served(http, root / "models")


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


def stream_pull(served: Served, model: str, **body: Any) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """A streamed pull read to its end; every line must be one JSON object, with no blank lines."""
    with served.http.stream("POST", "/api/pull", json={"model": model, **body}) as response:
        raw = response.read()
    if response.status_code != 200:
        return response, [response.json()]
    assert raw.endswith(b"\n"), raw[-200:]
    lines = raw.split(b"\n")[:-1]
    assert all(line.strip() for line in lines), raw
    messages = [json.loads(line) for line in lines]
    assert all(isinstance(m, dict) for m in messages)
    return response, messages


def pull(served: Served, model: str, field: str = "model") -> httpx.Response:
    return served.http.post("/api/pull", json={field: model, "stream": False})


def listed(served: Served) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in served.http.get("/api/tags").json()["models"]}


def show(served: Served, model: str) -> dict[str, Any]:
    return dict(served.http.post("/api/show", json={"model": model}).json())


def pulled_bytes(served: Served) -> float:
    """ovembed_pull_bytes_total as /metrics shows it."""
    families = text_string_to_metric_families(served.http.get("/metrics").text)
    return next(s.value for f in families for s in f.samples if s.name == "ovembed_pull_bytes_total")


def embed(served: Served, model: str, texts: list[str]) -> np.ndarray:
    response = served.http.post("/api/embed", json={"model": model, "input": texts})
    assert response.status_code == 200, response.text
    return np.array(response.json()["embeddings"], dtype=np.float64)


def assert_embeds_like(served: Served, model: str, expected: np.ndarray) -> None:
    got = embed(served, model, TEXTS)
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


def partial_files(served: Served | Daemon) -> list[Path]:
    return list((served.models_dir / "downloads").rglob("*.incomplete"))


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


def test_streamed_pull_reports_ollama_progress_then_embeds(app: Served, hub: FakeHub, models: Models) -> None:
    repo = "ovembed-test/tiny"
    response, messages = stream_pull(app, f"hf.co/{repo}")

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
    assert not (app.models_dir / "downloads" / "models--ovembed-test--tiny").exists()

    again = pull(app, f"hf.co/{repo}")
    assert (again.status_code, again.json()) == (200, {"status": "success"})
    assert file_gets(hub, repo) == Counter(list(want))

    item = listed(app)[f"hf.co/{repo}:latest"]
    assert item["details"]["format"] == "openvino"
    assert_embeds_like(app, f"hf.co/{repo}", models.reference[models.tiny])


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
    app: Served, hub: FakeHub, models: Models, repo: str, network: tuple[str, ...]
) -> None:
    folder = getattr(models, REPOS[repo])
    response = pull(app, f"hf.co/{repo}")

    assert (response.status_code, response.json()) == (200, {"status": "success"})
    assert file_gets(hub, repo) == Counter(list(planned(folder, network)))
    assert_embeds_like(app, f"hf.co/{repo}", models.reference[folder])


def test_openvino_repo_fetches_only_its_ir(app: Served, hub: FakeHub, models: Models) -> None:
    repo = "ovembed-test/tiny-ir"
    response = pull(app, f"hf.co/{repo}")

    assert (response.status_code, response.json()) == (200, {"status": "success"})
    gets = file_gets(hub, repo)
    assert gets == Counter(list(planned(models.ir, ("openvino/openvino_model.xml", "openvino/openvino_model.bin"))))
    assert not [path for path in gets if path.startswith("onnx/") or path in NEVER_FETCHED]
    # The repo's onnx/ holds other weights: these vectors prove the IR was served.
    assert_embeds_like(app, f"hf.co/{repo}", models.reference[models.ir])


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
    app: Served, hub: FakeHub, models: Models, repo: str, network: tuple[str, ...]
) -> None:
    folder = models.checkpoint if repo.endswith("checkpoint") else models.sharded
    pulled_before = pulled_bytes(app)
    _, messages = stream_pull(app, f"hf.co/{repo}")
    layers = {m["digest"]: m["total"] for m in messages if m.get("digest")}
    assert pulled_bytes(app) - pulled_before == sum(layers.values())

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
    _assert_cosines(embed(app, f"hf.co/{repo}", texts), expected, MIN_COSINE)
    shown = show(app, f"hf.co/{repo}")
    assert shown["details"]["quantization_level"] == "FP16"  # converted checkpoints store fp16 weights


def test_a_cross_encoder_repo_pulls_as_a_reranker_that_scores_as_its_create_does(
    app: Served, hub: FakeHub, models: Models
) -> None:
    repo = "ovembed-test/reranker"
    assert pull(app, f"hf.co/{repo}").json() == {"status": "success"}
    assert file_gets(hub, repo)["model.safetensors"] == 1 and not file_gets(hub, repo)["pytorch_model.bin"]
    create_from_folder(ModelStore(app.models_dir), parse_name("reranker-created"), models.reranker)
    query, documents = "why is the sky blue?", ["blue light scatters", "a fox", "the sky at noon"]

    def scores(model: str) -> list[tuple[int, float]]:
        body = {"model": model, "query": query, "documents": documents}
        results = app.http.post("/api/rerank", json=body).json()["results"]
        return [(r["index"], r["relevance_score"]) for r in results]

    assert scores(f"hf.co/{repo}") == scores("reranker-created")
    shown = show(app, f"hf.co/{repo}")
    assert shown["capabilities"] == ["rerank"]


def test_dense_modules_are_fetched_and_applied(app: Served, hub: FakeHub, models: Models) -> None:
    repo = "ovembed-test/dense"
    response = pull(app, f"hf.co/{repo}")
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    gets = file_gets(hub, repo)
    assert {"2_Dense/config.json", "2_Dense/model.safetensors", "3_Dense/model.safetensors"} <= set(gets)
    assert "2_Dense/pytorch_model.bin" not in gets
    texts = json.loads((FIXTURES / "bert-dense" / "texts.json").read_text(encoding="utf-8"))
    expected = np.load(FIXTURES / "bert-dense" / "reference.npy").astype(np.float64)
    _assert_cosines(embed(app, f"hf.co/{repo}", texts), expected, MIN_COSINE)


@pytest.mark.parametrize(
    ("repo", "words"),
    [
        ("ovembed-test/gpt2", ["only a safetensors checkpoint", "does not convert gpt2", "bert"]),
        ("ovembed-test/yarn", ["only a safetensors checkpoint", "rotary embedding type 'yarn'"]),
    ],
)
def test_what_is_not_converted_is_refused_on_its_config_alone(
    app: Served, hub: FakeHub, repo: str, words: list[str]
) -> None:
    response = pull(app, f"hf.co/{repo}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert all(word in error for word in words), error
    assert file_gets(hub, repo) == Counter({"config.json": 1})  # never the weights
    assert f"hf.co/{repo}:latest" not in listed(app)


def test_qwen3_embedding_4b_pulls_its_checkpoint_as_int8_and_its_int4_and_fp16_tags_apart(
    app: Served, hub: FakeHub, models: Models
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
        response = pull(app, f"qwen3-embedding:{tag}")
        assert (response.status_code, response.json()) == (200, {"status": "success"}), (tag, response.text)
        shown = show(app, f"qwen3-embedding:{tag}")
        assert shown["details"]["quantization_level"] == level
        _assert_cosines(embed(app, f"qwen3-embedding:{tag}", texts), expected, floors[level])
    # q8_0 is a copy of the default tag; the others are conversions of their own (downloads are dropped after one).
    assert file_gets(hub, repo)["model.safetensors"] == 3
    names = listed(app)
    assert names["qwen3-embedding:4b"]["digest"] == names["qwen3-embedding:4b-q8_0"]["digest"]
    assert names["qwen3-embedding:4b"]["digest"] != names["qwen3-embedding:4b-fp16"]["digest"]


def test_qwen3_reranker_pulls_by_its_catalog_name_and_scores_as_its_model_card(
    app: Served, hub: FakeHub, models: Models
) -> None:
    """The catalog's Qwen/Qwen3-Reranker-0.6B, played by the tiny Qwen3 language model: its config says only
    that it is a causal LM, and the catalog makes it a reranker (stored fp16 weights, as the 0.6b tag asks)."""
    hub.add_repo("Qwen/Qwen3-Reranker-0.6B", models.qwen3_reranker)
    response = pull(app, "qwen3-reranker:0.6b")
    assert (response.status_code, response.json()) == (200, {"status": "success"}), response.text
    pairs = json.loads((FIXTURES / "qwen3-rerank" / "pairs.json").read_text(encoding="utf-8"))
    expected = np.load(FIXTURES / "qwen3-rerank" / "scores.npy")
    query = pairs[0][0]
    documents = [d for q, d in pairs if q == query]
    body = {"model": "qwen3-reranker:0.6b", "query": query, "documents": documents}
    results = app.http.post("/api/rerank", json=body).json()["results"]
    scores = np.array([r["relevance_score"] for r in sorted(results, key=lambda r: r["index"])])
    assert np.abs(scores - expected[: len(documents)]).max() < 0.01  # fp16 weights
    shown = show(app, "qwen3-reranker:0.6b")
    assert shown["capabilities"] == ["rerank"] and shown["details"]["quantization_level"] == "FP16"


def test_two_tags_of_one_model_pulled_at_once_convert_once(socket: Served, hub: FakeHub, models: Models) -> None:
    """`bge-reranker-base` and `bge-reranker-base:278m` at the same moment: the second waits for the first's lock,
    then finds the model and copies it, instead of downloading and converting it again."""
    repo = "BAAI/bge-reranker-base"
    hub.add_repo(repo, models.reranker)
    hub.slow("model.safetensors", (models.reranker / "model.safetensors").stat().st_size / 2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda tag: pull(socket, f"bge-reranker-base:{tag}"), ("latest", "278m")))
    hub.clear_faults()
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"status": "success"})] * 2
    assert file_gets(hub, repo)["model.safetensors"] == 1
    names = listed(socket)
    assert names["bge-reranker-base:latest"]["digest"] == names["bge-reranker-base:278m"]["digest"]


def test_a_mirrored_model_pulls_once_and_its_other_tags_are_copies(app: Served, hub: FakeHub, models: Models) -> None:
    """qwen3-embedding:0.6b: the repo has nothing to convert, the catalog's OpenVINO mirror has the IR."""
    hub.add_repo("Qwen/Qwen3-Embedding-0.6B", models.none)
    hub.add_repo("OpenVINO/Qwen3-Embedding-0.6B-fp16-ov", models.ir)
    for tag in ("0.6b", "0.6b", "0.6b-fp16"):
        response = pull(app, f"qwen3-embedding:{tag}")
        assert (response.status_code, response.json()) == (200, {"status": "success"}), (tag, response.text)
    assert file_gets(hub, "OpenVINO/Qwen3-Embedding-0.6B-fp16-ov")["openvino/openvino_model.bin"] == 1
    names = listed(app)
    assert names["qwen3-embedding:0.6b"]["digest"] == names["qwen3-embedding:0.6b-fp16"]["digest"]


def test_the_real_minilm_checkpoint_pulls_and_matches_sentence_transformers(app: Served, hub: FakeHub) -> None:
    """all-MiniLM-L6-v2's own safetensors, served as a repo with nothing else to convert."""
    require_shared()
    repo = "ovembed-test/minilm-safetensors"
    hub.add_repo(repo, minilm_checkpoint())
    response = pull(app, f"hf.co/{repo}")
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    assert "model.safetensors" in file_gets(hub, repo)
    rows, expected = reference_rows()
    expected = expected.astype(np.float64)
    _assert_cosines(embed(app, f"hf.co/{repo}", [row["text"] for row in rows]), expected, MIN_COSINE)


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
    app: Served, hub: FakeHub, model: str, status: int, words: list[str]
) -> None:
    gets_before = len(hub.resolve_gets())
    requests_before = len(hub.requests)
    response = pull(app, model)
    _, messages = stream_pull(app, model)

    assert response.status_code == status
    error = response.json()["error"]
    assert all(word in error for word in words), error
    assert messages == [{"status": "pulling manifest"}, {"error": error}]
    assert len(hub.resolve_gets()) == gets_before  # refused before downloading anything
    assert len(hub.requests) - requests_before <= 4  # at once: the revision and the tree at most, no retries
    assert parse_name(model).display not in listed(app)


def test_embeddinggemma_is_gated_then_converted_with_its_dense_layers(
    socket: Served, hub_url: str, hub: FakeHub, models: Models, tmp_path: Path
) -> None:
    """google/embeddinggemma-300m, played by the tiny bidirectional Gemma3 fixture with two Dense layers."""
    repo = "google/embeddinggemma-300m"
    hub.add_repo(repo, models.gemma, gated=True)
    response = pull(socket, "embeddinggemma")
    assert response.status_code == 404
    error = response.json()["error"]
    assert "gated" in error and "HF_TOKEN" in error, error

    with_token = start_pull_daemon(tmp_path, hub_url, HF_TOKEN=hub.token, OVEMBED_PRECISION="fp32")
    try:
        with over_socket(with_token) as served:
            for tag, level in (("latest", "FP16"), ("300m-qat-q8_0", "INT8")):
                response = pull(served, f"embeddinggemma:{tag}")
                assert (response.status_code, response.json()) == (200, {"status": "success"}), (tag, response.text)
                shown = show(served, f"embeddinggemma:{tag}")
                assert shown["details"]["quantization_level"] == level
                texts = json.loads((FIXTURES / "gemma3-dense" / "texts.json").read_text(encoding="utf-8"))
                expected = np.load(FIXTURES / "gemma3-dense" / "reference.npy").astype(np.float64)
                minimum = MIN_COSINE if level == "FP16" else 0.999
                _assert_cosines(embed(served, f"embeddinggemma:{tag}", texts), expected, minimum)
    finally:
        stop_daemon(with_token)


@pytest.mark.parametrize("model", ["../x", "/abs", "a/../../b", "hf.co/../x", "hf.co/ovembed-test/..", "", "  "])
@pytest.mark.parametrize("field", ["model", "name"])
def test_names_that_could_escape_the_store_are_invalid(app: Served, model: str, field: str) -> None:
    root = app.models_dir.parent
    before = sorted(p for p in root.rglob("*") if p.suffix != ".log")

    waited = pull(app, model, field)
    streamed = app.http.post("/api/pull", json={field: model})

    assert (waited.status_code, waited.json()) == (400, {"error": "invalid model name"})
    assert (streamed.status_code, streamed.json()) == (400, {"error": "invalid model name"})
    assert sorted(p for p in root.rglob("*") if p.suffix != ".log") == before


def test_gated_repo_needs_a_token(socket: Served, hub_url: str, hub: FakeHub, models: Models, tmp_path: Path) -> None:
    response = pull(socket, f"hf.co/{GATED}")
    assert response.status_code == 404
    error = response.json()["error"]
    assert "gated" in error and "accept" in error and "HF_TOKEN" in error
    assert f"hf.co/{GATED}:latest" not in listed(socket)

    with_token = start_pull_daemon(tmp_path, hub_url, HF_TOKEN=hub.token, OVEMBED_PRECISION="fp32")
    try:
        with over_socket(with_token) as served:
            response = pull(served, f"hf.co/{GATED}")
            assert (response.status_code, response.json()) == (200, {"status": "success"})
            assert_embeds_like(served, f"hf.co/{GATED}", models.reference[models.ext])
    finally:
        stop_daemon(with_token)


def test_a_network_that_does_not_convert_fails_the_pull(app: Served, hub: FakeHub) -> None:
    repo = "ovembed-test/garbage"
    _, messages = stream_pull(app, f"hf.co/{repo}")

    statuses = [m.get("status") for m in messages]
    assert "verifying sha256 digest" in statuses and "converting to OpenVINO IR" in statuses
    assert "success" not in statuses and "writing manifest" not in statuses
    error = messages[-1]["error"]
    assert set(messages[-1]) == {"error"}
    assert "convert" in error and repo in error
    assert file_gets(hub, repo)["onnx/model.onnx"] == 1  # it was downloaded, then refused
    assert f"hf.co/{repo}:latest" not in listed(app)

    waited = pull(app, f"hf.co/{repo}")  # the download is kept: the same refusal, without a second fetch
    assert waited.status_code == 500
    assert waited.json()["error"].startswith(f"hf.co/{repo} downloaded but could not be converted: ")
    assert file_gets(hub, repo)["onnx/model.onnx"] == 1


@pytest.mark.parametrize(
    ("repo", "status", "error"),
    [
        (
            "ovembed-test/shards-missing",
            404,
            "hf.co/ovembed-test/shards-missing: model.safetensors.index.json names shards the repo does not have",
        ),
        (
            "ovembed-test/index-damaged",
            400,
            "hf.co/ovembed-test/index-damaged has a damaged model.safetensors.index.json: ",
        ),
    ],
)
def test_a_checkpoint_index_that_does_not_read_or_names_missing_shards_is_refused(
    app: Served, hub: FakeHub, repo: str, status: int, error: str
) -> None:
    response = pull(app, f"hf.co/{repo}")
    assert response.status_code == status
    assert response.json()["error"].startswith(error), response.json()
    assert file_gets(hub, repo) == Counter({"config.json": 1, "model.safetensors.index.json": 1})  # never a shard
    assert f"hf.co/{repo}:latest" not in listed(app)


# ---------------------------------------------------------------------------------------------- hub faults


def test_a_file_the_hub_lists_but_will_not_give_fails_the_pull(app: Served, hub: FakeHub, models: Models) -> None:
    repo = "ovembed-test/file-missing"
    commit = hub.add_repo(repo, models.tiny)
    hub.missing("tokenizer.json")
    response = pull(app, f"hf.co/{repo}")
    assert (response.status_code, response.json()) == (
        404,
        {"error": f"hf.co/{repo} has no file 'tokenizer.json' at {commit[:12]}"},
    )
    assert f"hf.co/{repo}:latest" not in listed(app)


def test_a_download_that_does_not_match_the_hubs_hash_is_removed_and_fails_the_pull(
    app: Served, hub: FakeHub, models: Models
) -> None:
    repo = "ovembed-test/corrupted"
    hub.corrupt("config.json")
    _, messages = stream_pull(app, f"hf.co/{repo}")
    assert messages[-1] == {"error": "digest mismatch for config.json: the download was corrupted; pull again"}
    assert "verifying sha256 digest" in {m.get("status") for m in messages}
    hub.clear_faults()
    response = pull(app, f"hf.co/{repo}")  # the damaged file was removed: fetched again, the rest resumed
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    assert file_gets(hub, repo)["config.json"] == 2 and file_gets(hub, repo)["onnx/model.onnx"] == 1


def test_offline_mode_refuses_a_pull_it_cannot_serve_from_the_store(
    app: Served, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    requests_before = len(hub.requests)
    response = pull(app, "hf.co/ovembed-test/offline")
    assert (response.status_code, response.json()) == (
        502,
        {"error": "the daemon runs with HF_HUB_OFFLINE set, so it cannot download models"},
    )
    assert len(hub.requests) == requests_before


def test_a_pull_that_breaks_unexpectedly_says_so_and_the_next_one_succeeds(
    app: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the plan broke")

    monkeypatch.setattr(fetch, "plan_download", broken)
    _, messages = stream_pull(app, "hf.co/ovembed-test/broken")
    assert messages[-1] == {"error": "pull failed: the plan broke"}
    monkeypatch.undo()
    assert pull(app, "hf.co/ovembed-test/broken").json() == {"status": "success"}


def test_a_disk_that_fills_during_the_download_fails_the_pull_and_says_what_it_kept(
    tmpfs: Callable[[str], Path], hub_url: str, hub: FakeHub, models: Models
) -> None:
    repo = "ovembed-test/filled"
    disk = tmpfs("8m")  # room enough when the pull starts
    network = models.tiny / "onnx" / "model.onnx"
    hub.slow("onnx/model.onnx", network.stat().st_size / 3)
    with serving(disk, hf_endpoint=hub_url, cache_dir=disk.parent / "cache") as http, ThreadPoolExecutor(1) as pool:
        pulling = pool.submit(pull, Served(http, disk / "models"), f"hf.co/{repo}")
        wait_for(lambda: file_gets(hub, repo)["onnx/model.onnx"] == 1, 10, "the network download to start")
        filler = disk / "filler"
        with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
            while True:  # until the disk is full
                handle.write(b"\0" * (1 << 16))
        response = pulling.result()
    assert response.status_code == 500
    error = response.json()["error"]
    assert error.startswith(f"disk full while downloading onnx/model.onnx from hf.co/{repo} under {disk / 'models'}")
    assert error.endswith(("(pull again to retry)", "(`ovembed pull --prune` removes them))")), error


def test_a_hub_500_fails_the_pull_and_the_retry_fetches_only_the_rest(
    app: Served, hub: FakeHub, models: Models
) -> None:
    repo = "ovembed-test/fault500"
    hub.fail_with_500("onnx/model.onnx_data")

    _, messages = stream_pull(app, f"hf.co/{repo}")
    assert set(messages[-1]) == {"error"}
    assert "500" in messages[-1]["error"] and "onnx/model.onnx_data" in messages[-1]["error"]
    assert not any(m.get("status") in FINAL_STATUSES for m in messages)
    assert f"hf.co/{repo}:latest" not in listed(app)
    assert file_gets(hub, repo) == Counter({"onnx/model.onnx": 1, "onnx/model.onnx_data": 1})

    response = pull(app, f"hf.co/{repo}")
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    want = Counter(list(planned(models.ext, ("onnx/model.onnx", "onnx/model.onnx_data"))))
    want["onnx/model.onnx_data"] += 1  # the failed GET; model.onnx had finished and is not fetched again
    assert file_gets(hub, repo) == want
    assert_embeds_like(app, f"hf.co/{repo}", models.reference[models.ext])


def test_a_cut_transfer_that_the_retries_recover_still_succeeds(app: Served, hub: FakeHub, models: Models) -> None:
    repo = "ovembed-test/cut"
    hub.cut_after("onnx/model.onnx", 300_000)

    _, messages = stream_pull(app, f"hf.co/{repo}")

    assert messages[-1] == {"status": "success"}
    assert file_gets(hub, repo)["onnx/model.onnx"] == 2
    assert_embeds_like(app, f"hf.co/{repo}", models.reference[models.tiny])


def test_a_cut_that_outlasts_the_retries_fails_cleanly_then_a_retry_succeeds(
    app: Served, hub: FakeHub, models: Models
) -> None:
    repo = "ovembed-test/cut-many"
    hub.cut_after("onnx/model.onnx_data", 0, times=6)  # the first try and huggingface_hub's five retries

    response = pull(app, f"hf.co/{repo}")

    assert response.status_code == 502
    error = response.json()["error"]
    assert "onnx/model.onnx_data" in error and "pull again" in error
    assert file_gets(hub, repo)["onnx/model.onnx_data"] == 6
    assert f"hf.co/{repo}:latest" not in listed(app)
    assert partial_files(app) == []

    response = pull(app, f"hf.co/{repo}")
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    assert file_gets(hub, repo)["onnx/model.onnx"] == 1
    assert_embeds_like(app, f"hf.co/{repo}", models.reference[models.ext])


def test_a_failed_pull_says_what_it_kept_and_prune_removes_only_what_no_pull_holds(
    daemon: Daemon, socket: Served, hub: FakeHub, models: Models
) -> None:
    repo = "ovembed-test/kept"
    hub.cut_after("onnx/model.onnx_data", 0, times=6)
    error = pull(socket, f"hf.co/{repo}").json()["error"]
    kept = daemon.models_dir / "downloads" / "models--ovembed-test--kept"
    size = sum(p.stat().st_size for p in kept.rglob("*") if p.is_file() and not p.is_symlink())
    assert size > 0
    kept_text = f"the {human_bytes(size)} downloaded so far are kept"
    assert error.endswith(f"pull again to resume: {kept_text} (`ovembed pull --prune` removes them)"), error

    busy = "ovembed-test/busy"
    network = models.tiny / "onnx" / "model.onnx"
    hub.slow("onnx/model.onnx", network.stat().st_size / 3)  # a pull that runs for 3 s
    running = threading.Thread(target=lambda: stream_pull(socket, f"hf.co/{busy}"))
    running.start()
    wait_for(lambda: file_gets(hub, busy)["onnx/model.onnx"] == 1, 10, "the second pull to start downloading")
    pruned = daemon.cli("pull", "--prune").stdout
    running.join(60)

    assert f"downloaded for hf.co/{repo}\n" in pruned and pruned.startswith("removed "), pruned
    assert f"downloaded for hf.co/{busy}: a pull of it is running" in pruned, pruned
    assert not kept.exists()
    assert f"hf.co/{busy}:latest" in listed(socket)  # pruning beside it did not harm it
    assert daemon.cli("pull", "--prune").stdout == "no downloads are kept\n"
    assert daemon.cli("pull", check=False).stderr.strip() == "Error: pull needs a MODEL, or --prune"


# ---------------------------------------------------------------------------------------------- clients


def _leave_after_two_lines(served: Served, model: str) -> list[dict[str, Any]]:
    with served.http.stream("POST", "/api/pull", json={"model": model}, timeout=60) as response:
        lines = response.iter_lines()
        return [json.loads(next(lines)), json.loads(next(lines))]


def test_a_client_that_leaves_cancels_the_pull(daemon: Daemon, socket: Served, hub: FakeHub, models: Models) -> None:
    repo = "ovembed-test/abandoned"
    network = models.tiny / "onnx" / "model.onnx"
    hub.slow("onnx/model.onnx", network.stat().st_size / 2.5)  # the network takes 2.5 s

    first = _leave_after_two_lines(socket, f"hf.co/{repo}")
    assert first[1]["digest"] == _hub_digest(network)

    # The download in flight is dropped (huggingface_hub only calls back per 10 MiB read, so at the latest when
    # the file ends), and the pull goes no further: no config file is fetched and no model appears.
    wait_for(lambda: file_gets(hub, repo)["onnx/model.onnx"] == 1, 5, "the network download to start")
    wait_for(lambda: f"fetch of hf.co/{repo}@" in daemon.log(), 10, "the fetch to stop for want of clients")
    assert not partial_files(daemon)
    assert file_gets(hub, repo) == Counter({"onnx/model.onnx": 1})
    assert f"hf.co/{repo}:latest" not in listed(socket)
    blobs = daemon.models_dir / "downloads" / "models--ovembed-test--abandoned" / "blobs"
    assert not (blobs / _hub_digest(network).split(":")[1]).exists()

    hub.clear_faults()
    response = pull(socket, f"hf.co/{repo}")
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    assert file_gets(hub, repo)["onnx/model.onnx"] == 2
    assert_embeds_like(socket, f"hf.co/{repo}", models.reference[models.tiny])


def test_a_client_that_comes_back_at_once_gets_the_pull(socket: Served, hub: FakeHub, models: Models) -> None:
    """`ollama pull`, Ctrl-C, `ollama pull` again: the second must not inherit the first one's cancellation."""
    repo = "ovembed-test/rejoined"
    network = models.tiny / "onnx" / "model.onnx"
    hub.slow("onnx/model.onnx", network.stat().st_size / 2)

    _leave_after_two_lines(socket, f"hf.co/{repo}")
    _, messages = stream_pull(socket, f"hf.co/{repo}")

    assert messages[-1] == {"status": "success"}, messages[-3:]
    assert f"hf.co/{repo}:latest" in listed(socket)
    assert_embeds_like(socket, f"hf.co/{repo}", models.reference[models.tiny])


def test_concurrent_pulls_of_one_name_share_one_download(socket: Served, hub: FakeHub, models: Models) -> None:
    repo = "ovembed-test/together"
    network = models.tiny / "onnx" / "model.onnx"
    hub.slow("onnx/model.onnx", network.stat().st_size / 1.5)
    results: dict[str, list[dict[str, Any]]] = {}

    def run(key: str) -> None:
        results[key] = stream_pull(socket, f"hf.co/{repo}")[1]

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
    app: Served, hub: FakeHub, models: Models
) -> None:
    repo = "ovembed-test/again"
    _, first = stream_pull(app, f"hf.co/{repo}")
    assert first[-1] == {"status": "success"}
    requests_before = len(hub_requests(hub, repo))
    gets_before = file_gets(hub, repo)

    _, second = stream_pull(app, f"hf.co/{repo}")

    assert "converting to OpenVINO IR" not in {m["status"] for m in second}  # quickly: nothing is converted again
    assert second[0] == {"status": "pulling manifest"} and second[-1] == {"status": "success"}
    layers = layer_messages(second)
    assert set(layers) == set(layer_messages(first))
    assert all(len(u) == 1 and u[0]["completed"] == u[0]["total"] for u in layers.values())  # once, complete
    assert [m for m in hub_requests(hub, repo)[requests_before:] if "/resolve/" in m[1]] == []
    assert file_gets(hub, repo) == gets_before

    # `main` and the commit itself name the same repo and commit: a copy, no download.
    commit = hub.add_repo(repo, models.ext)
    for other in (f"hf.co/{repo}:main", f"hf.co/{repo}:{commit}"):
        response = pull(app, other)
        assert (response.status_code, response.json()) == (200, {"status": "success"})
    assert file_gets(hub, repo) == gets_before
    names = listed(app)
    copies = [names[f"hf.co/{repo}:{tag}"] for tag in ("latest", "main", commit)]
    assert len({item["digest"] for item in copies}) == 1
    assert_embeds_like(app, f"hf.co/{repo}:main", models.reference[models.ext])


def test_a_store_from_the_previous_release_keeps_what_its_pulls_recorded(app: Served, hub: FakeHub) -> None:
    """Manifests written before provenance was a field kept it in `extra`: /api/show shows it as before, and
    another name for the same repo and commit is still a copy."""
    repo = "ovembed-test/legacy"
    assert pull(app, f"hf.co/{repo}").json() == {"status": "success"}
    before = show(app, f"hf.co/{repo}")
    manifest = ModelStore(app.models_dir).layout.manifest(parse_name(f"hf.co/{repo}"))
    data = json.loads(manifest.read_text())
    provenance = data.pop("provenance")
    data["extra"] = {
        "hf_repo": provenance["repo"],
        "hf_commit": provenance["commit"],
        "layers": provenance["layers"],
    }
    manifest.write_text(json.dumps(data))
    assert "provenance" not in manifest.read_text()

    assert show(app, f"hf.co/{repo}") == before
    assert before["model_info"]["ovembed.hf_repo"] == repo
    gets = file_gets(hub, repo)
    assert pull(app, f"hf.co/{repo}:main").json() == {"status": "success"}
    assert file_gets(hub, repo) == gets
    assert listed(app)[f"hf.co/{repo}:main"]["digest"] == listed(app)[f"hf.co/{repo}:latest"]["digest"]


def test_two_daemons_on_one_store_download_a_model_once(
    tmp_path: Path, hub_url: str, hub: FakeHub, models: Models
) -> None:
    """The download's file lock is where pulls of two processes meet: the second waits, then finds the model."""
    repo = "ovembed-test/shared-store"
    network = models.tiny / "onnx" / "model.onnx"
    hub.slow("onnx/model.onnx", network.stat().st_size / 2)
    first = start_pull_daemon(tmp_path, hub_url)
    second = start_pull_daemon(tmp_path, hub_url)
    try:
        with over_socket(first) as one, over_socket(second) as two, ThreadPoolExecutor(max_workers=2) as pool:
            started = pool.submit(stream_pull, one, f"hf.co/{repo}")
            wait_for(lambda: file_gets(hub, repo)["onnx/model.onnx"] == 1, 10, "the first daemon's download")
            _, joined = stream_pull(two, f"hf.co/{repo}")
            _, messages = started.result()
    finally:
        stop_daemon(first)
        stop_daemon(second)
    assert messages[-1] == joined[-1] == {"status": "success"}
    assert "converting to OpenVINO IR" not in {m["status"] for m in joined}  # found stored, not converted again
    assert file_gets(hub, repo) == Counter(list(planned(models.tiny, ("onnx/model.onnx",))))


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
        with over_socket(second) as served:
            assert partial_files(second) == []  # swept at start
            assert listed(served) == {}
            response = pull(served, f"hf.co/{repo}")
            assert (response.status_code, response.json()) == (200, {"status": "success"})
            want = Counter(list(planned(models.ext, ("onnx/model.onnx", "onnx/model.onnx_data"))))
            want["onnx/model.onnx_data"] += 1  # the killed transfer started again; the finished graph was kept
            assert file_gets(hub, repo) == want
            assert_embeds_like(served, f"hf.co/{repo}", models.reference[models.ext])
    finally:
        stop_daemon(second)


# ---------------------------------------------------------------------------------------------- other clients


def test_ovembed_pull_cli(daemon: Daemon, socket: Served, models: Models) -> None:
    done = daemon.cli("pull", "hf.co/ovembed-test/cli")
    assert done.returncode == 0
    assert "success" in done.stderr
    assert "hf.co/ovembed-test/cli:latest" in listed(socket)
    assert_embeds_like(socket, "hf.co/ovembed-test/cli", models.reference[models.ext])

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
def test_real_all_minilm_pull_matches_sentence_transformers(socket: Served, hub: FakeHub) -> None:
    require_shared()
    repo = "sentence-transformers/all-MiniLM-L6-v2"
    hub.add_repo(repo, MINILM)

    response = pull(socket, "all-minilm")
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    gets = file_gets(hub, repo)
    assert gets["openvino/openvino_model.bin"] == 1
    assert not [path for path in gets if path.startswith("onnx/") or path in ("vocab.txt", "README.md")]

    alias = pull(socket, "all-minilm:l6-v2")
    assert (alias.status_code, alias.json()) == (200, {"status": "success"})
    assert file_gets(hub, repo) == gets  # the same repo and commit: a copy
    names = listed(socket)
    assert names["all-minilm:latest"]["digest"] == names["all-minilm:l6-v2"]["digest"]

    rows, expected = reference_rows()
    expected = expected.astype(np.float64)
    got = embed(socket, "all-minilm", [row["text"] for row in rows])
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

    ended: list[str] = []  # what was answered, in order
    with over_socket(running) as served, ThreadPoolExecutor(max_workers=5) as pool:
        pulling = pool.submit(stream_pull, served, f"hf.co/{repo}")
        pulling.add_done_callback(lambda _: ended.append("pull"))
        wait_for(lambda: file_gets(hub, repo)["onnx/model.onnx"] == 1, 10, "the network download to start")
        embeds = [pool.submit(embed_all) for _ in range(4)]
        for future in embeds:
            future.add_done_callback(lambda _: ended.append("embed"))
        status, _ = sigterm_while_busy(running, embeds)
        answers = [f.result() for f in embeds]
        _, messages = pulling.result()
    hub.clear_faults()
    assert status == 0, running.log()[-2000:]
    # The pull ended at the signal, before the embeds still running; they were all answered, none by the bound.
    assert ended == ["pull", "embed", "embed", "embed", "embed"]
    assert [(a.status_code, len(a.json()["embeddings"])) for a in answers] == [(200, len(texts))] * 4
    assert messages[-1] == {"error": SHUTTING_DOWN}
    assert f"hf.co/{repo}:latest" not in {r.name.display for r in ModelStore(running.models_dir).list()}


def test_a_q8_0_tag_pulls_the_repo_made_int8_beside_the_float_model(
    app: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiny random network is no test of int8's accuracy (tests/test_quantize.py holds all-MiniLM's): the
    bar is lowered so that what is tested is the way from a name to an int8 model."""
    monkeypatch.setattr(quantize, "MIN_WORST_COSINE", 0.0)
    monkeypatch.setattr(quantize, "MIN_MEAN_COSINE", 0.0)
    repo = "hf.co/ovembed-test/quantized"
    response, messages = stream_pull(app, f"{repo}:q8_0")
    statuses = [m["status"] for m in messages if "digest" not in m]
    assert response.status_code == 200 and statuses[-3:] == ["quantizing to Q8_0", "writing manifest", "success"]
    assert statuses.index("converting to OpenVINO IR") < statuses.index("quantizing to Q8_0")
    assert pull(app, repo).json() == {"status": "success"}
    models = listed(app)
    assert models[f"{repo}:q8_0"]["details"]["quantization_level"] == "Q8_0"
    assert models[f"{repo}:latest"]["details"]["quantization_level"] != "Q8_0"
    assert models[f"{repo}:q8_0"]["digest"] != models[f"{repo}:latest"]["digest"]
    info = show(app, f"{repo}:q8_0")["model_info"]
    assert info["ovembed.compute_precision"] == "int8" and "ovembed.int8.worst_cosine" in info
    assert embed(app, f"{repo}:q8_0", TEXTS).shape[0] == len(TEXTS)


def test_an_int8_pull_that_misses_the_bar_stores_nothing_and_says_by_how_much(
    app: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quantize, "MIN_WORST_COSINE", 1.000001)
    name = "hf.co/ovembed-test/unfaithful:q8_0"
    response = pull(app, name)
    error = response.json()["error"]
    assert "could not be converted: int8 is not faithful enough" in error and "worst cosine" in error, error
    assert name not in listed(app)


def test_a_bge_m3_pull_fetches_its_two_heads_and_no_other_pickle(app: Served, hub: FakeHub) -> None:
    repo = "ovembed-test/m3-heads"
    assert pull(app, f"hf.co/{repo}").json() == {"status": "success"}
    fetched = set(file_gets(hub, repo))
    assert set(REPO_HEADS.values()) <= fetched
    assert not any(path.endswith((".bin", ".pt", ".pkl")) for path in fetched - set(REPO_HEADS.values())), fetched
    assert show(app, f"hf.co/{repo}")["model_info"]["ovembed.heads"] == ["sparse", "multivector"]


@pytest.mark.parametrize(
    ("repo", "output", "asked"),
    [
        ("ovembed-test/splade", "sparse", {"sparse": True}),
        ("ovembed-test/colbert", "multivector", {"multivector": True, "input_type": "query"}),
        ("ovembed-test/colbert-stanford", "multivector", {"multivector": True}),
    ],
)
def test_sparse_and_colbert_repos_pull_and_serve_their_output(
    app: Served, hub: FakeHub, repo: str, output: str, asked: dict[str, Any]
) -> None:
    """Each layout's own files are fetched (pylate's projection, Stanford's artifact.metadata), no pickle."""
    assert pull(app, f"hf.co/{repo}").json() == {"status": "success"}
    fetched = set(file_gets(hub, repo))
    assert not any(path.endswith((".bin", ".pt", ".pkl")) for path in fetched), fetched
    assert show(app, f"hf.co/{repo}")["capabilities"] == [output]
    answer = app.http.post("/api/embed", json={"model": f"hf.co/{repo}", "input": ["why is the sky blue?"], **asked})
    assert answer.status_code == 200, answer.text
    assert answer.json()["embeddings"] == []
    assert len(answer.json()[f"{output}_embeddings"]) == 1
