"""Where everything lives: the store's folders, a stored model's files, and the files a repo may offer.

Every path and candidate-file list is written here once; the store, create, convert, the pull planner and
the engine ask this module instead of spelling names of their own.

The store, under its root:
    blobs/sha256-<hex>/                              a finished model folder, named by its content digest
    manifests/<host>/<namespace>/<model>/<tag>.json  what a name points at, with its spec
    staging/<pid>-<random>/                          work in progress; never read, swept when its process is gone
    downloads/                                       huggingface_hub's cache of files a pull has fetched
    downloads/.pulls/models--<org>--<repo>.lock      held by the pull of that repo while it runs
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from modelstore.names import ModelName

MANIFESTS_FOLDER = "manifests"
# A stored model folder holds the network (its graph and its weights), the tokenizer, and any Dense layers.
IR_FILE = "openvino_model.xml"
IR_WEIGHTS_FILE = "openvino_model.bin"
TOKENIZER_FILE = "tokenizer.json"

# A repo's networks, in order of preference: its own IR needs no conversion at all, then its ONNX export.
REPO_IR_FILES = (
    ("openvino/openvino_model.xml", "openvino/openvino_model.bin"),
    ("openvino_model.xml", "openvino_model.bin"),
)
REPO_ONNX_FILES = ("onnx/model.onnx", "model.onnx")
# Last, a checkpoint that ovembed builds into a network itself; an index names the shards beside it.
REPO_CHECKPOINTS = ("model.safetensors", "model.safetensors.index.json")
REPO_NETWORKS = (*(xml for xml, _ in REPO_IR_FILES), *REPO_ONNX_FILES, *REPO_CHECKPOINTS)
# Repos like bge-m3 put a tokenizer of their own beside the ONNX graph.
REPO_TOKENIZERS = ("tokenizer.json", "onnx/tokenizer.json")
# Sentence-transformers' configs and the tokenizer's, at the repo root.
REPO_CONFIGS = frozenset(
    {
        "config.json",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "artifact.metadata",
    }
)
# Stanford ColBERT's settings file (markers, lengths), beside its config.json.
COLBERT_METADATA = "artifact.metadata"


# FlagEmbedding's heads on the last hidden states (bge-m3's sparse and ColBERT outputs), by the output each
# gives: the only torch pickles a pull fetches, read by architectures/torch_weights.py and never unpickled.
REPO_HEADS = {"sparse": "sparse_linear.pt", "multivector": "colbert_linear.pt"}


def head_file(output: str) -> str:
    """A stored model's head for `output` (sparse, multivector), weight and bias as float32."""
    return f"{output}_head.npz"


def dense_file(index: int) -> str:
    """A stored model's Dense layer `index` (after pooling), weight and bias as float32."""
    return f"dense_{index}.npz"


def is_repo_config(path: str) -> bool:
    """A file a model needs besides its network: root configs, a Pooling module's config, a Dense module's
    config and safetensors weights, a tokenizer beside ONNX."""
    parts = PurePosixPath(path).parts
    if len(parts) == 1:
        return parts[0] in REPO_CONFIGS
    module = len(parts) == 2 and (
        (parts[1] == "config.json" and ("Pooling" in parts[0] or "Dense" in parts[0]))
        or (parts[1] == "model.safetensors" and "Dense" in parts[0])
    )
    return module or path in REPO_TOKENIZERS


def is_checkpoint(path: Path) -> bool:
    return path.name in REPO_CHECKPOINTS


def is_checkpoint_index(path: str) -> bool:
    return path == REPO_CHECKPOINTS[1]


def first_present(folder: Path, candidates: tuple[str, ...]) -> Path | None:
    """The first candidate that is a file under `folder`."""
    return next((folder / c for c in candidates if (folder / c).is_file()), None)


REPO_DOWNLOAD_PREFIX = "models--"


@dataclass(frozen=True)
class StoreLayout:
    """The folders of one store root."""

    root: Path

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def manifests(self) -> Path:
        return self.root / MANIFESTS_FOLDER

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    def blob(self, digest: str) -> Path:
        return self.blobs / f"sha256-{digest}"

    def manifest(self, name: ModelName) -> Path:
        return _manifest_path(self.root, name.path_parts)

    def manifest_files(self) -> list[Path]:
        if not self.manifests.is_dir():
            return []
        return [p for p in self.manifests.glob("*/*/*/*.json") if p.is_file()]

    def repo_download(self, repo: str) -> Path:
        """huggingface_hub's cache folder for one repo."""
        return self.downloads / f"{REPO_DOWNLOAD_PREFIX}{repo.replace('/', '--')}"

    def download_lock(self, repo: str) -> Path:
        return self.downloads / ".pulls" / f"{self.repo_download(repo).name}.lock"

    def hub_locks(self, repo: str) -> Path:
        """huggingface_hub's own per-file locks for one repo's downloads."""
        return self.downloads / ".locks" / self.repo_download(repo).name


@functools.lru_cache(maxsize=1024)
def _manifest_path(root: Path, parts: tuple[str, str, str, str]) -> Path:
    """Cached: every embed request looks its model's manifest up, and joining paths is slow in Python."""
    host, namespace, model, tag = parts
    return root / MANIFESTS_FOLDER / host / namespace / model / f"{tag}.json"
