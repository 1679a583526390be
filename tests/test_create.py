"""`ovembed create NAME --from DIR`, run as a real subprocess against a store of its own."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelstore.create import DiskFull, create_from_folder
from modelstore.names import parse_name
from modelstore.stconfig import describe_repo
from modelstore.store import ModelStore
from tests.conftest import MINILM, OVEMBED, REPO, Daemon, daemon_env, free_port, require_shared
from tests.test_convert import FIXTURES
from tests.tinymodel import build_tiny_model, reference_vectors

HEX64 = re.compile(r"[0-9a-f]{64}")


def run_create(models_dir: Path, name: str, folder: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The CLI with no daemon anywhere: OLLAMA_HOST points at a closed port, so create must not need one."""
    env = daemon_env(models_dir, free_port())
    return subprocess.run(
        [*OVEMBED, "create", name, "--from", str(folder)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def create_ok(models_dir: Path, name: str, folder: Path) -> subprocess.CompletedProcess[str]:
    result = run_create(models_dir, name, folder)
    assert result.returncode == 0, f"create {name} failed: {result.stderr}"
    return result


def manifest_path(models_dir: Path, name: str) -> Path:
    return models_dir / "manifests" / "registry.ollama.ai" / "library" / name / "latest.json"


def read_manifest(models_dir: Path, name: str) -> dict[str, Any]:
    path = manifest_path(models_dir, name)
    assert path.is_file(), f"no manifest at {path}"
    return json.loads(path.read_text())


def manifest_files(models_dir: Path) -> list[Path]:
    return sorted((models_dir / "manifests").rglob("*.json"))


def staging_folders(models_dir: Path) -> list[Path]:
    staging = models_dir / "staging"
    return sorted(p for p in staging.iterdir() if p.is_dir()) if staging.is_dir() else []


def blob_folders(models_dir: Path) -> list[Path]:
    blobs = models_dir / "blobs"
    return sorted(p for p in blobs.iterdir() if p.is_dir()) if blobs.is_dir() else []


def assert_store_empty(models_dir: Path) -> None:
    assert ModelStore(models_dir).list() == []
    assert manifest_files(models_dir) == []
    assert staging_folders(models_dir) == []


# Successful creates


@pytest.mark.parametrize(
    ("source", "external_data", "origin"),
    [
        ("onnx", False, "onnx/model.onnx"),
        ("onnx", True, "onnx/model.onnx"),
        ("openvino", False, "openvino/openvino_model.xml"),
    ],
    ids=["onnx", "onnx-external-data", "openvino"],
)
def test_create_writes_manifest_and_blob(tmp_path: Path, source: str, external_data: bool, origin: str) -> None:
    folder = build_tiny_model(tmp_path / "src", source=source, external_data=external_data)
    if external_data:
        assert (folder / "onnx" / "model.onnx_data").is_file()  # the weights really are outside the .onnx
    models = tmp_path / "models"
    before = time.time()
    result = create_ok(models, "made", folder)
    assert "created made:latest" in result.stdout

    manifest = read_manifest(models, "made")
    assert manifest["name"] == "made:latest"
    assert str(folder.resolve()) in manifest["source"]
    assert origin in manifest["source"]
    spec = manifest["spec"]
    assert spec["pooling"] == "mean"
    assert spec["normalize"] is True
    # sentence_bert_config's max_seq_length (32), not tokenizer.json's stored truncation (16) or the
    # config's max_position_embeddings (64).
    tokenizer_truncation = json.loads((folder / "tokenizer.json").read_text())["truncation"]["max_length"]
    assert tokenizer_truncation == 16
    assert spec["context_length"] == 32
    assert spec["dimension"] == 16
    assert spec["precision"] == "fp32"
    assert spec["architecture"] == "bert"
    assert isinstance(spec["parameter_count"], int) and spec["parameter_count"] > 0
    assert HEX64.fullmatch(manifest["digest"])
    modified = datetime.fromisoformat(manifest["modified_at"])
    assert modified.tzinfo is not None
    assert before - 5 <= modified.timestamp() <= time.time() + 5

    blob = models / "blobs" / f"sha256-{manifest['digest']}"
    files = sorted(p.name for p in blob.iterdir())
    assert files == ["openvino_model.bin", "openvino_model.xml", "tokenizer.json"]
    assert manifest["size"] == sum(p.stat().st_size for p in blob.iterdir())
    assert (blob / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
    assert staging_folders(models) == []

    records = ModelStore(models).list()
    assert [r.name.display for r in records] == ["made:latest"]
    assert records[0].path == blob


def test_onnx_and_openvino_sources_give_the_same_parameter_count(tmp_path: Path) -> None:
    onnx_src = build_tiny_model(tmp_path / "a", source="onnx")
    ov_src = build_tiny_model(tmp_path / "b", source="openvino")
    models = tmp_path / "models"
    create_ok(models, "from-onnx", onnx_src)
    create_ok(models, "from-ov", ov_src)
    a, b = read_manifest(models, "from-onnx")["spec"], read_manifest(models, "from-ov")["spec"]
    # The tiny network's weights: vocab x 16 + 64 x 16 + 2 x 16 + 16 x 16 + 16 x 16 + 16.
    vocab = json.loads((onnx_src / "config.json").read_text())["vocab_size"]
    expected = vocab * 16 + 64 * 16 + 2 * 16 + 16 * 16 + 16 * 16 + 16
    assert a["parameter_count"] == expected
    assert b["parameter_count"] == expected


@pytest.mark.parametrize(
    ("variant", "pooling", "normalize"),
    [("cls", "cls", True), ("lasttoken", "lasttoken", True), ("raw", "mean", False)],
)
def test_pooling_and_normalize_are_read(
    tmp_path: Path, tiny_variants: dict[str, Path], variant: str, pooling: str, normalize: bool
) -> None:
    models = tmp_path / "models"
    create_ok(models, "variant", tiny_variants[variant])
    spec = read_manifest(models, "variant")["spec"]
    assert spec["pooling"] == pooling
    assert spec["normalize"] is normalize


def test_same_content_under_two_names_shares_one_blob(tmp_path: Path, tiny_dir: Path) -> None:
    models = tmp_path / "models"
    create_ok(models, "first", tiny_dir)
    create_ok(models, "second", tiny_dir)
    first, second = read_manifest(models, "first"), read_manifest(models, "second")
    assert first["digest"] == second["digest"]
    assert blob_folders(models) == [models / "blobs" / f"sha256-{first['digest']}"]
    assert sorted(r.name.display for r in ModelStore(models).list()) == ["first:latest", "second:latest"]
    assert staging_folders(models) == []


def test_recreating_a_name_replaces_it(tmp_path: Path, tiny_dir: Path, tiny_variants: dict[str, Path]) -> None:
    models = tmp_path / "models"
    create_ok(models, "again", tiny_dir)
    old = read_manifest(models, "again")
    create_ok(models, "again", tiny_variants["cls"])
    new = read_manifest(models, "again")
    assert new["digest"] != old["digest"]
    assert new["spec"]["pooling"] == "cls"
    assert new["modified_at"] >= old["modified_at"]
    records = ModelStore(models).list()
    assert [(r.name.display, r.digest) for r in records] == [("again:latest", new["digest"])]
    assert manifest_files(models) == [manifest_path(models, "again")]


def test_a_store_sees_a_name_rewritten_by_another_process(
    tmp_path: Path, tiny_dir: Path, tiny_variants: dict[str, Path]
) -> None:
    """The daemon keeps parsed manifests; a manifest replaced under it (by `ovembed create`) is read anew."""
    models = tmp_path / "models"
    daemon_view = ModelStore(models)
    create_ok(models, "again", tiny_dir)
    first = daemon_view.get(parse_name("again"))
    assert first is not None and daemon_view.get(parse_name("again")) is first  # parsed once
    create_ok(models, "again", tiny_variants["cls"])
    second = daemon_view.get(parse_name("again"))
    assert second is not None and second.digest != first.digest and second.spec.pooling == "cls"
    manifest_path(models, "again").unlink()
    assert daemon_view.get(parse_name("again")) is None


# Failures


def _no_network(tmp_path: Path) -> Path:
    return build_tiny_model(tmp_path / "src", source="none")


def _no_tokenizer(tmp_path: Path) -> Path:
    folder = build_tiny_model(tmp_path / "src")
    (folder / "tokenizer.json").unlink()
    return folder


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a folder")
    return path


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "does-not-exist"


def _max_pooling(tmp_path: Path) -> Path:
    folder = build_tiny_model(tmp_path / "src")
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 16, "pooling_mode_max_tokens": True})
    )
    return folder


