"""The `ovembed` CLI as a user runs it: real subprocesses talking to the session daemon over a real socket."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from daemon.cli.client import CliError
from daemon.cli.main import _quantized_name
from daemon.config import DEFAULT_KEEP_ALIVE, ListenAddress, Settings, parse_host, parse_keep_alive_env
from tests.conftest import OVEMBED, REPO, Daemon, daemon_env, free_port

HEX12 = re.compile(r"[0-9a-f]{12}")


def columns(line: str) -> list[str]:
    """Split a table row printed by the CLI: columns are separated by at least two spaces."""
    return re.split(r"\s{2,}", line.strip())


def table_rows(output: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "no table printed"
    return columns(lines[0]), [columns(line) for line in lines[1:]]


def row_for(rows: list[list[str]], name: str) -> list[str]:
    matching = [row for row in rows if row[0] == name]
    assert len(matching) == 1, f"expected one row for {name}, got {rows}"
    return matching[0]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# Commands against the running daemon


def test_list(daemon: Daemon) -> None:
    result = daemon.cli("list")
    header, rows = table_rows(result.stdout)
    assert header == ["NAME", "ID", "SIZE", "MODIFIED"]
    with daemon.client() as client:
        tags = {m["name"]: m for m in client.get("/api/tags").json()["models"]}
    row = row_for(rows, "tiny:latest")
    assert HEX12.fullmatch(row[1])
    assert row[1] == tags["tiny:latest"]["digest"][:12]
    assert re.fullmatch(r"\d+(\.\d)? (B|KB|MB|GB)", row[2])
    assert row[3].endswith(" ago")
    for name in ("tiny-cls:latest", "tiny-last:latest", "tiny-raw:latest"):
        row_for(rows, name)
    assert {row[0] for row in rows} == set(tags)


def test_show(daemon: Daemon) -> None:
    result = daemon.cli("show", "tiny")
    assert result.stdout.lstrip().startswith("Model")
    rows = {cols[0]: cols[1:] for cols in map(columns, result.stdout.splitlines()) if len(cols) >= 2}
    assert rows["architecture"] == ["bert"]
    assert rows["context length"] == ["32"]  # max_seq_length, not the tokenizer's stored 16
    assert rows["embedding length"] == ["16"]
    assert rows["pooling"] == ["mean"]
    assert "embedding" in result.stdout.split("Capabilities", 1)[1]


def test_show_other_pooling(daemon: Daemon) -> None:
    rows = {c[0]: c[1:] for c in map(columns, daemon.cli("show", "tiny-cls").stdout.splitlines()) if len(c) >= 2}
    assert rows["pooling"] == ["cls"]


def test_ps_after_embed(daemon: Daemon) -> None:
    with daemon.client() as client:
        response = client.post("/api/embed", json={"model": "tiny", "input": "warm up", "keep_alive": "10m"})
        assert response.status_code == 200, response.text
    result = daemon.cli("ps")
    header, rows = table_rows(result.stdout)
    assert header == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    row = row_for(rows, "tiny:latest")
    assert HEX12.fullmatch(row[1])
    assert row[3] == "100% CPU"
    assert row[4] == "32"
    assert row[5].endswith("from now")  # kept for 10 minutes, so not "Stopping..."
    assert re.fullmatch(r"(9|10) minutes from now", row[5])


def test_cp_then_rm(daemon: Daemon) -> None:
    source, copy = "tiny", "cli-copy-test"
    try:
        result = daemon.cli("cp", source, copy)
        assert result.stdout.strip() == f"copied '{source}' to '{copy}'"
        _, rows = table_rows(daemon.cli("list").stdout)
        copied, original = row_for(rows, f"{copy}:latest"), row_for(rows, "tiny:latest")
        assert copied[1] == original[1]  # same content, same id

        result = daemon.cli("rm", copy)
        assert result.stdout.strip() == f"deleted '{copy}'"
    finally:
        daemon.cli("rm", copy, check=False)
    _, rows = table_rows(daemon.cli("list").stdout)
    names = [row[0] for row in rows]
    assert f"{copy}:latest" not in names
    assert "tiny:latest" in names  # the original kept its (shared) folder
    embedded = daemon.cli("embed", "tiny", "still here")
    assert len(json.loads(embedded.stdout)[0]) == 16


def test_rm_missing_model(daemon: Daemon) -> None:
    result = daemon.cli("rm", "cli-never-existed", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: model 'cli-never-existed:latest' not found"


def test_embed_matches_api(daemon: Daemon) -> None:
    texts = ["hello world", "second text"]
    result = daemon.cli("embed", "tiny", *texts)
    got = np.array(json.loads(result.stdout), dtype=np.float64)
    assert got.shape == (2, 16)
    with daemon.client() as client:
        api = client.post("/api/embed", json={"model": "tiny", "input": texts})
    assert api.status_code == 200, api.text
    expected = np.array(api.json()["embeddings"], dtype=np.float64)
    assert cosine(got, expected).min() >= 0.99999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert cosine(got[0], got[1]) < 0.999  # two different texts, two different vectors


def test_embed_dimensions(daemon: Daemon) -> None:
    result = daemon.cli("embed", "tiny", "hello world", "second text", "--dimensions", "8")
    got = np.array(json.loads(result.stdout), dtype=np.float64)
    assert got.shape == (2, 8)
    with daemon.client() as client:
        api = client.post(
            "/api/embed", json={"model": "tiny", "input": ["hello world", "second text"], "dimensions": 8}
        )
    assert api.status_code == 200, api.text
    assert cosine(got, np.array(api.json()["embeddings"], dtype=np.float64)).min() >= 0.99999


def test_show_missing_model(daemon: Daemon) -> None:
    result = daemon.cli("show", "nosuch", check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == "Error: model 'nosuch:latest' not found"


def test_embed_missing_model(daemon: Daemon) -> None:
    result = daemon.cli("embed", "nosuch", "hello", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ")
    assert "nosuch" in result.stderr and "not found" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [["list"], ["ps"], ["show", "tiny"], ["rm", "tiny"], ["cp", "tiny", "other"], ["embed", "tiny", "hello"]],
    ids=lambda args: args[0],
)
def test_no_daemon(tmp_path: Path, args: list[str]) -> None:
    port = free_port()  # bound and released: nothing listens there now
    env = daemon_env(tmp_path / "models", port)
    result = subprocess.run([*OVEMBED, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: could not connect")
    assert f"127.0.0.1:{port}" in result.stderr
    assert "ovembed serve" in result.stderr
    assert "Traceback" not in result.stderr


# `ovembed serve` refusing settings it cannot honour


def _serve_fails(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """`ovembed serve` with a setting it cannot honour; the timeout only guards against a daemon that serves."""
    port = free_port()
    env = daemon_env(tmp_path / "models", port, **extra)
    return subprocess.run([*OVEMBED, "serve"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)


def _failed_before_serving(result: subprocess.CompletedProcess[str]) -> bool:
    """Fast: the process ended on its own before uvicorn started, so no socket was ever opened."""
    return result.returncode != 0 and "Started server process" not in result.stderr + result.stdout


def test_serve_with_absent_device_fails_fast(tmp_path: Path) -> None:
    import openvino as ov

    if any(d.startswith("GPU") for d in ov.Core().available_devices):
        pytest.skip("this machine has a GPU, so OVEMBED_DEVICE=GPU is not an absent device here")
    result = _serve_fails(tmp_path, OVEMBED_DEVICE="GPU")
    assert result.returncode != 0
    assert _failed_before_serving(result)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), result.stderr
    assert "GPU" in last and "OVEMBED_DEVICE" in last
    assert re.search(r"OpenVINO sees .*CPU", last), last
    assert "Traceback" not in result.stderr


def test_serve_with_unknown_precision_fails_fast(tmp_path: Path) -> None:
    result = _serve_fails(tmp_path, OVEMBED_PRECISION="fp8")
    assert result.returncode != 0
    assert _failed_before_serving(result)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), result.stderr
    assert "fp8" in last
    for allowed in ("auto", "fp32", "bf16", "fp16"):
        assert allowed in last
    assert "Traceback" not in result.stderr


# OLLAMA_HOST and OLLAMA_KEEP_ALIVE, as Ollama's envconfig reads them


@pytest.mark.parametrize(
    ("value", "scheme", "host", "port"),
    [
        ("", "http", "127.0.0.1", 11434),
        ("1.2.3.4", "http", "1.2.3.4", 11434),
        ("1.2.3.4:1234", "http", "1.2.3.4", 1234),
        (":1234", "http", "", 1234),
        ("example.com", "http", "example.com", 11434),
        ("example.com:1234", "http", "example.com", 1234),
        (":0", "http", "", 0),
        ("http://h", "http", "h", 80),
        ("http://1.2.3.4:4321", "http", "1.2.3.4", 4321),
        ("https://h", "https", "h", 443),
        ("https://example.com/ollama", "https", "example.com", 443),
        ("[::1]:8080", "http", "::1", 8080),
        ("[::1]", "http", "::1", 11434),
        ("::1", "http", "::1", 11434),
        ("[::]", "http", "::", 11434),
        ("h:99999", "http", "h", 11434),
        (":66000", "http", "", 11434),
        (":-1", "http", "", 11434),
        ("h:abc", "http", "h", 11434),
    ],
)
def test_parse_host(value: str, scheme: str, host: str, port: int) -> None:
    assert parse_host(value) == ListenAddress(scheme=scheme, host=host, port=port)


def test_listen_address_properties() -> None:
    assert parse_host(":1234").base_url == "http://127.0.0.1:1234"  # every interface, reached on loopback
    assert parse_host("[::1]:8080").base_url == "http://[::1]:8080"
    assert parse_host("[::1]:8080").is_loopback
    assert parse_host("").is_loopback
    assert parse_host("localhost:5").is_loopback
    assert not parse_host("0.0.0.0:5000").is_loopback
    assert not parse_host(":1234").is_loopback
    assert not parse_host("192.168.1.5").is_loopback


@pytest.mark.parametrize(
    ("value", "host", "port"),
    [
        ("  '0.0.0.0:5000'  ", "0.0.0.0", 5000),
        ('"1.2.3.4"', "1.2.3.4", 11434),
        (' " 1.2.3.4 " ', "1.2.3.4", 11434),
        ("", "127.0.0.1", 11434),
    ],
)
def test_settings_trim_ollama_host(monkeypatch: pytest.MonkeyPatch, value: str, host: str, port: int) -> None:
    monkeypatch.setenv("OLLAMA_HOST", value)
    listen = Settings.from_env().listen
    assert (listen.host, listen.port) == (host, port)


def test_settings_without_ollama_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert Settings.from_env().listen.base_url == "http://127.0.0.1:11434"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5m", 300.0),
        ("300", 300.0),
        ("-1", math.inf),
        ("-5m", math.inf),
        ("0", 0.0),
        ("1h30m", 5400.0),
        ("bogus", 300.0),
        ("", 300.0),
    ],
)
def test_parse_keep_alive_env(value: str, seconds: float) -> None:
    assert parse_keep_alive_env(value) == seconds


def test_settings_keep_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", " '10m' ")
    assert Settings.from_env().keep_alive == 600.0
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "nonsense")
    assert Settings.from_env().keep_alive == DEFAULT_KEEP_ALIVE == 300.0


@pytest.mark.parametrize(
    ("name", "level", "pulled"),
    [
        ("all-minilm", "q8_0", "all-minilm:q8_0"),
        ("all-minilm:latest", "int8", "all-minilm:q8_0"),
        ("all-minilm:l6-v2", "Q8_0", "all-minilm:l6-v2-q8_0"),
        ("hf.co/org/repo", "q8_0", "hf.co/org/repo:q8_0"),
        ("localhost:8080/lib/model:v1", "q8_0", "localhost:8080/lib/model:v1-q8_0"),
    ],
)
def test_pull_quantize_asks_for_the_q8_0_tag_any_client_could_pull(name: str, level: str, pulled: str) -> None:
    assert _quantized_name(name, level) == pulled


@pytest.mark.parametrize(
    ("name", "level", "said"), [("all-minilm", "q4_K_M", "use q8_0"), ("hf.co/o/r:dev", "q8_0", "main")]
)
def test_pull_quantize_refuses_what_it_cannot_make(name: str, level: str, said: str) -> None:
    with pytest.raises(CliError, match=said):
        _quantized_name(name, level)
