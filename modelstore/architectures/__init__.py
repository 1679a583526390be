"""Networks built from a Hugging Face checkpoint (config.json and safetensors) with OpenVINO's own opset.

No torch and no optimum: each supported architecture is written out op by op after its reference
implementation in transformers, and its weights are read from the memory-mapped checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import openvino as ov

from modelstore.architectures import bert, gemma3, modernbert, qwen3
from modelstore.architectures.layers import WEIGHT_FORMATS, ArchitectureError
from modelstore.architectures.weights import Checkpoint, ReadProgress, WeightsError

Builder = Callable[[dict[str, Any], Checkpoint, str], ov.Model]
# model_type -> the module that checks its config and builds it.
ARCHITECTURES: dict[str, ModuleType] = {
    **dict.fromkeys(bert.MODEL_TYPES, bert),
    **dict.fromkeys(gemma3.MODEL_TYPES, gemma3),
    **dict.fromkeys(modernbert.MODEL_TYPES, modernbert),
    **dict.fromkeys(qwen3.MODEL_TYPES, qwen3),
}

__all__ = [
    "ARCHITECTURES",
    "WEIGHT_FORMATS",
    "ArchitectureError",
    "ReadProgress",
    "WeightsError",
    "build_network",
    "builder_for",
]


def build_network(checkpoint_path: Path, weights: str = "fp16", progress: ReadProgress | None = None) -> ov.Model:
    """The encoder described by the config.json beside `checkpoint_path`, with its weights as `weights`;
    `progress` follows the checkpoint as its tensors are read, layer after layer.

    Raises ArchitectureError for an architecture or setting not converted, WeightsError for a bad checkpoint.
    """
    config_path = checkpoint_path.parent / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArchitectureError(f"cannot read {config_path.name} beside {checkpoint_path.name}: {exc}") from exc
    checkpoint = Checkpoint.open(checkpoint_path, progress)
    model = builder_for(config)(config, checkpoint, weights)
    checkpoint.finish()
    return model


def builder_for(config: dict[str, Any]) -> Builder:
    """The builder for a config.json, after every check the config alone allows (so a pull can refuse a repo
    before fetching its weights); ArchitectureError names what is not converted and what is."""
    model_type = str(config.get("model_type", ""))
    module = ARCHITECTURES.get(model_type)
    if module is None:
        named = model_type or ", ".join(config.get("architectures") or []) or "an unnamed architecture"
        raise ArchitectureError(
            f"ovembed does not convert {named} from safetensors yet; it converts {', '.join(sorted(ARCHITECTURES))}"
        )
    module.check(config)
    return module.build