def _corrupt_tokenizer(tmp_path: Path) -> Path:
    folder = build_tiny_model(tmp_path / "src")
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    return folder


def _corrupt_network(tmp_path: Path) -> Path:
    """Fails only inside the staging folder, at conversion, so the staging cleanup is exercised."""
    folder = build_tiny_model(tmp_path / "src")
    (folder / "onnx" / "model.onnx").write_bytes(b"\x00garbage, not a protobuf" * 64)
    return folder


@pytest.mark.parametrize(
    ("make_folder", "expected"),
    [
        (
            _no_network,
            [r"has no network", r"expected openvino/openvino_model\.xml, onnx/model\.onnx or model\.safetensors"],
        ),
        (_no_tokenizer, [r"has no tokenizer\.json"]),
        (_a_file, [r"model\.onnx is not a folder"]),
        (_missing, [r"does-not-exist is not a folder"]),
        (_max_pooling, [r"unsupported pooling max: ovembed pools by mean, CLS or last token"]),
        (_corrupt_tokenizer, [r"cannot read tokenizer\.json"]),
        # The reason itself, not OpenVINO's leading "Exception from core.cpp:84:" source location.
        (_corrupt_network, [r"OpenVINO cannot read model\.onnx: (?!Exception from)\S.*model\.onnx"]),
    ],
    ids=["no-network", "no-tokenizer", "file-not-folder", "missing-path", "max-pooling", "bad-tokenizer", "bad-onnx"],
)
def test_bad_folder_fails_cleanly(tmp_path: Path, make_folder: Any, expected: list[str]) -> None:
    folder = make_folder(tmp_path)
    models = tmp_path / "models"
    result = run_create(models, "broken", folder)
    assert result.returncode != 0
    # OpenVINO's own frontends may log to stderr first; ovembed's message is the last line.
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for pattern in expected:
        assert re.search(pattern, last_line), result.stderr
    assert result.stdout == ""
    assert_store_empty(models)


