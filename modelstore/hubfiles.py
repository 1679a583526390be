"""Which files of a Hugging Face repo a pull needs: one convertible network, its tokenizer and configs.

Only what the engine uses is fetched: the repo's own OpenVINO IR if it has one, else its fp32 ONNX export with
any external data beside it, else (asked for separately, after any pre-converted mirror) its safetensors
checkpoint, which ovembed converts itself. The only PyTorch pickles fetched are FlagEmbedding's two small heads
(layout.REPO_HEADS), which are read without unpickling; a repo's pickled network never is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from modelstore.layout import REPO_CHECKPOINTS, REPO_HEADS, REPO_IR_FILES, REPO_ONNX_FILES, is_repo_config


@dataclass(frozen=True)
class RemoteFile:
    """A file as the hub lists it; `sha256` is known for LFS files, `git_sha1` for the rest."""

    path: str
    size: int
    sha256: str | None
    git_sha1: str | None

    @property
    def digest(self) -> str:
        """Ollama shows each layer by digest; LFS files have a sha256, small files only their git blob id."""
        return f"sha256:{self.sha256}" if self.sha256 else f"sha1:{self.git_sha1}"


@dataclass(frozen=True)
class DownloadPlan:
    """The files to fetch, and which network route they make."""

    network: str
    files: tuple[RemoteFile, ...]

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def _onnx_companions(network: str, paths: set[str]) -> set[str]:
    """External data beside an ONNX graph: `model.onnx_data`, or loose tensor files in its folder (bge-m3)."""
    folder = PurePosixPath(network).parent
    companions = set()
    for path in paths:
        candidate = PurePosixPath(path)
        if candidate.parent != folder or path == network:
            continue
        data_file = candidate.name.startswith(f"{PurePosixPath(network).name}_data")
        # Loose external tensors carry no extension (bge-m3's Constant_7_attr__value).
        if data_file or "." not in candidate.name:
            companions.add(path)
    return companions


def _export(by_path: dict[str, RemoteFile]) -> tuple[str, set[str]] | None:
    """The repo's own OpenVINO IR, else its ONNX export with any external data."""
    for xml, weights in REPO_IR_FILES:
        if xml in by_path and weights in by_path:
            return xml, {xml, weights}
    for onnx in REPO_ONNX_FILES:
        if onnx in by_path:
            return onnx, {onnx} | _onnx_companions(onnx, set(by_path))
    return None


def _checkpoint(by_path: dict[str, RemoteFile]) -> tuple[str, set[str]] | None:
    """The safetensors checkpoint at the root: one file, or an index (whose shards `with_shards` adds)."""
    for path in REPO_CHECKPOINTS:
        if path in by_path:
            return path, {path}
    return None


def with_shards(plan: DownloadPlan, files: list[RemoteFile], shards: set[str]) -> DownloadPlan | None:
    """The plan with the shards an index names, or None when the repo lacks any of them."""
    by_path = {f.path: f for f in files}
    if not shards <= set(by_path):
        return None
    chosen = {f.path for f in plan.files} | shards
    return replace(plan, files=tuple(by_path[p] for p in sorted(chosen, key=_layer_order)))


def plan_download(files: list[RemoteFile], *, checkpoint: bool = False) -> DownloadPlan | None:
    """The files to fetch for the repo's export, or with `checkpoint` for its safetensors; None if it has none."""
    by_path = {f.path: f for f in files}
    route = (_checkpoint if checkpoint else _export)(by_path)
    if route is None:
        return None
    network, chosen = route
    chosen |= {path for path in by_path if is_repo_config(path) or path in REPO_HEADS.values()}
    return DownloadPlan(network=network, files=tuple(by_path[p] for p in sorted(chosen, key=_layer_order)))


def _layer_order(path: str) -> tuple[int, str]:
    """The network first, as Ollama lists the model layer first; configs after."""
    network = path.endswith((".xml", ".bin", ".onnx", ".safetensors", ".safetensors.index.json")) or "onnx" in path
    return (0 if network else 1, path)
