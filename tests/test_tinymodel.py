"""The tiny model folder is only useful if its network, run by real OpenVINO, agrees with
``reference_vectors`` and if the traps it carries (short stored truncation, mask dependence) are real."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
from tokenizers import Encoding, Tokenizer

from tests.tinymodel import POOLING_MODES, build_tiny_model, reference_vectors

MAX_SEQ_LENGTH = 32
TEXTS = [
    "hello",
    "The water is very good for people.",
    "Is this a question? Yes, 42 times!",
    "The mother said that the old house by the river was a good place to live after the war, "
    "and all the children came back home to play in the water every morning.",
]
SOURCES = {"onnx": ("onnx", False), "onnx-external": ("onnx", True), "openvino": ("openvino", False)}


def _compile(folder: Path) -> ov.CompiledModel:
    """Compile the folder's network in f32, so the comparison tolerance can be tight."""
    onnx_path = folder / "onnx" / "model.onnx"
    path = onnx_path if onnx_path.exists() else folder / "openvino" / "openvino_model.xml"
    core = ov.Core()
    return core.compile_model(core.read_model(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def _tokenizer(folder: Path) -> Tokenizer:
    """The folder's tokenizer with the stored settings overridden the way the daemon must."""
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_SEQ_LENGTH)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest text in the batch
    return tokenizer


def _embed(model: ov.CompiledModel, encodings: list[Encoding], pooling: str, mask_padding: bool = True) -> np.ndarray:
    """Run one padded batch and pool it in numpy, independently of tinymodel's reference code."""
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    types = np.array([e.type_ids for e in encodings], dtype=np.int64)
    feed_mask = mask if mask_padding else np.ones_like(mask)
    hidden = model({"input_ids": ids, "attention_mask": feed_mask, "token_type_ids": types})[
        "last_hidden_state"
    ].astype(np.float64)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "lasttoken":
        return hidden[np.arange(len(ids)), mask.sum(axis=1) - 1]
    return (hidden * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("pooling", POOLING_MODES)
def test_network_matches_reference_alone_and_batched(tmp_path: Path, pooling: str, source: str) -> None:
    kind, external = SOURCES[source]
    folder = build_tiny_model(tmp_path / "tiny", pooling=pooling, source=kind, external_data=external)
    model, tokenizer = _compile(folder), _tokenizer(folder)
    expected = reference_vectors(folder, TEXTS)

    singles = np.array([_embed(model, [tokenizer.encode(t)], pooling)[0] for t in TEXTS])
    assert _cosines(singles, expected).min() >= 0.99999

    batch = tokenizer.encode_batch(TEXTS)
    assert len(batch[-1].ids) == MAX_SEQ_LENGTH and batch[-1].tokens[-1] == "[SEP]"
    assert 0 in batch[0].attention_mask and batch[0].ids[-1] == 0  # the batch really is padded
    assert _cosines(_embed(model, batch, pooling), singles).min() >= 0.99999


def test_stored_tokenizer_settings_are_a_trap(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "tiny", max_seq_length=MAX_SEQ_LENGTH)
    stored = json.loads((folder / "tokenizer.json").read_text())
    assert stored["truncation"]["max_length"] < MAX_SEQ_LENGTH
    assert stored["padding"]["strategy"] == {"Fixed": MAX_SEQ_LENGTH // 2}

    as_stored = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(TEXTS[-1])
    assert len(as_stored.ids) == MAX_SEQ_LENGTH // 2

    # Obeying the stored truncation gives a visibly different vector, so a daemon that does is caught.
    model = _compile(folder)
    wrong = _embed(model, [as_stored], "mean")
    assert _cosines(wrong, reference_vectors(folder, TEXTS[-1:]))[0] < 0.999


def test_padding_without_mask_is_visibly_wrong(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "tiny")
    model, tokenizer = _compile(folder), _tokenizer(folder)
    batch = tokenizer.encode_batch(TEXTS)
    for pooling in POOLING_MODES:
        unmasked = _embed(model, batch, pooling, mask_padding=False)
        assert _cosines(unmasked, _embed(model, batch, pooling))[:-1].max() < 0.999  # last: no padding


def test_vocabulary_mixes_whole_words_and_pieces(tmp_path: Path) -> None:
    folder = build_tiny_model(tmp_path / "tiny", source="none")
    tokenizer = _tokenizer(folder)
    tokens = tokenizer.encode("The quick water, 7 days!").tokens
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert {"the", "water", ",", "7", "!"} <= set(tokens)
    assert any(t.startswith("##") for t in tokens) and "[UNK]" not in tokens
    assert tokenizer.token_to_id("[PAD]") == 0


@pytest.mark.parametrize("normalize", [True, False])
def test_folder_layout_and_normalize(tmp_path: Path, normalize: bool) -> None:
    folder = build_tiny_model(tmp_path / "tiny", pooling="cls", normalize=normalize, source="openvino")
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"][: 3 if normalize else 2]
    assert json.loads((folder / "1_Pooling" / "config.json").read_text())["pooling_mode_cls_token"]
    assert json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"] == 32
    prompts = json.loads((folder / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts == {"query": "query: ", "document": ""}
    assert (folder / "openvino" / "openvino_model.bin").exists() and not (folder / "onnx").exists()

    norms = np.linalg.norm(reference_vectors(folder, TEXTS), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-6) == normalize


def test_external_data_and_no_network_variants(tmp_path: Path) -> None:
    external = build_tiny_model(tmp_path / "external", external_data=True)
    onnx_dir = external / "onnx"
    assert (onnx_dir / "model.onnx_data").stat().st_size > (onnx_dir / "model.onnx").stat().st_size
    bare = build_tiny_model(tmp_path / "bare", source="none")
    assert not (bare / "onnx").exists() and not (bare / "openvino").exists()
    assert (bare / "tokenizer.json").exists() and (bare / "config.json").exists()
