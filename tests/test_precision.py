"""Compute precision on the device: the fp32 rerun of a batch that overflows in fp16, and `auto`'s measuring."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from daemon.inference.device import PRECISION_HINTS
from daemon.inference.engine import COMPILED_FOLDER, PRECISION_FILE, Engine
from daemon.inference.precision import (
    MAX_SLOWDOWN,
    MIN_SCORE_CORRELATION,
    RULE,
    Choices,
    Trial,
    candidates,
    pick,
    worst_cosine,
)
from modelstore.create import create_from_folder
from modelstore.names import parse_name
from modelstore.store import ModelRecord, ModelStore
from tests.conftest import start_daemon, stop_daemon
from tests.test_convert import FIXTURES
from tests.tinymodel import build_faulty_model

TEXTS = ["the water", "a small house by the sea", "hello"]


@pytest.fixture(scope="module")
def overflowing(tmp_path_factory: pytest.TempPathFactory) -> ModelRecord:
    root = tmp_path_factory.mktemp("overflow")
    store = ModelStore(root / "store")
    return create_from_folder(store, parse_name("overflow"), build_faulty_model(root / "model", "fp16-overflow"))


def _vectors(engine: Engine, record: ModelRecord) -> tuple[np.ndarray, str]:
    model = engine.load(record)
    vectors = np.concatenate([model.infer(0, model.tokens.texts(TEXTS, 32, True))])
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
    got = model.infer(0, model.tokens.texts(TEXTS, 32, True))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert model.precision == "fp32"  # pinned: the next batch goes straight to fp32
    np.testing.assert_allclose(model.infer(1 % model.slots, model.tokens.texts(TEXTS[:1], 32, True)), expected[:1])


def test_fp32_has_nothing_to_fall_back_to(overflowing: ModelRecord, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    record = create_from_folder(store, parse_name("nan"), build_faulty_model(tmp_path / "nan", "nan"))
    model = Engine("CPU", "fp32", "THROUGHPUT", None).load(record)
    assert np.isnan(model.infer(0, model.tokens.texts(TEXTS, 32, True))).all()
    assert model.precision == "fp32"


# OVEMBED_PRECISION=auto


def _trial(precision: str, slowdown: float, cosine: float = 1.0, invariance: float = 1.0) -> Trial:
    return Trial(precision, slowdown / 1000, cosine, invariance, slowdown=slowdown, runs=21)


@pytest.mark.parametrize(
    ("trials", "chosen"),
    [
        ([_trial("fp32", 1.0)], "fp32"),
        ([_trial("fp32", 1.0), _trial("bf16", 0.4, 0.99995, 0.99999)], "bf16"),
        ([_trial("fp32", 1.0), _trial("bf16", 0.4, 0.9998)], "fp32"),  # drifts from fp32
        ([_trial("fp32", 1.0), _trial("bf16", 0.4, 0.99999, 0.9998)], "fp32"),  # drifts with its batch
        # No speed-up is asked of a native precision: a ratio near 1 is where timing noise lives.
        ([_trial("fp32", 1.0), _trial("bf16", 0.95)], "bf16"),
        ([_trial("fp32", 1.0), _trial("bf16", 1.08)], "bf16"),
        ([_trial("fp32", 1.0), _trial("bf16", MAX_SLOWDOWN)], "bf16"),
        ([_trial("fp32", 1.0), _trial("bf16", MAX_SLOWDOWN * 1.01)], "fp32"),  # clearly slower: the veto
    ],
)
def test_auto_keeps_the_native_precision_that_keeps_the_vectors(trials: list[Trial], chosen: str) -> None:
    assert pick(trials) == chosen


def test_auto_decides_the_same_twenty_times(tmp_path: Path, tiny_dir: Path) -> None:
    """Measured afresh each time (the remembered choice bypassed), the same model on the same machine gets one
    answer: the answer rests on the device's capabilities and deterministic cosines, and the timing veto sits
    far from where a network measures. Whatever the CPU, the answer is the one the rule gives its figures."""
    record = create_from_folder(ModelStore(tmp_path / "store"), parse_name("tiny"), tiny_dir)
    cache = tmp_path / "cache"
    engine = Engine("CPU", "auto", "THROUGHPUT", cache)
    offered = candidates("CPU", engine.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    decisions, figures = [], set()
    for _ in range(20):
        decisions.append(engine.measure(record).precision)
        (entry,) = json.loads((cache / PRECISION_FILE).read_text(encoding="utf-8")).values()
        trials = [Trial(**t) for t in entry["trials"]]
        assert entry["precision"] == pick(trials) == decisions[-1]
        assert [t.precision for t in trials] == list(offered)
        figures.add(tuple((t.cosine, t.invariance) for t in trials))
    assert len(set(decisions)) == 1, decisions
    assert len(figures) == 1  # the accuracy behind it is bit for bit the same each time
    if len(offered) > 1:  # the CPU computes bf16 natively: timed against fp32 in many interleaved runs
        assert all(t.runs >= 7 for t in trials[1:])
        (narrow,) = trials[1:]
        if narrow.passes:
            assert decisions[0] == ("bf16" if narrow.slowdown <= MAX_SLOWDOWN else "fp32")


def test_a_choice_made_under_an_earlier_rule_is_measured_again(tmp_path: Path, tiny_dir: Path) -> None:
    record = create_from_folder(ModelStore(tmp_path / "store"), parse_name("tiny"), tiny_dir)
    cache = tmp_path / "cache"
    engine = Engine("CPU", "auto", "THROUGHPUT", cache)
    chosen = engine.load(record).precision
    (key,) = json.loads((cache / PRECISION_FILE).read_text(encoding="utf-8"))
    assert key.split(" ")[:2] == [record.digest, RULE]
    # The same model and machine as the rule before this one keyed it: without the rule's name.
    old = key.replace(f" {RULE} ", " ")
    (cache / PRECISION_FILE).write_text(json.dumps({old: {"precision": "fp32", "trials": []}}), encoding="utf-8")
    later = Engine("CPU", "auto", "THROUGHPUT", cache)
    assert later.precision_of(record) == "auto"
    assert later.load(record).precision == chosen
    later.prune_cache({record.digest})
    assert list(json.loads((cache / PRECISION_FILE).read_text(encoding="utf-8"))) == [key]


@pytest.mark.parametrize(
    ("device", "capabilities", "expected"),
    [
        ("CPU", ["FP32", "BF16", "INT8"], ("fp32", "bf16")),
        ("CPU", ["FP32", "INT8"], ("fp32",)),
        ("GPU.1", ["FP32", "FP16", "INT8"], ("fp32", "fp16")),
        ("AUTO:GPU,CPU", ["FP32", "BF16"], ()),
        ("NPU", ["FP16"], ()),
    ],
)
def test_auto_measures_what_the_device_offers(device: str, capabilities: list[str], expected: tuple[str, ...]) -> None:
    assert candidates(device, capabilities) == expected


def test_auto_measures_once_and_remembers_per_model_and_machine(
    tmp_path: Path, tiny_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record = create_from_folder(ModelStore(tmp_path / "store"), parse_name("tiny"), tiny_dir)
    cache = tmp_path / "cache"
    engine = Engine("CPU", "auto", "THROUGHPUT", cache)
    offered = candidates("CPU", engine.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    assert engine.precision_of(record) == "auto"
    with caplog.at_level(logging.INFO, logger="daemon.inference.engine"):
        model = engine.load(record)
    assert model.precision in offered
    assert engine.precision_of(record) == model.precision
    assert any("measured in" in r.getMessage() for r in caplog.records)
    remembered = json.loads((cache / PRECISION_FILE).read_text(encoding="utf-8"))
    (entry,) = remembered.values()
    assert entry["precision"] == model.precision
    assert [t["precision"] for t in entry["trials"]] == list(offered)
    assert all(t["cosine"] > 0.999 for t in entry["trials"])
    assert all(t["seconds"] > 0 and t["runs"] >= 7 for t in entry["trials"][1:])
    # A daemon started later loads the remembered choice without measuring.
    caplog.clear()
    later = Engine("CPU", "auto", "THROUGHPUT", cache)
    with caplog.at_level(logging.INFO, logger="daemon.inference.engine"):
        assert later.load(record).precision == model.precision
    assert not any("measured in" in r.getMessage() for r in caplog.records)
    # Its compiled blobs are kept apart per precision (OpenVINO's CPU cache would mix them up and crash).
    compiled = cache / COMPILED_FOLDER / record.digest
    assert {p.name for p in compiled.iterdir()} == {PRECISION_HINTS[p] for p in offered}


def test_a_damaged_choices_file_is_measured_again(tmp_path: Path, tiny_dir: Path) -> None:
    record = create_from_folder(ModelStore(tmp_path / "store"), parse_name("tiny"), tiny_dir)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / PRECISION_FILE).write_text("{not json", encoding="utf-8")
    engine = Engine("CPU", "auto", "THROUGHPUT", tmp_path / "cache")
    model = engine.load(record)
    assert engine.precision_of(record) == model.precision
    assert json.loads((tmp_path / "cache" / PRECISION_FILE).read_text(encoding="utf-8"))


def test_a_forced_precision_is_not_measured(tmp_path: Path, tiny_dir: Path) -> None:
    record = create_from_folder(ModelStore(tmp_path / "store"), parse_name("tiny"), tiny_dir)
    engine = Engine("CPU", "fp32", "THROUGHPUT", tmp_path / "cache")
    assert engine.precision_of(record) == "fp32"
    assert engine.load(record).precision == "fp32"
    assert not (tmp_path / "cache" / PRECISION_FILE).exists()


def test_show_and_ps_say_what_auto_chose(tmp_path: Path, tiny_dir: Path) -> None:
    running = start_daemon(tmp_path)
    try:
        running.create("tiny", tiny_dir)
        with running.client() as http:
            before = http.post("/api/show", json={"model": "tiny"}).json()["model_info"]
            assert before["ovembed.compute_precision"] == "auto"
            assert http.post("/api/embed", json={"model": "tiny", "input": "hello"}).status_code == 200
            (loaded,) = http.get("/api/ps").json()["models"]
            after = http.post("/api/show", json={"model": "tiny"}).json()["model_info"]
        assert loaded["device"] == "CPU"
        assert loaded["compute_precision"] in ("fp32", "bf16")
        assert after["ovembed.compute_precision"] == loaded["compute_precision"]
        assert f"runs in {loaded['compute_precision']} on CPU, measured in" in running.log()
    finally:
        stop_daemon(running)


def test_a_candidate_that_crashes_openvino_fails_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """OpenVINO 2026.4 dies (SIGFPE) compiling the Gemma3 fixture in bf16 with several CPU streams on some
    CPUs; tried in a child process, that fails bf16 alone and the model loads in fp32."""
    fixture = Path(__file__).parent / "fixtures" / "gemma3-dense"
    record = create_from_folder(ModelStore(tmp_path / "store"), parse_name("gemma"), fixture)
    engine = Engine("CPU", "auto", "THROUGHPUT", tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="daemon.inference.engine"):
        model = engine.load(record)
    crashed = [r.getMessage() for r in caplog.records if "cannot run in bf16" in r.getMessage()]
    if not crashed:
        pytest.skip("OpenVINO runs this network in bf16 on this CPU (or the CPU has no bf16): nothing crashes")
    assert "crashed with SIG" in crashed[0]
    assert model.precision == "fp32" and engine.precision_of(record) == "fp32"
    assert np.isfinite(model.infer(0, model.tokens.texts(TEXTS, 32, True))).all()


def test_a_deleted_model_takes_its_compile_cache_and_choice_with_it(tmp_path: Path, tiny_dir: Path) -> None:
    running = start_daemon(tmp_path)
    try:
        running.create("tiny", tiny_dir)
        cache = Path(running.env["OVEMBED_CACHE_DIR"])
        with running.client() as http:
            assert http.post("/api/embed", json={"model": "tiny", "input": "hello"}).status_code == 200
            digest = http.get("/api/tags").json()["models"][0]["digest"]
            assert (cache / COMPILED_FOLDER / digest).is_dir()
            assert http.post("/api/copy", json={"source": "tiny", "destination": "twin"}).status_code == 200
            assert http.request("DELETE", "/api/delete", json={"model": "tiny"}).status_code == 200
            assert (cache / COMPILED_FOLDER / digest).is_dir()  # `twin` still uses it
            assert http.request("DELETE", "/api/delete", json={"model": "twin"}).status_code == 200
        assert not (cache / COMPILED_FOLDER / digest).exists()
        assert not any(key.startswith(digest) for key in json.loads((cache / PRECISION_FILE).read_text()))
    finally:
        stop_daemon(running)


def test_auto_measures_a_reranker_on_its_scores(tmp_path: Path) -> None:
    """The probe pairs each probe text with a query; the scores across them are held to fp32's. This fixture's
    head is drawn wide, so bf16 moves its scores (measured 0.89 on an AMX CPU) and must not be chosen there."""
    record = create_from_folder(ModelStore(tmp_path / "store"), parse_name("rerank"), FIXTURES / "xlm-roberta-rerank")
    cache = tmp_path / "cache"
    model = Engine("CPU", "auto", "THROUGHPUT", cache).load(record)
    (entry,) = json.loads((cache / PRECISION_FILE).read_text(encoding="utf-8")).values()
    assert entry["precision"] == model.precision
    fp32 = entry["trials"][0]
    assert fp32["precision"] == "fp32" and fp32["cosine"] == pytest.approx(1.0) == fp32["invariance"]
    chosen = next(t for t in entry["trials"] if t["precision"] == model.precision)
    assert chosen["bar"] == MIN_SCORE_CORRELATION
    assert chosen["cosine"] >= MIN_SCORE_CORRELATION and chosen["invariance"] >= MIN_SCORE_CORRELATION
    assert all(-1.0 <= t["cosine"] <= 1.0 + 1e-9 for t in entry["trials"])


def test_a_cosine_of_scores_compares_them_across_texts() -> None:
    scores = np.array([[2.0], [-1.0], [0.5]])
    assert worst_cosine(scores, scores) == pytest.approx(1.0)
    assert worst_cosine(scores, -scores) == pytest.approx(-1.0)
    assert worst_cosine(scores, scores[[1, 0, 2]]) < 0  # the same numbers in another order: another ranking


def test_daemons_sharing_a_cache_keep_each_others_choices(tmp_path: Path) -> None:
    """One daemon per device on one box may share the cache folder: neither write loses the other's choice, and
    each finds a choice the other made since it started."""
    path = tmp_path / "precision.json"
    first, second = Choices(path), Choices(path)
    trial = Trial("bf16", 0.01, 0.99999, 0.99999)
    first.remember("model-a", "bf16", [trial])
    second.remember("model-b", "fp32", [trial])
    assert (second.get("model-a"), first.get("model-b")) == ("bf16", "fp32")
    assert Choices(path).get("model-a") == "bf16" and Choices(path).get("model-b") == "fp32"
    first.keep(lambda key: key != "model-b")
    assert Choices(path).get("model-b") is None and Choices(path).get("model-a") == "bf16"