@pytest.mark.parametrize("name", ["bad name!", "../x", "a/b/c/d", ""])
def test_invalid_name_fails_cleanly(tmp_path: Path, tiny_dir: Path, name: str) -> None:
    models = tmp_path / "models"
    result = run_create(models, name, tiny_dir)
    assert result.returncode != 0
    assert result.stderr.startswith("Error: invalid model name"), result.stderr
    assert "Traceback" not in result.stderr
    assert_store_empty(models)
    # Nothing escaped the store either: `../x` must not have made a folder beside it.
    assert not (tmp_path / "x").exists()


def test_failure_keeps_existing_models(tmp_path: Path, tiny_dir: Path) -> None:
    """A failed re-create of a name leaves the model it had untouched."""
    models = tmp_path / "models"
    create_ok(models, "keep", tiny_dir)
    before = read_manifest(models, "keep")
    result = run_create(models, "keep", _max_pooling(tmp_path))
    assert result.returncode != 0
    assert read_manifest(models, "keep") == before
    assert staging_folders(models) == []


# Atomicity against a real kill, on the real model


def _wait_for_staging(process: subprocess.Popen[bytes], models: Path, need_file: bool, timeout: float) -> bool:
    """Poll until a staging folder (holding a file, if asked) exists; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for folder in staging_folders(models):
            if not need_file or any(folder.iterdir()):
                return True
        time.sleep(0.002)
    return False


def test_killed_create_leaves_no_model_and_next_create_sweeps(tmp_path: Path) -> None:
    require_shared()
    source = tmp_path / "minilm-onnx"
    # Without its openvino/ folder the 90 MB ONNX network has to be converted, which takes a while.
    shutil.copytree(MINILM, source, ignore=shutil.ignore_patterns("openvino"))
    assert (source / "onnx" / "model.onnx").is_file()
    assert not (source / "openvino").exists()

    # First kill mid-write (a file already in the staging folder), then, if the machine was fast enough to
    # commit before the kill landed, earlier: as soon as the staging folder exists.
    killed_in_flight = None
    for attempt, need_file in enumerate([True, False, False]):
        models = tmp_path / f"models-{attempt}"
        env = daemon_env(models, free_port())
        process = subprocess.Popen(
            [*OVEMBED, "create", "big", "--from", str(source)],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            seen = _wait_for_staging(process, models, need_file, timeout=120)
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            _, stderr = process.communicate(timeout=30)
        assert seen, f"create ended before its staging folder was seen: {stderr.decode(errors='replace')}"
        assert process.returncode == -signal.SIGKILL
        if manifest_path(models, "big").exists():
            continue  # the kill landed after the commit: inconclusive, try again earlier
        killed_in_flight = models
        break
    assert killed_in_flight is not None, "every kill landed after the commit; could not test a kill mid-create"
    models = killed_in_flight

    assert ModelStore(models).list() == []
    assert manifest_files(models) == []
    dead = staging_folders(models)
    assert dead, "the killed create's staging folder should still be there to sweep"

    result = create_ok(models, "big", source)
    assert "created big:latest" in result.stdout
    manifest = read_manifest(models, "big")
    assert manifest["spec"]["dimension"] == 384
    assert manifest["spec"]["context_length"] == 256
    assert manifest["spec"]["pooling"] == "mean"
    assert [r.name.display for r in ModelStore(models).list()] == ["big:latest"]
    for folder in dead:
        assert not folder.exists(), f"dead staging folder {folder} was not swept"
    assert staging_folders(models) == []
    blob = models / "blobs" / f"sha256-{manifest['digest']}"
    assert (blob / "openvino_model.xml").is_file() and (blob / "openvino_model.bin").is_file()


# A running daemon sees new manifests


def test_created_model_is_served_without_restart(daemon: Daemon, tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "live-src", pooling="cls", seed=11)
    name = "create-live-test"
    pid = daemon.process.pid
    with daemon.client() as client:
        before = client.post("/api/embed", json={"model": name, "input": "hello world"})
        assert before.status_code == 404
        try:
            daemon.cli("create", name, "--from", str(folder))
            tags = client.get("/api/tags").json()["models"]
            assert f"{name}:latest" in [m["name"] for m in tags]
            response = client.post("/api/embed", json={"model": name, "input": ["hello world", "second text"]})
            assert response.status_code == 200, response.text
            got = np.array(response.json()["embeddings"], dtype=np.float64)
        finally:
            client.request("DELETE", "/api/delete", json={"model": name})
    assert daemon.process.poll() is None and daemon.process.pid == pid  # same daemon, never restarted
    expected = reference_vectors(folder, ["hello world", "second text"]).astype(np.float64)
    assert got.shape == (2, 16)
    cosines = (got * expected).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosines.min() >= 0.99999


def _as_hub_snapshot(folder: Path, root: Path) -> Path:
    """Lay a model folder out as a Hugging Face cache does: a snapshot of symlinks into a blobs folder."""
    blobs, snapshot = root / "blobs", root / "snapshots" / "abc123"
    blobs.mkdir(parents=True)
    for index, path in enumerate(sorted(p for p in folder.rglob("*") if p.is_file())):
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, blobs / f"blob{index}")
        link.symlink_to(Path("../" * (len(link.relative_to(snapshot).parts) + 1)) / "blobs" / f"blob{index}")
    return snapshot


def test_create_from_a_hub_snapshot_of_symlinks_with_external_data(tmp_path: Path) -> None:
    """OpenVINO refuses ONNX external data reached through symlinks; create reads such a network anyway."""
    plain = build_tiny_model(tmp_path / "plain", external_data=True, seed=5)
    snapshot = _as_hub_snapshot(plain, tmp_path / "hub-cache")
    assert (snapshot / "onnx" / "model.onnx_data").is_symlink()
    models = tmp_path / "models"
    create_ok(models, "from-plain", plain)
    create_ok(models, "from-snapshot", snapshot)
    assert read_manifest(models, "from-snapshot")["digest"] == read_manifest(models, "from-plain")["digest"]
    assert staging_folders(models) == []


@pytest.mark.parametrize(("catalog", "stored"), [(16, 16), (64, 32)])
def test_the_catalog_context_caps_the_repos_own(tmp_path: Path, tiny_dir: Path, catalog: int, stored: int) -> None:
    """Ollama cuts at its num_ctx for the tag; the model's own max_seq_length (32 here) still bounds it."""
    own = describe_repo(tiny_dir)
    assert own.context_length == 32
    record = create_from_folder(
        ModelStore(tmp_path / "store"), parse_name("capped"), tiny_dir, fallback=replace(own, context_length=catalog)
    )
    assert record.spec.context_length == stored


