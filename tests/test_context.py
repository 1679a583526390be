"""The context never exceeds the positions the network holds.

OpenVINO's Gather answers zeros for a position past the table, so a model whose tokenizer or
sentence-transformers config claims more than its network holds would run long inputs silently wrong. Each
fixture here is copied with such a claim (its network holds 64 positions, Qwen3's reranker 512), created
by every route (safetensors, ONNX, IR), and held to the unmodified fixture with the input cut at the
positions explicitly.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from daemon.inference.engine import Engine, LoadedModel
from modelstore.create import create_from_folder
from modelstore.layout import IR_FILE
from modelstore.names import parse_name
from modelstore.positions import table_positions
from modelstore.spec import ModelDescription
from modelstore.stconfig import within_positions
from modelstore.store import ModelRecord, ModelStore
from tests.conftest import stop_daemon
from tests.fakehub import FakeHub, running_hub
from tests.test_convert import FIXTURES
from tests.test_create import create_ok, read_manifest
from tests.test_pull import start_pull_daemon
from tests.tinymodel import build_tiny_model

CLAIM = 2048  # more than any fixture's network holds
# Far past every fixture's positions in any of their tokenizers.
LONG = " ".join(["the quick brown fox jumps over the lazy dog, Grüße aus Köln, 東京は日本の首都です。"] * 40)
QUERY = "why is the sky blue?"
UNCUT = 100_000


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _update(path: Path, **values: Any) -> None:
    path.write_text(json.dumps({**_json(path), **values}), encoding="utf-8")


def positions_of(fixture: str) -> int:
    """What the fixture's network holds by its config.json; RoBERTa's table starts after its padding row."""
    config = _json(FIXTURES / fixture / "config.json")
    offset = config["pad_token_id"] + 1 if config["model_type"] == "xlm-roberta" else 0
    return int(config["max_position_embeddings"]) - offset


def claiming(fixture: str, dest: Path, by: str = "tokenizer") -> Path:
    """A copy of the fixture whose tokenizer (or sentence-transformers config) claims CLAIM tokens."""
    folder = shutil.copytree(FIXTURES / fixture, dest)
    if by == "tokenizer":
        _update(folder / "tokenizer_config.json", model_max_length=CLAIM)
    else:
        _update(folder / "sentence_bert_config.json", max_seq_length=CLAIM)
    return folder


def as_ir(folder: Path) -> Path:
    """The folder's ONNX export replaced by the IR OpenVINO saves from it, as a repo's `openvino/` ships."""
    network = ov.Core().read_model(folder / "onnx" / "model.onnx")
    (folder / "openvino").mkdir()
    ov.save_model(network, folder / "openvino" / "openvino_model.xml", compress_to_fp16=False)
    shutil.rmtree(folder / "onnx")
    return folder


def create(tmp_path: Path, name: str, folder: Path, **options: Any) -> ModelRecord:
    return create_from_folder(ModelStore(tmp_path / "stores" / name), parse_name(name), folder, **options)


def loaded(record: ModelRecord) -> LoadedModel:
    return Engine("CPU", "fp32", "THROUGHPUT", None).load(record)


def scores(model: LoadedModel, limit: int) -> np.ndarray:
    return model.infer(0, model.tokens.pairs(QUERY, [LONG], limit))


def vectors(model: LoadedModel, limit: int) -> np.ndarray:
    return model.infer(0, model.tokens.texts([LONG], limit, True))


def assert_cut_at_positions(
    capped: LoadedModel, reference: LoadedModel, positions: int, run: Callable[[LoadedModel, int], np.ndarray]
) -> None:
    """The capped model on LONG, cut where the daemon cuts it (at its stored context), runs as the reference
    cut at the positions."""
    expected = run(reference, positions)
    np.testing.assert_allclose(run(capped, capped.spec.context_length), expected, rtol=0, atol=1e-5)
    assert capped.spec.context_length == positions


# The cross-encoder fixture from each route, the RoBERTa one with its padding offset, and the Qwen3 reranker
# (rotary positions, made a reranker by --task rerank).
def _safetensors(fixture: str) -> Callable[[Path], Path]:
    return lambda dest: claiming(fixture, dest)


RERANK_ROUTES: dict[str, tuple[str, Callable[[Path], Path], dict[str, Any]]] = {
    "bert-safetensors": ("bert-rerank", _safetensors("bert-rerank"), {}),
    "bert-onnx": ("bert-rerank-onnx", _safetensors("bert-rerank-onnx"), {}),
    "bert-ir": ("bert-rerank-onnx", lambda dest: as_ir(claiming("bert-rerank-onnx", dest)), {}),
    "xlm-roberta-safetensors": ("xlm-roberta-rerank", _safetensors("xlm-roberta-rerank"), {}),
    "qwen3-reranker": ("qwen3-rerank", _safetensors("qwen3-rerank"), {"task": "rerank"}),
}


@pytest.mark.parametrize("route", RERANK_ROUTES)
def test_a_reranker_whose_tokenizer_claims_more_is_cut_at_its_positions(tmp_path: Path, route: str) -> None:
    fixture, make, options = RERANK_ROUTES[route]
    positions = positions_of(fixture)
    record = create(tmp_path, "claims", make(tmp_path / "claims"), weights="fp32", **options)
    reference = create(tmp_path, "reference", FIXTURES / fixture, weights="fp32", **options)
    assert len(loaded(reference).tokens.pairs(QUERY, [LONG], UNCUT)[0]) > positions
    assert_cut_at_positions(loaded(record), loaded(reference), positions, scores)
    assert (record.spec.context_from, record.spec.context_claimed) == ("the tokenizer", CLAIM)
    assert record.spec.context_note() == f"the tokenizer claims {CLAIM}; the network holds {positions} positions"


@pytest.mark.parametrize("fixture", ["bert-mean", "xlm-roberta-cls", "qwen3-lasttoken", "modernbert-mean"])
def test_an_embedding_model_whose_max_seq_length_claims_more_is_cut_at_its_positions(
    tmp_path: Path, fixture: str
) -> None:
    """sentence_bert_config.json's max_seq_length, which sentence-transformers reads first, is cut too: for
    absolute tables (BERT; XLM-RoBERTa after its padding row) and rotary positions (config.json's)."""
    positions = positions_of(fixture)
    record = create(tmp_path, "claims", claiming(fixture, tmp_path / "claims", by="sentence-transformers"))
    reference = create(tmp_path, "reference", FIXTURES / fixture)
    assert len(loaded(reference).tokens.texts([LONG], UNCUT, True)[0]) > positions
    assert_cut_at_positions(loaded(record), loaded(reference), positions, vectors)
    assert (record.spec.context_from, record.spec.context_claimed) == ("sentence-transformers' max_seq_length", CLAIM)


def test_ovembed_create_says_where_it_cut_the_context(tmp_path: Path) -> None:
    models = tmp_path / "models"
    result = create_ok(models, "claims", claiming("bert-rerank", tmp_path / "claims"))
    assert f"context 64 (the tokenizer claims {CLAIM}; the network holds 64 positions)" in result.stdout
    spec = read_manifest(models, "claims")["spec"]
    assert (spec["context_length"], spec["context_from"], spec["context_claimed"]) == (64, "the tokenizer", CLAIM)


def test_a_model_that_claims_no_more_than_its_positions_says_nothing(tmp_path: Path) -> None:
    models = tmp_path / "models"
    result = create_ok(models, "fits", FIXTURES / "bert-rerank")
    assert "context 24, " in result.stdout and "claims" not in result.stdout
    spec = read_manifest(models, "fits")["spec"]
    assert (spec["context_length"], spec["context_from"], spec["context_claimed"]) == (24, "the tokenizer", 0)


def test_the_network_overrules_a_config_json_that_claims_more_positions(tmp_path: Path) -> None:
    """An export beside a config.json of another checkpoint: the graph's table is what Gather indexes."""
    folder = claiming("bert-rerank-onnx", tmp_path / "claims")
    _update(folder / "config.json", max_position_embeddings=512)
    record = create(tmp_path, "claims", folder)
    assert record.spec.context_length == 64
    assert record.spec.context_note() == f"the tokenizer claims {CLAIM}; the network holds 64 positions"


@pytest.mark.parametrize("source", ["onnx", "openvino"])
def test_without_config_json_the_positions_are_read_off_the_network(tmp_path: Path, source: str) -> None:
    folder = build_tiny_model(tmp_path / "tiny", source=source)
    positions = _json(folder / "config.json")["max_position_embeddings"]
    (folder / "config.json").unlink()
    _update(folder / "sentence_bert_config.json", max_seq_length=CLAIM)
    record = create(tmp_path, "tiny", folder)
    assert record.spec.context_length == positions
    assert record.spec.context_note() == (
        f"sentence-transformers' max_seq_length claims {CLAIM}; the network holds {positions} positions"
    )


def test_a_roberta_table_places_its_rows_less_the_padding_offset(tmp_path: Path) -> None:
    """bge-m3's numbers, from config.json alone (a network without a table of its own): 8194 rows, padding 1."""
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "xlm-roberta", "max_position_embeddings": 8194, "pad_token_id": 1})
    )
    claim = ModelDescription("xlm-roberta", "cls", True, 8194, 1024, context_from="config.json")
    assert within_positions(claim, tmp_path, None).context_length == 8192


