"""The on-disk model store: content-addressed model folders and one manifest per name (see layout.py).

A model becomes visible only when its manifest is renamed into place, and a blob only when its finished
folder is renamed into place, so a process killed at any point leaves nothing half-written behind a name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelstore.layout import IR_FILE, IR_WEIGHTS_FILE, TOKENIZER_FILE, StoreLayout, dense_file, head_file
from modelstore.names import InvalidName, ModelName, parse_name
from modelstore.spec import ModelSpec

# A blob younger than this may belong to a create whose manifest is not written yet.
_ORPHAN_GRACE_SECONDS = 600.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class HubModel:
    """One model on the hub: a repo at a commit, in a weight format (None: the converter's default), quantized
    to a level or not (None). Two pulls of the same HubModel make the same model, so the second one copies the
    first."""

    repo: str
    commit: str
    weights: str | None = None
    quantize: str | None = None


@dataclass(frozen=True)
class Layer:
    """A file a pull fetched, as the pull stream showed it."""

    digest: str
    size: int


@dataclass(frozen=True)
class Provenance:
    """Where a pulled model came from: the name's own repo and commit (even when a mirror supplied the files),
    the weight format asked for, and the files fetched, which a pull of the model once stored shows again."""

    model: HubModel
    layers: tuple[Layer, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Provenance:
        weights, level = data.get("weights"), data.get("quantize")
        return cls(
            HubModel(
                str(data["repo"]),
                str(data["commit"]),
                None if weights is None else str(weights),
                None if level is None else str(level),
            ),
            tuple(Layer(str(layer["digest"]), int(layer["size"])) for layer in data.get("layers") or ()),
        )

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> Provenance | None:
        """The manifest's `provenance`, or the `extra` keys the releases before it wrote (hf_repo, hf_commit,
        weights, layers); None for a model made by `ovembed create`."""
        if data.get("provenance") is not None:
            return cls.from_json(data["provenance"])
        extra = data.get("extra") or {}
        if "hf_repo" not in extra:
            return None
        return cls.from_json({**extra, "repo": extra["hf_repo"], "commit": extra["hf_commit"]})

    def to_json(self) -> dict[str, Any]:
        return {
            "repo": self.model.repo,
            "commit": self.model.commit,
            "weights": self.model.weights,
            "quantize": self.model.quantize,
            "layers": [{"digest": layer.digest, "size": layer.size} for layer in self.layers],
        }


@dataclass(frozen=True)
class ModelRecord:
    """One name's manifest, with the folder it points at."""

    name: ModelName
    digest: str
    size: int
    modified_at: datetime
    source: str
    spec: ModelSpec
    path: Path
    provenance: Provenance | None = None  # for a pulled model

    @classmethod
    def from_manifest(cls, data: dict[str, Any], path: Path) -> ModelRecord:
        """Raises ValueError, KeyError or TypeError (InvalidName is a ValueError) for a manifest that is not one."""
        return cls(
            name=parse_name(data["name"]),
            digest=str(data["digest"]),
            size=int(data["size"]),
            modified_at=datetime.fromisoformat(data["modified_at"]),
            source=str(data.get("source", "")),
            spec=ModelSpec.from_json(data["spec"]),
            path=path,
            provenance=Provenance.from_manifest(data),
        )

    def to_manifest(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "name": self.name.display,
            "digest": self.digest,
            "size": self.size,
            "modified_at": self.modified_at.isoformat(),
            "source": self.source,
            "spec": self.spec.to_json(),
            "provenance": None if self.provenance is None else self.provenance.to_json(),
        }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _folder_digest(folder: Path) -> tuple[str, int]:
    """A digest over every file's relative path and content, so equal models share one blob."""
    digest = hashlib.sha256()
    size = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
        size += path.stat().st_size
    return digest.hexdigest(), size


