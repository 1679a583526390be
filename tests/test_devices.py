"""One daemon over several devices: OpenVINO's AUTO with a list, compiled with CUMULATIVE_THROUGHPUT.

This machine has one CPU and no GPU, so `AUTO:CPU` proves the path a list of GPUs takes (`AUTO:GPU.0,GPU.1`):
the settings, the compile, the slots OpenVINO asks for, the precision it reports and the vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from daemon.inference.engine import Engine
from daemon.inference.precision import MIN_COSINE, worst_cosine
from tests.conftest import serving, store_models

TEXTS = ["water", "why is the sky blue?", "Paris is the capital and most populous city of France.", "hello"]


def _served(root: Path, device: str) -> tuple[np.ndarray, dict[str, object], object]:
    """The texts' vectors from a daemon on `device` (its own choice of precision), its /api/ps entry and the
    model it loaded."""
    with serving(root, device=device, precision="auto") as client:
        answer = client.post("/api/embed", json={"model": "tiny", "input": TEXTS})
        assert answer.status_code == 200, answer.text
        (loaded,) = client.get("/api/ps").json()["models"]
        (resident,) = client.app.state.runtime.running()  # type: ignore[attr-defined]
        return np.array(answer.json()["embeddings"]), loaded, resident.lane.model


def test_auto_over_a_device_list_serves_with_cumulative_throughput(tmp_path: Path, tiny_dir: Path) -> None:
    store_models(tmp_path, {"tiny": tiny_dir})
    spread, loaded, model = _served(tmp_path, "AUTO:CPU")
    assert Engine("AUTO:CPU", "auto", "THROUGHPUT", None).device.config == {"PERFORMANCE_HINT": "CUMULATIVE_THROUGHPUT"}
    compiled = model.compiled  # type: ignore[attr-defined]
    assert str(compiled.get_property("PERFORMANCE_HINT")).endswith("CUMULATIVE_THROUGHPUT")
    assert list(compiled.get_property("EXECUTION_DEVICES")) == ["CPU"]
    # As many slots as OpenVINO asks for: with GPUs, the sum of what each one wants.
    assert model.slots == int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))  # type: ignore[attr-defined]
    assert loaded["device"] == "AUTO:CPU"
    # Not measured (AUTO picks for itself); what the member computes in is read off it.
    cpu_default = Engine("CPU", "auto", "THROUGHPUT", None).core.get_property("CPU", "INFERENCE_PRECISION_HINT")
    assert loaded["compute_precision"] == {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[cpu_default.get_type_name()]
    alone, _, _ = _served(tmp_path, "CPU")
    assert worst_cosine(spread, alone) >= MIN_COSINE


def test_a_forced_precision_reaches_the_devices_behind_auto(tmp_path: Path, tiny_dir: Path) -> None:
    store_models(tmp_path, {"tiny": tiny_dir})
    with serving(tmp_path, device="AUTO:CPU", precision="fp32") as client:
        assert client.post("/api/embed", json={"model": "tiny", "input": TEXTS}).status_code == 200
        (loaded,) = client.get("/api/ps").json()["models"]
    assert loaded["compute_precision"] == "fp32"