def test_the_cut_is_logged_when_a_model_is_made(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="modelstore.create"):
        create(tmp_path, "claims", claiming("bert-rerank", tmp_path / "claims"))
    said = f"claims:latest: context 64 (the tokenizer claims {CLAIM}; the network holds 64 positions)"
    assert said in caplog.messages


@pytest.fixture
def hub_url(tmp_path: Path) -> Iterator[str]:
    hub = FakeHub()
    hub.add_repo("ovembed-test/claims", claiming("bert-rerank", tmp_path / "claims"))
    with running_hub(hub) as url:
        yield url


def test_the_daemon_logs_the_cut_when_it_pulls(tmp_path: Path, hub_url: str) -> None:
    daemon = start_pull_daemon(tmp_path / "daemon", hub_url)
    try:
        body = {"model": "hf.co/ovembed-test/claims", "stream": False}
        assert httpx.post(f"{daemon.url}/api/pull", json=body, timeout=120).json() == {"status": "success"}
        shown = httpx.post(f"{daemon.url}/api/show", json={"model": "hf.co/ovembed-test/claims"}, timeout=30).json()
    finally:
        stop_daemon(daemon)
    assert shown["model_info"]["bert.context_length"] == 64
    assert f"context 64 (the tokenizer claims {CLAIM}; the network holds 64 positions)" in daemon.log()


