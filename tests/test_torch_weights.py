"""torch `.pt` state dicts read without torch and without unpickling: the fixtures are torch.save's own files
(scripts/make-fixtures), and the refusals are files rewritten here to do what a weights file never does."""

from __future__ import annotations

import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from modelstore.architectures.torch_weights import UnsafeWeights, read_state_dict
from modelstore.create import CreateError, create_from_folder
from modelstore.layout import REPO_HEADS, head_file
from modelstore.names import parse_name
from modelstore.store import ModelStore
from tests.test_convert import FIXTURES
from tests.tinymodel import build_tiny_model

WEIGHTS = FIXTURES / "torch-weights"


def _rewritten(source: Path, dest: Path, replace: dict[str, bytes], compress: frozenset[str] = frozenset()) -> Path:
    """`source`'s archive with some members' bytes replaced (and some compressed), as a tampered file is."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(dest, "w") as tampered:
        for info in original.infolist():
            data = next((v for k, v in replace.items() if info.filename.endswith(k)), original.read(info))
            kind = zipfile.ZIP_DEFLATED if any(info.filename.endswith(k) for k in compress) else zipfile.ZIP_STORED
            tampered.writestr(info.filename, data, compress_type=kind)
    return dest


class _RunsCode:
    """Unpickled the ordinary way, this touches a file: what a malicious weights file would do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


@pytest.mark.parametrize("file", ["sparse_linear.pt", "colbert_linear.pt", "strided.pt"])
def test_a_state_dict_reads_as_torch_wrote_it(file: str) -> None:
    expected = np.load(WEIGHTS / "expected.npz")
    got = read_state_dict(WEIGHTS / file)
    wanted = {key.split(":", 1)[1]: expected[key] for key in expected.files if key.startswith(f"{file}:")}
    assert set(got) == set(wanted)
    for name, array in wanted.items():
        assert got[name].shape == array.shape and got[name].dtype == array.dtype
        np.testing.assert_array_equal(got[name], array)


def test_heads_have_the_shapes_flag_embedding_gives_them() -> None:
    sparse, colbert = read_state_dict(WEIGHTS / "sparse_linear.pt"), read_state_dict(WEIGHTS / "colbert_linear.pt")
    assert sparse["weight"].shape == (1, 16) and sparse["bias"].shape == (1,)
    assert colbert["weight"].shape == (16, 16) and colbert["bias"].shape == (16,)


def test_a_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    payload = pickle.dumps({"weight": _RunsCode(marker)}, protocol=2)
    pickle.loads(payload)  # our own payload, loaded the ordinary way to show that it does run code
    assert marker.exists()
    marker.unlink()
    tampered = _rewritten(WEIGHTS / "sparse_linear.pt", tmp_path / "evil.pt", {"/data.pkl": payload})
    with pytest.raises(UnsafeWeights, match=r"evil\.pt was not read: it asks to call \S+, which a file of tensors"):
        read_state_dict(tampered)
    assert not marker.exists()


def test_a_storage_shorter_than_its_elements_is_refused(tmp_path: Path) -> None:
    source = WEIGHTS / "colbert_linear.pt"
    with zipfile.ZipFile(source) as archive:
        storage = next(n for n in archive.namelist() if n.endswith("/data/0"))
        short = archive.read(storage)[:-4]
    tampered = _rewritten(source, tmp_path / "short.pt", {"/data/0": short})
    with pytest.raises(UnsafeWeights, match=r"holds \d+ bytes where \d+ elements need \d+"):
        read_state_dict(tampered)


def test_a_compressed_member_is_refused(tmp_path: Path) -> None:
    tampered = _rewritten(WEIGHTS / "sparse_linear.pt", tmp_path / "zipped.pt", {}, frozenset({"/data/0"}))
    with pytest.raises(UnsafeWeights, match=r"compressed, which torch\.save never does"):
        read_state_dict(tampered)


def test_a_file_that_is_not_a_torch_archive_is_refused(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))
    with pytest.raises(UnsafeWeights, match=r"legacy\.pt is not a torch zip archive"):
        read_state_dict(legacy)
    other = shutil.make_archive(str(tmp_path / "other"), "zip", WEIGHTS)
    with pytest.raises(UnsafeWeights, match=r"does not hold exactly one data\.pkl"):
        read_state_dict(Path(other))


def _with_heads(dest: Path, hidden: int = 16) -> Path:
    """A tiny model laid out as bge-m3's repo is: its network, and FlagEmbedding's two head files at the root."""
    build_tiny_model(dest, hidden=hidden)
    for name in REPO_HEADS.values():
        shutil.copyfile(WEIGHTS / name, dest / name)
    return dest


def test_flag_embedding_heads_are_stored_beside_the_network_as_read(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    record = create_from_folder(store, parse_name("m3-like"), _with_heads(tmp_path / "repo"))
    assert record.spec.heads == ("sparse", "multivector")
    assert ModelStore(tmp_path / "models").get(parse_name("m3-like")).spec.heads == ("sparse", "multivector")
    for output, name in REPO_HEADS.items():
        with np.load(record.path / head_file(output)) as stored:
            source = read_state_dict(WEIGHTS / name)
            np.testing.assert_array_equal(stored["weight"], source["weight"])
            np.testing.assert_array_equal(stored["bias"], source["bias"])
    (record.path / head_file("multivector")).unlink()
    assert store.missing_files(record) == [head_file("multivector")]


def test_a_head_of_another_width_or_an_unsafe_one_refuses_the_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    with pytest.raises(CreateError, match=r"sparse_linear\.pt takes 16-wide states and the network gives 8"):
        create_from_folder(store, parse_name("narrow"), _with_heads(tmp_path / "narrow", hidden=8))
    unsafe = _with_heads(tmp_path / "unsafe")
    payload = pickle.dumps({"weight": _RunsCode(tmp_path / "ran")}, protocol=2)
    _rewritten(WEIGHTS / "colbert_linear.pt", unsafe / "colbert_linear.pt", {"/data.pkl": payload})
    with pytest.raises(CreateError, match=r"colbert_linear\.pt was not read"):
        create_from_folder(store, parse_name("unsafe"), unsafe)
    assert store.list() == [] and not (tmp_path / "ran").exists()