def write_atomically(path: Path, data: bytes) -> None:
    """Write beside the target, fsync, then rename: readers see the old file or the new one, never part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ModelStore:
    """Names to finished model folders. Knows files and manifests, nothing of HTTP or inference."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.layout = StoreLayout(root)
        # Manifests as last parsed, keyed by path and checked against the file's identity: every embed request
        # looks its model up, and a stat is cheaper than reading and parsing JSON.
        self._parsed: dict[Path, tuple[tuple[int, int, int], ModelRecord]] = {}

    # Reading

    def list(self) -> list[ModelRecord]:
        """Every valid manifest, newest first, as Ollama's /api/tags sorts."""
        records = [r for r in map(self._read_manifest, self.layout.manifest_files()) if r is not None]
        return sorted(records, key=lambda r: r.modified_at, reverse=True)

    def get(self, name: ModelName) -> ModelRecord | None:
        """The model for a name, matched without regard to case as Ollama does."""
        record = self._read_manifest(self.layout.manifest(name))
        if record is not None:
            return record
        return next((r for r in self.list() if r.name.key == name.key), None)

    def missing_files(self, record: ModelRecord) -> list[str]:
        """The files the model's folder should hold and does not, or holds empty: names and sizes only, cheap
        enough for every start and every load."""
        spec = record.spec
        dense = (dense_file(i) for i in range(len(spec.dense)))
        needed = [IR_FILE, IR_WEIGHTS_FILE, TOKENIZER_FILE, *dense, *(head_file(h) for h in spec.heads)]
        missing = []
        for name in needed:
            try:
                found = (record.path / name).stat()
            except OSError:
                missing.append(name)
                continue
            empty = stat.S_ISREG(found.st_mode) and found.st_size == 0
            if empty:
                missing.append(name)
        return missing

    def verify(self, record: ModelRecord) -> str | None:
        """What is wrong with the model's folder by its content hash (reading every byte), or None if sound."""
        missing = self.missing_files(record)
        if missing:
            return f"{', '.join(missing)} missing or empty"
        digest, _ = _folder_digest(record.path)
        return None if digest == record.digest else "its files do not match its digest (a file was changed or damaged)"

    def files_signature(self, record: ModelRecord) -> tuple[tuple[str, int, int], ...]:
        """Each file of the model's folder with its size and time: changes when the folder is repaired."""
        try:
            found = [(p.name, p.stat()) for p in record.path.iterdir()]
            return tuple(sorted((name, info.st_size, info.st_mtime_ns) for name, info in found))
        except OSError:
            return ()

    def holds(self, record: ModelRecord) -> bool:
        """Whether the record's name still points at the record's content, as when it was read."""
        current = self.get(record.name)
        return current is not None and current.digest == record.digest

    def _read_manifest(self, path: Path) -> ModelRecord | None:
        """A manifest that does not parse, or whose folder is gone, is not a model.

        Parsed again only when the file changed: manifests are replaced by rename, so a new one is a new inode.
        """
        try:
            info = path.stat()
        except OSError:
            return None
        identity = (info.st_ino, info.st_mtime_ns, info.st_size)
        parsed = self._parsed.get(path)
        if parsed is not None and parsed[0] == identity:
            record = parsed[1]
        else:
            try:
                data = json.loads(path.read_bytes())
                record = ModelRecord.from_manifest(data, self.layout.blob(str(data["digest"])))
            except (OSError, ValueError, KeyError, TypeError, InvalidName):
                return None
            self._parsed[path] = (identity, record)
        return record if record.path.is_dir() else None

    # Writing

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A private folder to build a model in; removed afterwards whether or not it was committed."""
        self.sweep_staging()
        folder = self.layout.staging / f"{os.getpid()}-{uuid.uuid4().hex}"
        folder.mkdir(parents=True)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def commit(
        self, name: ModelName, staged: Path, spec: ModelSpec, source: str, provenance: Provenance | None = None
    ) -> ModelRecord:
        """Move a built folder into the blobs by its digest, then point the name at it."""
        digest, size = _folder_digest(staged)
        blob = self.layout.blob(digest)
        if not blob.is_dir():
            self.layout.blobs.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError, OSError):
                os.rename(staged, blob)
            if not blob.is_dir():
                raise OSError(f"could not store model folder {blob}")
        record = ModelRecord(
            name=name,
            digest=digest,
            size=size,
            modified_at=datetime.now(UTC).astimezone(),
            source=source,
            spec=spec,
            path=blob,
            provenance=provenance,
        )
        self._write_manifest(record)
        return record

    def _write_manifest(self, record: ModelRecord) -> None:
        self._remove_other_case(record.name)
        data = json.dumps(record.to_manifest(), indent=2).encode()
        write_atomically(self.layout.manifest(record.name), data)

    def _remove_other_case(self, name: ModelName) -> None:
        """One manifest per name regardless of case, as Ollama keeps it."""
        exact = self.layout.manifest(name)
        for path in self.layout.manifest_files():
            record = self._read_manifest(path)
            if path != exact and record is not None and record.name.key == name.key:
                path.unlink(missing_ok=True)

    def copy(self, source: ModelRecord, destination: ModelName) -> ModelRecord:
        """A second name for the same folder, as `ollama cp` writes a second manifest."""
        record = ModelRecord(
            name=destination,
            digest=source.digest,
            size=source.size,
            modified_at=datetime.now(UTC).astimezone(),
            source=source.source,
            spec=source.spec,
            path=source.path,
            provenance=source.provenance,
        )
        self._write_manifest(record)
        return record

    def delete(self, record: ModelRecord) -> None:
        """Remove the name, and its folder when no other name points at it."""
        self.layout.manifest(record.name).unlink(missing_ok=True)
        self._remove_other_case(record.name)
        self._prune_empty_dirs(self.layout.manifests)
        if record.digest not in self._digests_in_use():
            shutil.rmtree(record.path, ignore_errors=True)
        self.sweep_blobs()

    def remove_unreadable(self, name: ModelName) -> bool:
        """Remove the name's manifest if it cannot be read (truncated, or its folder gone); True if it did.

        Such a model is not listed, yet it is still the user's to remove with `ovembed rm`.
        """
        path = self.layout.manifest(name)
        if not path.is_file() or self._read_manifest(path) is not None:
            return False
        path.unlink(missing_ok=True)
        self._prune_empty_dirs(self.layout.manifests)
        self.sweep_blobs()
        return True

    def _digests_in_use(self) -> set[str]:
        return {r.digest for r in map(self._read_manifest, self.layout.manifest_files()) if r is not None}

    # Cleaning

    def sweep_staging(self) -> None:
        """Remove staging folders whose process has died, such as a create killed part-way."""
        if not self.layout.staging.is_dir():
            return
        for folder in self.layout.staging.iterdir():
            pid_text = folder.name.split("-", 1)[0]
            if not pid_text.isdigit() or not _pid_alive(int(pid_text)):
                shutil.rmtree(folder, ignore_errors=True)

    def sweep_blobs(self) -> None:
        """Remove folders no manifest names, once they are old enough not to be a create in flight."""
        if not self.layout.blobs.is_dir():
            return
        used = {self.layout.blob(digest) for digest in self._digests_in_use()}
        now = time.time()
        for blob in self.layout.blobs.iterdir():
            if blob not in used and now - blob.stat().st_ctime > _ORPHAN_GRACE_SECONDS:
                shutil.rmtree(blob, ignore_errors=True)

    def _prune_empty_dirs(self, top: Path) -> None:
        for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()