def _embeddings(indices: Callable[[Any], list[tuple[int, Any]]]) -> ov.Model:
    """Word embeddings plus the tables `indices(input_ids)` names as (rows, indices), as an export lays them out."""
    input_ids = ops.parameter([-1, -1], ov.Type.i64, name="input_ids")
    total = ops.gather(ops.constant(np.ones((100, 8), np.float32)), input_ids, 0)
    for rows, index in indices(input_ids):
        total = ops.add(total, ops.gather(ops.constant(np.ones((rows, 8), np.float32)), index, 0))
    return ov.Model([total], [input_ids])


def _sliced_to_length(buffer: np.ndarray, input_ids: Any) -> Any:
    """A [1, rows] buffer cut to the texts' length, as torch exports `self.position_ids[:, :seq_length]`."""
    length = ops.gather(ops.shape_of(input_ids), ops.constant(np.array([1])), 0)
    zero, one = ops.constant(np.array([0])), ops.constant(np.array([1]))
    return ops.slice(ops.constant(buffer), zero, length, one, one)


def test_a_bert_export_counts_its_position_buffer_not_its_token_type_zeros() -> None:
    """Without a token_type_ids input, BERT's export gathers its two-row table by a buffer of zeros."""
    model = _embeddings(
        lambda ids: [
            (512, _sliced_to_length(np.arange(512)[None, :], ids)),
            (2, _sliced_to_length(np.zeros((1, 512), np.int64), ids)),
        ]
    )
    assert table_positions(model) == 512


def test_a_roberta_export_counts_from_its_padding_row() -> None:
    """torch's export of create_position_ids_from_input_ids: (cumsum(mask) + 0) * mask + padding_idx, the mask
    first in the product; 514 rows and padding 1 place 512 tokens."""

    def positions(ids: Any) -> list[tuple[int, Any]]:
        mask = ops.convert(ops.not_equal(ids, ops.constant(np.int64(1))), "i32")
        counted = ops.add(ops.cumsum(mask, ops.constant(np.int64(1))), ops.constant(np.int32(0)))
        return [(514, ops.add(ops.convert(ops.multiply(mask, counted), "i64"), ops.constant(np.int64(1))))]

    assert table_positions(_embeddings(positions)) == 512


def test_a_rotary_network_has_no_table_and_an_absolute_one_has_its_rows(tmp_path: Path) -> None:
    """So a rotary model is cut at config.json's positions, and an absolute one at its table's."""
    rotary = create(tmp_path, "qwen3", FIXTURES / "qwen3-lasttoken")
    assert table_positions(ov.Core().read_model(rotary.path / IR_FILE)) is None
    assert table_positions(ov.Core().read_model(FIXTURES / "bert-rerank-onnx" / "onnx" / "model.onnx")) == 64
