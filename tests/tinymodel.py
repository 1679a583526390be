"""A tiny sentence-transformers-style model folder, built locally so the tests need no downloads.

The network is deliberately contextual and mask-dependent: every token sees the masked mean of the
whole sequence, so wrong padding, a wrong attention mask or wrong truncation changes the vectors
visibly instead of slipping through.  ``reference_vectors`` recomputes the expected embeddings in
float64 numpy, one text at a time, so nothing about batching can leak into the expected values.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

MAX_POSITION_EMBEDDINGS = 64
TYPE_VOCAB_SIZE = 2
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] must be id 0, like BERT
POOLING_MODES = ("mean", "cls", "lasttoken")
SOURCES = ("onnx", "openvino", "none")

# Common English words, so ordinary sentences tokenize into a mix of whole words and pieces.
COMMON_WORDS = """
the of and to a in is it you that he was for on are with as i his they be at one have this from or had
by not word but what some we can out other were all there when up use your how said an each she which do
their time if will way about many then them write would like so these her long make thing see him two
has look more day could go come did number sound no most people my over know water than call first who
may down side been now find any new work part take get place made live where after back little only
round man year came show every good me give our under name very through just form sentence great think
say help low line differ turn cause much mean before move right boy old too same tell does set three
want air well also play small end put home read hand port large spell add even land here must big high
such follow act why ask men change went light kind off need house picture try us again animal point
mother world near build self earth father
"""
SUFFIXES = ["##s", "##es", "##ed", "##ing", "##ly", "##er", "##est", "##tion", "##ness", "##ful"]


def build_tiny_model(
    dest: Path,
    *,
    pooling: str = "mean",
    normalize: bool = True,
    max_seq_length: int = 32,
    source: str = "onnx",
    external_data: bool = False,
    hidden: int = 16,
    seed: int = 0,
) -> Path:
    """Create ``dest`` laid out like a Hugging Face sentence-transformers repo and return it."""
    if pooling not in POOLING_MODES:
        raise ValueError(f"pooling must be one of {POOLING_MODES}, not {pooling!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    if not 4 <= max_seq_length <= MAX_POSITION_EMBEDDINGS:
        raise ValueError(f"max_seq_length must be in 4..{MAX_POSITION_EMBEDDINGS}")
    dest.mkdir(parents=True, exist_ok=True)
    vocab = _vocab()
    _save_tokenizer(dest / "tokenizer.json", vocab, max_seq_length)
    _write_configs(dest, pooling, normalize, max_seq_length, hidden, len(vocab), seed)
    if source == "none":
        return dest
    graph = _graph(_weights(len(vocab), hidden, seed))
    if source == "onnx":
        (dest / "onnx").mkdir(exist_ok=True)
        onnx_path = dest / "onnx" / "model.onnx"
        onnx.save_model(
            graph,
            onnx_path,
            save_as_external_data=external_data,
            all_tensors_to_one_file=True,
            location="model.onnx_data",
            size_threshold=0,  # the weights are tiny; without this they would stay inline
        )
        return dest
    import openvino as ov  # imported lazily: only this variant needs the converter

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        onnx.save_model(graph, onnx_path)
        (dest / "openvino").mkdir(exist_ok=True)
        ov.save_model(ov.convert_model(onnx_path), dest / "openvino" / "openvino_model.xml", compress_to_fp16=False)
    return dest


def reference_states(dest: Path, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each text's token ids and its network's token states [tokens, hidden], computed alone in float64 numpy,
    with the folder's own sizes, seed and max_seq_length."""
    config = _read_json(dest / "config.json")
    max_seq_length = _read_json(dest / "sentence_bert_config.json")["max_seq_length"]
    weights = {
        k: v.astype(np.float64)
        for k, v in _weights(config["vocab_size"], config["hidden_size"], config["tiny_seed"]).items()
    }
    tokenizer = Tokenizer.from_file(str(dest / "tokenizer.json"))
    tokenizer.no_padding()  # the stored padding/truncation are a trap: max_seq_length wins
    tokenizer.enable_truncation(max_seq_length)
    out = []
    for text in texts:
        enc = tokenizer.encode(text)
        ids, types = np.array(enc.ids), np.array(enc.type_ids)
        e = weights["word_embeddings"][ids] + weights["position_embeddings"][: len(ids)]
        e = e + weights["token_type_embeddings"][types]
        ctx = e.mean(axis=0)  # a lone text has no padding, so the masked mean is the plain mean
        out.append(
            (ids, np.tanh(e @ weights["dense.weight"] + ctx @ weights["context.weight"] + weights["dense.bias"]))
        )
    return out


