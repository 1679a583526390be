"""Pure logic with no I/O: device choice, Go durations, Ollama's human formats and number sizes."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from tokenizers import Tokenizer

from daemon.cli.humanize import human_time
from daemon.durations import DurationError, keep_alive_seconds, parse_go_duration
from daemon.http.guard import host_allowed
from daemon.http.views import parameter_size
from daemon.inference.device import DeviceChoice, DeviceError, compile_config, pick_device
from daemon.inference.tokenize import longest_first
from modelstore.sizes import human_bytes
from tests.test_convert import FIXTURES

TYPES = {"CPU": "INTEGRATED", "GPU.0": "INTEGRATED", "GPU.1": "DISCRETE", "GPU": "INTEGRATED", "NPU": "INTEGRATED"}


@pytest.mark.parametrize(
    ("requested", "available", "chosen"),
    [
        ("auto", ["CPU"], "CPU"),
        ("", ["CPU"], "CPU"),
        ("auto", ["CPU", "GPU"], "GPU"),
        ("auto", ["CPU", "GPU.0", "GPU.1"], "GPU.1"),  # the discrete Arc before the iGPU
        ("AUTO", ["CPU", "NPU"], "CPU"),
        ("cpu", ["CPU", "GPU"], "CPU"),
        ("GPU", ["CPU", "GPU.0", "GPU.1"], "GPU"),
        ("GPU.0", ["CPU", "GPU.0", "GPU.1"], "GPU.0"),
        ("HETERO:GPU,CPU", ["CPU", "GPU"], "HETERO:GPU,CPU"),
        ("AUTO:GPU.0,GPU.1", ["CPU", "GPU.0", "GPU.1"], "AUTO:GPU.0,GPU.1"),  # OpenVINO's AUTO over both
        ("auto:cpu", ["CPU"], "AUTO:CPU"),
    ],
)
def test_device_choice(requested: str, available: list[str], chosen: str) -> None:
    assert pick_device(requested, available, TYPES.__getitem__) == chosen


@pytest.mark.parametrize(
    ("requested", "available"), [("GPU", ["CPU"]), ("GPU.2", ["CPU", "GPU.0"]), ("MULTI:GPU,CPU", ["CPU"])]
)
def test_an_absent_device_is_an_error_that_says_what_exists(requested: str, available: list[str]) -> None:
    with pytest.raises(DeviceError) as error:
        pick_device(requested, available, TYPES.__getitem__)
    assert "not available" in str(error.value)
    assert "CPU" in str(error.value)


def test_compile_config() -> None:
    # auto leaves the precision to the engine's measurement
    assert compile_config("auto", "THROUGHPUT") == {"PERFORMANCE_HINT": "THROUGHPUT"}
    assert compile_config("bf16", "THROUGHPUT")["INFERENCE_PRECISION_HINT"] == "bf16"
    latency = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    assert compile_config("fp32", "latency") == latency
    assert compile_config("BF16", "THROUGHPUT")["INFERENCE_PRECISION_HINT"] == "bf16"
    with pytest.raises(DeviceError, match="fp32, bf16, fp16"):
        compile_config("fp8", "THROUGHPUT")
    with pytest.raises(DeviceError, match="THROUGHPUT, LATENCY"):
        compile_config("auto", "fast")


def test_auto_over_a_device_list_compiles_for_cumulative_throughput() -> None:
    """AUTO's plain THROUGHPUT would run on one of the devices; CUMULATIVE_THROUGHPUT runs on them all."""
    spread = compile_config("auto", "THROUGHPUT", "AUTO:GPU.0,GPU.1")
    assert spread == {"PERFORMANCE_HINT": "CUMULATIVE_THROUGHPUT"}
    assert compile_config("fp16", "THROUGHPUT", "AUTO:GPU.0,GPU.1")["INFERENCE_PRECISION_HINT"] == "f16"
    assert compile_config("auto", "LATENCY", "AUTO:GPU.0,GPU.1") == {"PERFORMANCE_HINT": "LATENCY"}
    for single in ("CPU", "GPU.1", "HETERO:GPU,CPU"):
        assert compile_config("auto", "THROUGHPUT", single) == {"PERFORMANCE_HINT": "THROUGHPUT"}
    assert DeviceChoice("AUTO:GPU.0,GPU.1", spread).is_gpu and DeviceChoice("GPU.0", {}).is_gpu
    assert not DeviceChoice("AUTO:CPU", spread).is_gpu


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("1h30m", 5400), ("300ms", 0.3), ("-1s", -1), ("0", 0), ("1.5h", 5400), ("2h45m30.5s", 9930.5)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert math.isclose(parse_go_duration(text), seconds)