def test_a_full_disk_says_so_leaves_nothing_and_the_retry_succeeds(tmpfs: Callable[[str], Path]) -> None:
    require_shared()
    small_disk = tmpfs("80m")
    store = ModelStore(small_disk / "models")
    filler = small_disk / "filler"
    filler.write_bytes(bytes(60 << 20))  # 20 MB left for a 45 MB fp16 network
    with pytest.raises(DiskFull) as error:
        create_from_folder(store, parse_name("minilm"), MINILM, weights="fp16")
    message = str(error.value)
    assert message.startswith(f"disk full while writing the model under {store.root}: about ")
    assert "MB are needed and" in message and "`ovembed rm`" in message
    assert store.list() == [] and staging_folders(store.root) == []
    filler.unlink()
    record = create_from_folder(store, parse_name("minilm"), MINILM, weights="fp16")
    assert [r.name.display for r in store.list()] == [record.name.display]


def test_verify_finds_a_changed_byte_that_the_cheap_check_cannot(tmp_path: Path, tiny_dir: Path) -> None:
    models = tmp_path / "models"
    env = daemon_env(models, free_port())
    create_ok(models, "sound", tiny_dir)
    changed = create_from_folder(ModelStore(models), parse_name("changed"), build_tiny_model(tmp_path / "b", seed=9))

    def verify(*names: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*OVEMBED, "verify", *names], env=env, cwd=REPO, capture_output=True, text=True)

    assert (verify().returncode, verify("sound").stdout) == (0, "sound:latest: ok\n")
    weights = changed.path / "openvino_model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, same name: only the hash can tell
    weights.write_bytes(bytes(data))
    assert ModelStore(models).missing_files(changed) == []
    result = verify()
    assert result.returncode == 1
    assert "sound:latest: ok" in result.stdout
    assert "changed:latest: damaged, its files do not match its digest" in result.stdout
    assert verify("nothing-here").returncode == 1


@pytest.mark.parametrize("fixture", ["bert-mean", "bert-rerank-onnx"])
def test_one_source_made_twice_in_one_process_is_one_model(tmp_path: Path, fixture: str) -> None:
    """OpenVINO names unnamed nodes by a counter that runs across the process; the store names them by their
    place, so the same checkpoint (built) or ONNX (read) created twice, in two stores, holds one digest."""
    made = [
        create_from_folder(ModelStore(tmp_path / f"store-{i}"), parse_name("twice"), FIXTURES / fixture)
        for i in range(2)
    ]
    assert made[0].digest == made[1].digest
    assert (made[0].path / "openvino_model.xml").read_bytes() == (made[1].path / "openvino_model.xml").read_bytes()