def reference_vectors(dest: Path, texts: list[str]) -> np.ndarray:
    """Expected sentence embeddings for ``texts``, each computed alone in float64 numpy.

    Everything (pooling, normalisation, max_seq_length, sizes, seed) is read back from the folder's
    own files, so this works for any variant ``build_tiny_model`` produced.
    """
    pool_cfg = _read_json(dest / "1_Pooling" / "config.json")
    normalize = any(m["type"].endswith(".Normalize") for m in _read_json(dest / "modules.json"))
    out = []
    for _, h in reference_states(dest, texts):
        if pool_cfg["pooling_mode_cls_token"]:
            vec = h[0]
        elif pool_cfg.get("pooling_mode_lasttoken"):
            vec = h[-1]
        else:
            vec = h.mean(axis=0)
        out.append(vec / np.linalg.norm(vec) if normalize else vec)
    return np.array(out, dtype=np.float32)


def _vocab() -> list[str]:
    """Special tokens first (so [PAD] is id 0), then characters, their ## forms, suffixes, words."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = SPECIAL_TOKENS + chars + ["##" + c for c in chars] + SUFFIXES + COMMON_WORDS.split()
    return list(dict.fromkeys(tokens))  # words like "a" and "i" are already characters


def _save_tokenizer(path: Path, vocab: list[str], max_seq_length: int) -> None:
    """Save a BERT-style WordPiece tokenizer whose stored truncation/padding is shorter than
    ``max_seq_length``, as in the real all-MiniLM repo, so a daemon that trusts them is caught."""
    ids = {tok: i for i, tok in enumerate(vocab)}
    tokenizer = Tokenizer(models.WordPiece(ids, unk_token="[UNK]", continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    trap_length = max_seq_length // 2
    tokenizer.enable_truncation(trap_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=trap_length)
    tokenizer.save(str(path))


def _write_configs(
    dest: Path, pooling: str, normalize: bool, max_seq_length: int, hidden: int, vocab_size: int, seed: int
) -> None:
    """Write the JSON files of a sentence-transformers repo (shapes follow all-MiniLM-L6-v2)."""
    specials = {
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    files = {
        "config.json": {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "hidden_size": hidden,
            "num_hidden_layers": 1,
            "num_attention_heads": 1,
            "intermediate_size": hidden,
            "hidden_act": "tanh",
            "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
            "type_vocab_size": TYPE_VOCAB_SIZE,
            "vocab_size": vocab_size,
            "pad_token_id": 0,
            "tiny_seed": seed,  # lets reference_vectors regenerate the exact weights
        },
        "tokenizer_config.json": {
            **specials,
            "do_lower_case": True,
            "tokenize_chinese_chars": True,
            "strip_accents": None,
            "tokenizer_class": "BertTokenizer",
            "model_max_length": MAX_POSITION_EMBEDDINGS,
        },
        "special_tokens_map.json": specials,
        "sentence_bert_config.json": {"max_seq_length": max_seq_length, "do_lower_case": False},
        "config_sentence_transformers.json": {
            "prompts": {"query": "query: ", "document": ""},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
        "modules.json": modules,
        "1_Pooling/config.json": {
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": pooling == "cls",
            "pooling_mode_mean_tokens": pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_lasttoken": pooling == "lasttoken",
        },
    }
    for name, content in files.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_text(json.dumps(content, indent=2))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _weights(vocab_size: int, hidden: int, seed: int) -> dict[str, np.ndarray]:
    """Deterministic float32 weights; the pre-activation std is about 0.9, so tanh is not saturated."""
    rng = np.random.default_rng(seed)
    shapes_and_scales = {
        "word_embeddings": ((vocab_size, hidden), 0.3),
        "position_embeddings": ((MAX_POSITION_EMBEDDINGS, hidden), 0.3),
        "token_type_embeddings": ((TYPE_VOCAB_SIZE, hidden), 0.3),
        "dense.weight": ((hidden, hidden), 1.0 / np.sqrt(hidden)),
        # The context is a mean, so it varies little between texts; a larger gain keeps even
        # CLS pooling (whose own token embedding never changes) clearly text- and mask-dependent.
        "context.weight": ((hidden, hidden), 3.0 / np.sqrt(hidden)),
        "dense.bias": ((hidden,), 0.1),
    }
    return {
        name: rng.normal(0.0, scale, shape).astype(np.float32) for name, (shape, scale) in shapes_and_scales.items()
    }


def _graph(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """e = Emb[ids] + Pos[0..S) + Type[types]; ctx = masked mean of e; h = tanh(e @ W + ctx @ C + b)."""
    hidden = weights["dense.bias"].shape[0]
    consts = {
        "axis1": np.array([1], dtype=np.int64),
        "axis2": np.array([2], dtype=np.int64),
        "zero": np.array(0, dtype=np.int64),
        "one": np.array(1, dtype=np.int64),
    }
    initializers = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    initializers += [numpy_helper.from_array(v, k) for k, v in consts.items()]
    node = helper.make_node
    nodes = [
        node("Gather", ["word_embeddings", "input_ids"], ["word"]),
        node("Gather", ["token_type_embeddings", "token_type_ids"], ["type"]),
        node("Shape", ["input_ids"], ["shape"]),
        node("Gather", ["shape", "one"], ["seq_len"], axis=0),
        node("Range", ["zero", "seq_len", "one"], ["positions"]),
        node("Gather", ["position_embeddings", "positions"], ["pos"]),
        node("Add", ["word", "pos"], ["word_pos"]),
        node("Add", ["word_pos", "type"], ["e"]),
        node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        node("Unsqueeze", ["mask_f", "axis2"], ["mask"]),
        node("Mul", ["e", "mask"], ["e_masked"]),
        node("ReduceSum", ["e_masked", "axis1"], ["e_sum"], keepdims=1),
        node("ReduceSum", ["mask", "axis1"], ["count"], keepdims=1),
        node("Div", ["e_sum", "count"], ["ctx"]),
        node("MatMul", ["e", "dense.weight"], ["token_part"]),
        node("MatMul", ["ctx", "context.weight"], ["context_part"]),
        node("Add", ["token_part", "context_part"], ["mixed"]),
        node("Add", ["mixed", "dense.bias"], ["pre"]),
        node("Tanh", ["pre"], ["last_hidden_state"]),
    ]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"])
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", hidden])
    graph = helper.make_graph(nodes, "tiny_bert", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


FAULTS = ("nan", "fixed-shape", "fp16-overflow")


def build_faulty_model(dest: Path, fault: str, hidden: int = 8) -> Path:
    """A tiny model folder whose network loads but misbehaves, for the error paths a sound model never takes.

    `nan`: every output is the square root of a negative number. `fixed-shape`: the output is reshaped to
    [3, 5, hidden], so inference fails for any batch that is not 3 texts of 5 tokens. `fp16-overflow`: each
    token's (id + 1) times 60,000 (in two steps), then times 1e-5: beyond fp16's range (65,504) on the way,
    finite in fp32.
    """
    if fault not in FAULTS:
        raise ValueError(f"fault must be one of {FAULTS}, not {fault!r}")
    build_tiny_model(dest, source="none", hidden=hidden)
    initializers = [
        numpy_helper.from_array(np.ones((1, 1, hidden), dtype=np.float32), "ones"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        numpy_helper.from_array(np.array([3, 5, hidden], dtype=np.int64), "fixed"),
        numpy_helper.from_array(np.full((hidden, hidden), 30_000.0 / hidden, dtype=np.float32), "huge"),
        numpy_helper.from_array(np.array(1e-5, dtype=np.float32), "tiny"),
    ]
    node = helper.make_node
    nodes = [
        node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
        node("Unsqueeze", ["ids_f", "axis2"], ["column"]),
        node("Add", ["column", "ones"], ["positive"]),
    ]
    if fault == "nan":
        nodes += [node("Neg", ["positive"], ["negative"]), node("Sqrt", ["negative"], ["last_hidden_state"])]
    elif fault == "fp16-overflow":
        nodes += [
            node("MatMul", ["positive", "huge"], ["large"]),
            node("Add", ["large", "large"], ["overflowing"]),  # a separate op, so the product is stored
            node("Relu", ["overflowing"], ["kept"]),
            node("Mul", ["kept", "tiny"], ["last_hidden_state"]),
        ]
    else:
        nodes += [node("Reshape", ["positive", "fixed"], ["last_hidden_state"])]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"])
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [None, None, hidden])
    graph = helper.make_graph(nodes, f"faulty_{fault}", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    (dest / "onnx").mkdir(exist_ok=True)
    onnx.save_model(model, dest / "onnx" / "model.onnx")
    return dest
