"""Two nodes that built the same source hold the same model and give the same vectors, bit for bit.

Behind a balancer the same text must get the same vector whichever daemon answers: the same checkpoint built
twice in one store, in a second store, and by `ovembed create` in another process (where OpenVINO's naming
counters start again) makes one digest, and the vectors agree exactly in fp32 and in what `auto` picks here.
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from daemon.inference.engine import Engine, probe_model
from daemon.inference.precision_trial import run_trial
from modelstore.create import create_from_folder
from modelstore.names import parse_name
from modelstore.store import ModelRecord, ModelStore
from tests.conftest import OVEMBED, REPO
from tests.test_convert import FIXTURES

SOURCE = FIXTURES / "bert-mean"
PRECISIONS = ("fp32", "auto")


def _embed(record: ModelRecord, precision: str) -> tuple[str, np.ndarray]:
    """The probe texts' raw vectors from a fresh engine, as a daemon of its own would compute them."""
    model = Engine("CPU", precision, "THROUGHPUT", None).load(record)
    return model.precision, probe_model(model).batch


def _embed_elsewhere(record: ModelRecord, precision: str) -> tuple[str, np.ndarray]:
    """The same in a process of its own: `auto`'s child, asked for the precision the engine here computes in
    (its float32 rows come back as JSON numbers, which hold them exactly)."""
    return precision, run_trial(record, "CPU", precision, "THROUGHPUT", None).batch.astype(np.float32)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> list[ModelRecord]:
    """The fixture checkpoint built four times: twice in one store, once in another, once by another process."""
    root = tmp_path_factory.mktemp("identical")
    first, second = ModelStore(root / "first"), ModelStore(root / "second")
    records = [
        create_from_folder(first, parse_name("one"), SOURCE),
        create_from_folder(first, parse_name("two"), SOURCE),
        create_from_folder(second, parse_name("one"), SOURCE),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "OVEMBED_"))}
    env["OVEMBED_MODELS"] = str(root / "third")
    subprocess.run(
        [*OVEMBED, "create", "one", "--from", str(SOURCE)],
        env=env,
        cwd=REPO,
        capture_output=True,
        timeout=300,
        check=True,
    )
    elsewhere = ModelStore(root / "third").get(parse_name("one"))
    assert elsewhere is not None
    return [*records, elsewhere]


def test_the_same_checkpoint_makes_one_digest_everywhere(built: list[ModelRecord]) -> None:
    assert len({record.digest for record in built}) == 1
    networks = [(record.path / "openvino_model.xml").read_bytes() for record in built]
    assert all(network == networks[0] for network in networks[1:])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_same_model_gives_the_same_vectors_bit_for_bit(built: list[ModelRecord], precision: str) -> None:
    """Each build loaded by an engine of its own, and the last also in a process of its own."""
    answers = [_embed(record, precision) for record in built]
    chosen, expected = answers[0]
    answers.append(_embed_elsewhere(built[-1], chosen))
    assert chosen in (("fp32",) if precision == "fp32" else ("fp32", "bf16", "fp16"))
    for computed_in, rows in answers[1:]:
        assert computed_in == chosen
        assert rows.dtype == expected.dtype == np.float32 and np.array_equal(rows, expected)
