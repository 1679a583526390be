"""Compute precision on the device: the fp32 rerun of a batch that overflows in fp16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daemon.inference.engine import Engine
from modelstore.create import create_from_folder
from modelstore.names import parse_name
from modelstore.store import ModelRecord, ModelStore
from tests.tinymodel import build_faulty_model

TEXTS = ["the water", "a small house by the sea", "hello"]


@pytest.fixture(scope="module")
def overflowing(tmp_path_factory: pytest.TempPathFactory) -> ModelRecord:
    root = tmp_path_factory.mktemp("overflow")
    store = ModelStore(root / "store")
    return create_from_folder(store, parse_name("overflow"), build_faulty_model(root / "model", "fp16-overflow"))


def _vectors(engine: Engine, record: ModelRecord) -> tuple[np.ndarray, str]:
    model = engine.load(record)
    vectors = np.concatenate([model.embed(0, model.tokenize(TEXTS, 32, True))])
    return vectors, model.precision


def test_a_batch_that_overflows_in_fp16_is_run_again_in_fp32(overflowing: ModelRecord) -> None:
    expected, precision = _vectors(Engine("CPU", "fp32", "THROUGHPUT", None), overflowing)
    assert precision == "fp32" and np.isfinite(expected).all()
    engine = Engine("CPU", "fp16", "THROUGHPUT", None)
    narrow = engine.core.compile_model(str(overflowing.path / "openvino_model.xml"), "CPU", engine.device.config)
    if narrow.get_property("INFERENCE_PRECISION_HINT").get_type_name() != "f16":
        pytest.skip("this CPU does not compute in fp16 (no AVX512-FP16 or AMX-FP16), so nothing overflows")
    model = engine.load(overflowing)
    assert model.precision == "fp16"
    got = model.embed(0, model.tokenize(TEXTS, 32, True))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert model.precision == "fp32"  # pinned: the next batch goes straight to fp32
    np.testing.assert_allclose(model.embed(1 % model.slots, model.tokenize(TEXTS[:1], 32, True)), expected[:1])


def test_fp32_has_nothing_to_fall_back_to(overflowing: ModelRecord, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    record = create_from_folder(store, parse_name("nan"), build_faulty_model(tmp_path / "nan", "nan"))
    model = Engine("CPU", "fp32", "THROUGHPUT", None).load(record)
    assert np.isnan(model.embed(0, model.tokenize(TEXTS, 32, True))).all()
    assert model.precision == "fp32"
