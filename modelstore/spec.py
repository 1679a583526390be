"""What the engine needs to know about a stored model, beside its files."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

POOLING_MODES = ("mean", "cls", "lasttoken")


@dataclass(frozen=True)
class ModelSpec:
    """Pooling, normalization and limits, read once from the source repo and kept in the manifest."""

    architecture: str
    pooling: str
    normalize: bool
    context_length: int
    dimension: int
    precision: str
    parameter_count: int
    prompts: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(
            architecture=str(data["architecture"]),
            pooling=str(data["pooling"]),
            normalize=bool(data["normalize"]),
            context_length=int(data["context_length"]),
            dimension=int(data["dimension"]),
            precision=str(data["precision"]),
            parameter_count=int(data["parameter_count"]),
            prompts=dict(data.get("prompts") or {}),
        )
