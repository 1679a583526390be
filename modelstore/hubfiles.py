"""Which files of a Hugging Face repo a pull needs: one convertible network, its tokenizer and configs.

Only what the engine uses is fetched, never PyTorch weights: the repo's own OpenVINO IR if it has one,
else its fp32 ONNX export with any external data beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from modelstore.layout import REPO_IR_FILES, REPO_ONNX_FILES, is_repo_config


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


def plan_download(files: list[RemoteFile]) -> DownloadPlan | None:
    """The files to fetch for the best route the repo offers, or None when it has nothing convertible."""
    by_path = {f.path: f for f in files}
    chosen: set[str] | None = None
    network = ""
    for xml, weights in REPO_IR_FILES:
        if xml in by_path and weights in by_path:
            chosen, network = {xml, weights}, xml
            break
    if chosen is None:
        for onnx in REPO_ONNX_FILES:
            if onnx in by_path:
                chosen, network = {onnx} | _onnx_companions(onnx, set(by_path)), onnx
                break
    if chosen is None:
        return None
    chosen |= {path for path in by_path if is_repo_config(path)}
    return DownloadPlan(network=network, files=tuple(by_path[p] for p in sorted(chosen, key=_layer_order)))


def _layer_order(path: str) -> tuple[int, str]:
    """The network first, as Ollama lists the model layer first; configs after."""
    return (0 if path.endswith((".xml", ".bin", ".onnx")) or "onnx" in path else 1, path)
