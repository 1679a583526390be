"""The fake hub against the real huggingface_hub client, pinning down how 2.4.0 downloads.

What these tests establish about huggingface_hub 2.4.0 (the daemon's pull logic relies on it):

* A repeated ``snapshot_download`` sends only the revision request; files already in the snapshot
  cost no HEAD and no GET.
* A 500 on a file GET is not retried (only 408/429 are); the call raises ``HfHubHTTPError``, the
  other files still land, and a second call fetches only the missing file.
* A broken transfer is retried after 1 s, at most 5 times in a row. The body is read in 10 MiB
  chunks (``DOWNLOAD_CHUNK_SIZE``) and only whole chunks count as progress: a retry resumes with
  ``Range`` from the last full 10 MiB, so a cut inside a smaller file restarts it from byte 0.
"""

from __future__ import annotations

import filecmp
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path

import httpx
import httpx2  # huggingface_hub's own HTTP client; its errors surface as-is
import pytest
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.fakehub import FakeHub, running_hub

REPO = "org/tiny"
GATED = "org/gated"
MINILM = Path(__file__).resolve().parents[2] / "shared" / "models" / "all-MiniLM-L6-v2"
CHUNK = 10 * 1024 * 1024  # huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE


def _write_random(path: Path, size: int) -> None:
    path.write_bytes(random.Random(size).randbytes(size))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few text files plus a 2 MiB binary, which the hub serves as an LFS file."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "1_Pooling").mkdir()
    (root / "config.json").write_text('{"hidden_size": 4}\n')
    (root / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}\n')
    (root / "README.md").write_text("# tiny\n")
    _write_random(root / "model.bin", 2 * 1024 * 1024)
    return root


@pytest.fixture
def hub(folder: Path) -> FakeHub:
    hub = FakeHub()
    hub.add_repo(REPO, folder)
    hub.add_repo(GATED, folder, gated=True)
    return hub


@pytest.fixture
def url(hub: FakeHub) -> Iterator[str]:
    with running_hub(hub) as endpoint:
        yield endpoint


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts}


def _assert_same_files(got: Path, want: dict[str, Path]) -> None:
    files = _files(got)
    assert sorted(files) == sorted(want)
    for name, path in want.items():
        assert filecmp.cmp(files[name], path, shallow=False), name


def test_snapshot_is_byte_identical_and_blobs_are_named_by_etag(url: str, folder: Path, tmp_path: Path):
    snapshot = Path(snapshot_download(REPO, endpoint=url, cache_dir=tmp_path))

    _assert_same_files(snapshot, _files(folder))
    assert snapshot.name == FakeHub().add_repo(REPO, folder)  # the sha is stable across hubs
    blobs = {p.name for p in (snapshot.parents[1] / "blobs").iterdir()}
    assert {len(name) for name in blobs} == {40, 64}  # git sha1 for small files, sha256 for LFS


def test_allow_patterns_fetch_only_matching_files(hub: FakeHub, url: str, folder: Path, tmp_path: Path):
    snapshot = Path(snapshot_download(REPO, endpoint=url, cache_dir=tmp_path, allow_patterns=["*.json"]))

    want = {"config.json", "1_Pooling/config.json"}  # "*" matches across "/"
    assert set(_files(snapshot)) == want
    assert {p.split("/resolve/")[1].split("/", 1)[1] for p in hub.resolve_gets()} == want


def test_second_pull_downloads_nothing(hub: FakeHub, url: str, tmp_path: Path):
    snapshot_download(REPO, endpoint=url, cache_dir=tmp_path)
    hub.requests.clear()

    snapshot_download(REPO, endpoint=url, cache_dir=tmp_path)

    assert hub.requests == [("GET", f"/api/models/{REPO}/revision/main")]


@pytest.mark.parametrize(
    ("repo_id", "revision", "error"),
    [("org/missing", "main", RepositoryNotFoundError), (REPO, "no-such-branch", RevisionNotFoundError)],
)
def test_missing_repo_or_revision_raises(url: str, tmp_path: Path, repo_id: str, revision: str, error: type):
    with pytest.raises(error):
        snapshot_download(repo_id, revision=revision, endpoint=url, cache_dir=tmp_path)


def test_missing_file_raises_entry_not_found(url: str, tmp_path: Path):
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "nope.json", endpoint=url, cache_dir=tmp_path)


def test_a_missing_fault_hides_a_listed_file_until_cleared(hub: FakeHub, url: str, folder: Path, tmp_path: Path):
    hub.missing("config.json")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "config.json", endpoint=url, cache_dir=tmp_path)
    hub.clear_faults()
    got = Path(hf_hub_download(REPO, "config.json", endpoint=url, cache_dir=tmp_path))
    assert got.read_bytes() == (folder / "config.json").read_bytes()


@pytest.mark.parametrize("path", ["config.json", "model.bin"])
def test_a_corrupt_fault_changes_the_first_byte_and_keeps_the_size(
    hub: FakeHub, url: str, folder: Path, tmp_path: Path, path: str
):
    hub.corrupt(path)
    got = Path(hf_hub_download(REPO, path, endpoint=url, cache_dir=tmp_path)).read_bytes()
    want = (folder / path).read_bytes()
    assert len(got) == len(want) and got[0] == want[0] ^ 0xFF and got[1:] == want[1:]


