"""Which OpenVINO device runs the models, and with what compile settings.

On a home server the point of ovembed is the Intel GPU, so `auto` takes a discrete Arc first, then an
integrated GPU, then the CPU. A device that was asked for by name and is absent is an error at start,
never a silent fall back to the CPU.

OpenVINO's AUTO with a list of devices (`AUTO:GPU.0,GPU.1`) runs one compiled model on all of them: compiled
with the CUMULATIVE_THROUGHPUT hint, its infer requests (the model's slots, as many as it asks for) are spread
over the devices, so one daemon and one queue keep several GPUs busy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

_VIRTUAL = ("AUTO", "MULTI", "HETERO", "BATCH")
_PRECISIONS = {"auto": None, "fp32": "f32", "f32": "f32", "bf16": "bf16", "fp16": "f16", "f16": "f16"}
# OVEMBED_PRECISION's names as OpenVINO's INFERENCE_PRECISION_HINT takes them.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_HINTS = ("THROUGHPUT", "LATENCY")


class DeviceError(ValueError):
    """A device or setting the machine cannot honour, said in words a person can act on."""


@dataclass(frozen=True)
class DeviceChoice:
    """The device name handed to compile_model, and the properties to compile with."""

    name: str
    config: dict[str, str]

    @property
    def is_gpu(self) -> bool:
        """A GPU, alone or among a virtual device's members (whose kernels also want few padded lengths)."""
        return any(member.startswith("GPU") for member in members(self.name))


def members(device: str) -> list[str]:
    """The devices a name runs on: itself, or a virtual device's list (`AUTO:GPU.0,GPU.1`)."""
    virtual, _, listed = device.partition(":")
    return [m for m in listed.split(",") if m] if virtual in _VIRTUAL else [device]


def spreads(device: str) -> bool:
    """AUTO over a list of devices, which runs a model on all of them at once with CUMULATIVE_THROUGHPUT."""
    return device.startswith("AUTO:") and bool(members(device))


def _present(device: str, available: Sequence[str]) -> bool:
    """`GPU` names any GPU; `GPU.1` only that one."""
    return any(d == device or d.split(".", 1)[0] == device for d in available)


def pick_device(requested: str, available: Sequence[str], device_type: Callable[[str], str]) -> str:
    """Resolve OVEMBED_DEVICE against what OpenVINO sees; `device_type` answers DISCRETE or INTEGRATED."""
    wanted = requested.strip().upper() or "AUTO"
    seen = ", ".join(available) or "no devices"
    if wanted == "AUTO":
        gpus = [d for d in available if d.startswith("GPU")]
        discrete = [d for d in gpus if device_type(d) == "DISCRETE"]
        return (discrete or gpus or ["CPU"])[0]
    virtual, _, members = wanted.partition(":")
    if virtual in _VIRTUAL:
        absent = [m for m in members.split(",") if m and not _present(m, available)]
        if absent:
            raise DeviceError(
                f"device {', '.join(absent)} in OVEMBED_DEVICE={requested} is not available; OpenVINO sees {seen}"
            )
        return wanted
    if not _present(wanted, available):
        raise DeviceError(f"device {requested} (OVEMBED_DEVICE) is not available; OpenVINO sees {seen}")
    return wanted


def compile_config(precision: str, hint: str, device: str = "CPU") -> dict[str, str]:
    """OpenVINO properties for OVEMBED_PRECISION and OVEMBED_PERFORMANCE_HINT on `device`.

    `auto` sets no precision here: the engine measures one per model (precision.py), and a device it does
    not measure keeps OpenVINO's own default. THROUGHPUT on AUTO over a list of devices is CUMULATIVE_THROUGHPUT,
    which uses them all (AUTO's plain THROUGHPUT would pick one); LATENCY stays LATENCY there.
    """
    key = precision.strip().lower()
    if key not in _PRECISIONS:
        raise DeviceError(f"OVEMBED_PRECISION={precision} is not one of auto, fp32, bf16, fp16")
    mode = hint.strip().upper()
    if mode not in _HINTS:
        raise DeviceError(f"OVEMBED_PERFORMANCE_HINT={hint} is not one of THROUGHPUT, LATENCY")
    if mode == "THROUGHPUT" and spreads(device):
        mode = "CUMULATIVE_THROUGHPUT"
    config = {"PERFORMANCE_HINT": mode}
    chosen = _PRECISIONS[key]
    if chosen:
        config["INFERENCE_PRECISION_HINT"] = chosen
    return config