def test_the_longest_go_duration_still_parses() -> None:
    assert math.isclose(parse_go_duration("2562047h"), 2562047 * 3600)
    assert math.isclose(parse_go_duration("-2562047h"), -2562047 * 3600)


@pytest.mark.parametrize(
    ("seconds", "kept"),
    [(0.0, 0.0), (300.0, 300.0), (-1.0, math.inf), (1e15, math.inf), (2.0**64, math.inf), (9e9, 9e9)],
)
def test_keep_alive_past_gos_longest_duration_is_forever(seconds: float, kept: float) -> None:
    assert keep_alive_seconds(seconds) == kept


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc", 'time: invalid duration "abc"'),
        ("", 'time: invalid duration ""'),
        ("300", 'time: missing unit in duration "300"'),
        ("5x", 'time: unknown unit "x" in duration "5x"'),
        ("1m5", 'time: missing unit in duration "1m5"'),
        # Past a Go Duration's int64 nanoseconds (2562047h47m16.854775807s), as Go refuses them.
        ("2562048h", 'time: invalid duration "2562048h"'),
        ("9999999999999h", 'time: invalid duration "9999999999999h"'),
        ("100000000h", 'time: invalid duration "100000000h"'),
    ],
)
def test_bad_go_durations_carry_gos_text(text: str, message: str) -> None:
    with pytest.raises(DurationError) as error:
        parse_go_duration(text)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (999, "999 B"),
        (1000, "1 KB"),
        (45_888_964, "45 MB"),
        (9_970_000, "10.0 MB"),
        (2_500_000, "2.5 MB"),
        (2_000_000_000, "2 GB"),
    ],
)
def test_human_bytes(size: int, text: str) -> None:
    assert human_bytes(size) == text


def test_human_time() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert human_time(now - timedelta(minutes=2, seconds=5), now) == "2 minutes ago"
    assert human_time(now + timedelta(minutes=4, seconds=30), now) == "4 minutes from now"
    assert human_time(now - timedelta(seconds=30), now) == "30 seconds ago"
    assert human_time(now - timedelta(hours=1), now) == "About an hour ago"
    assert human_time(now + timedelta(days=365 * 100), now) == "Forever"


@pytest.mark.parametrize(
    ("count", "text"),
    [(22_565_376, "22.57M"), (335_000_000, "335M"), (1_200_000_000, "1.2B"), (4_000, "4K"), (12, "12")],
)
def test_parameter_size(count: int, text: str) -> None:
    assert parameter_size(count) == text


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("10.1.2.3", True),
        ("172.20.0.1:11434", True),
        ("[fd00::1]:80", True),
        ("0.0.0.0", True),
        ("203.0.113.5", False),  # documentation range: Python calls it private, Go does not
        ("169.254.1.1", False),
        ("fe80::1", False),
        ("198.18.0.1", False),
    ],
)
def test_host_check_uses_gos_private_ranges(host: str, allowed: bool) -> None:
    assert host_allowed(host) is allowed


def test_longest_first_keeps_what_the_tokenizers_library_keeps() -> None:
    """Every split of a pair against the library's own longest-first truncation, on BERT's pair template."""
    library = Tokenizer.from_file(str(FIXTURES / "bert-rerank" / "tokenizer.json"))
    library.no_padding()
    word = next(w for w in ("a", "the", "fox") if len(library.encode(w, add_special_tokens=False).ids) == 1)
    for room in (2, 3, 7, 8, 21):
        library.enable_truncation(room + 3, strategy="longest_first")  # [CLS] A [SEP] B [SEP]
        for first in range(0, 30, 3):
            for second in range(1, 30, 4):
                encoded = library.encode(" ".join([word] * first), " ".join([word] * second))
                kept = (encoded.type_ids.count(0) - 2, encoded.type_ids.count(1) - 1)
                assert longest_first(first, second, room) == kept, (first, second, room)