def test_gated_repo_needs_the_token(hub: FakeHub, url: str, folder: Path, tmp_path: Path):
    with pytest.raises(GatedRepoError):
        snapshot_download(GATED, endpoint=url, cache_dir=tmp_path, token=False)

    snapshot = Path(snapshot_download(GATED, endpoint=url, cache_dir=tmp_path, token=hub.token))
    _assert_same_files(snapshot, _files(folder))


def test_a_500_on_a_file_is_not_retried_and_a_second_pull_fetches_only_that_file(
    hub: FakeHub, url: str, folder: Path, tmp_path: Path
):
    hub.fail_with_500("model.bin")
    with pytest.raises(HfHubHTTPError) as raised:
        snapshot_download(REPO, endpoint=url, cache_dir=tmp_path)
    assert raised.value.response.status_code == 500
    assert not list(tmp_path.rglob("*.incomplete"))

    hub.requests.clear()
    snapshot = Path(snapshot_download(REPO, endpoint=url, cache_dir=tmp_path))

    assert [p.rsplit("/", 1)[1] for p in hub.resolve_gets()] == ["model.bin"]
    _assert_same_files(snapshot, _files(folder))


def test_a_cut_inside_the_first_10_mib_restarts_from_zero(hub: FakeHub, url: str, folder: Path, tmp_path: Path):
    hub.cut_after("model.bin", 500_000)

    snapshot = Path(snapshot_download(REPO, endpoint=url, cache_dir=tmp_path))

    assert [p.rsplit("/", 1)[1] for p in hub.resolve_gets()].count("model.bin") == 2
    assert hub.ranges == []  # the 500 000 bytes never left httpx's 10 MiB chunker
    _assert_same_files(snapshot, _files(folder))


def test_a_cut_after_10_mib_is_resumed_with_range(tmp_path: Path):
    source = tmp_path / "src"
    source.mkdir()
    _write_random(source / "big.bin", CHUNK + 1024 * 1024)
    hub = FakeHub()
    hub.add_repo(REPO, source)
    hub.cut_after("big.bin", CHUNK + 1000)

    with running_hub(hub) as endpoint:
        snapshot = Path(snapshot_download(REPO, endpoint=endpoint, local_dir=tmp_path / "out"))

    assert [path for path, _ in hub.ranges] == hub.resolve_gets()[1:]
    assert [value for _, value in hub.ranges] == [f"bytes={CHUNK}-"]
    _assert_same_files(snapshot, _files(source))


def test_a_cut_that_outlasts_the_retries_raises_and_leaves_no_partial_file(hub: FakeHub, url: str, tmp_path: Path):
    hub.cut_after("model.bin", 0, times=100)

    with pytest.raises(httpx2.RemoteProtocolError, match="peer closed connection"):
        snapshot_download(REPO, endpoint=url, cache_dir=tmp_path)

    assert [p.rsplit("/", 1)[1] for p in hub.resolve_gets()].count("model.bin") == 6  # 1 + 5 retries
    assert not list(tmp_path.rglob("*.incomplete"))
    assert not list(tmp_path.rglob("model.bin"))


def test_slow_download_can_be_dropped_and_the_hub_still_stops_quickly(hub: FakeHub):
    hub.slow("model.bin", 100_000)  # 2 MiB would take 20 s
    with running_hub(hub) as endpoint:
        start = time.monotonic()
        with httpx.stream("GET", f"{endpoint}/{REPO}/resolve/main/model.bin") as response:
            first = next(response.iter_raw())
        assert 0 < len(first) < 100_000
        assert time.monotonic() - start >= 0.05  # one throttled chunk is 10 000 bytes at 100 kB/s
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 0.9  # under the 1 s grace: the drop ended the stream server-side


def test_cli_serves_a_folder_from_another_process(folder: Path, tmp_path: Path):
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakehub", "--repo", f"{REPO}={folder}"],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        endpoint = process.stdout.readline().strip()
        path = hf_hub_download(REPO, "config.json", endpoint=endpoint, cache_dir=tmp_path)
        assert Path(path).read_bytes() == (folder / "config.json").read_bytes()
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.real
@pytest.mark.skipif(not MINILM.is_dir(), reason=f"{MINILM} is not there")
def test_real_minilm_folder_with_allow_patterns(tmp_path: Path):
    hub = FakeHub()
    hub.add_repo("sentence-transformers/all-MiniLM-L6-v2", MINILM)
    patterns = ["*.json", "onnx/*"]

    with running_hub(hub) as endpoint:
        out = snapshot_download(
            "sentence-transformers/all-MiniLM-L6-v2",
            endpoint=endpoint,
            local_dir=tmp_path,
            allow_patterns=patterns,
        )

    want = {name: p for name, p in _files(MINILM).items() if any(fnmatchcase(name, pat) for pat in patterns)}
    assert "onnx/model.onnx" in want
    _assert_same_files(Path(out), want)
