"""The batcher on its own: batch shapes, fairness, ordering, cancellation and backpressure, on real OpenVINO."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import numpy as np
import pytest

from daemon.inference.batcher import Lane
from daemon.inference.embed import Embedded, EmbedOptions
from daemon.inference.engine import Engine, LoadedModel
from daemon.inference.errors import QueueFull
from daemon.inference.pool import MAX_PADDING_SHARE, BatchLimits, Job, Pool
from daemon.inference.residency import Residency
from daemon.inference.runtime import Runtime
from daemon.inference.tokenize import TokenizedText
from modelstore.create import create_from_folder
from modelstore.names import parse_name
from modelstore.store import ModelStore

# The pool never touches a job's future; one idle loop can own them all.
LOOP = asyncio.new_event_loop()


def job_of(lengths: list[int]) -> Job:
    texts = [TokenizedText(np.zeros(n, dtype=np.int64)) for n in lengths]
    future: asyncio.Future[np.ndarray] = LOOP.create_future()
    return Job(inputs=texts, future=future, rows=np.empty((len(texts), 1)), remaining=len(texts))


def drain(pool: Pool, limits: BatchLimits) -> list[list]:
    batches = []
    while batch := pool.take(limits):
        batches.append(batch)
    return batches


def test_batches_stay_within_budget_and_take_every_text_once() -> None:
    rng = random.Random(0)
    limits = BatchLimits(max_tokens=512, max_texts=16)
    jobs = [job_of([rng.randint(3, 120) for _ in range(rng.randint(1, 40))]) for _ in range(12)]
    pool = Pool()
    for job in jobs:
        pool.add(job)
    batches = drain(pool, limits)
    taken = [(id(item.job), item.index) for batch in batches for item in batch]
    assert sorted(taken) == sorted((id(j), i) for j in jobs for i in range(len(j.inputs)))
    for batch in batches:
        width = max(item.length for item in batch)
        assert len(batch) <= limits.max_texts
        assert len(batch) == 1 or len(batch) * width <= limits.max_tokens


def test_padding_stays_small_when_lengths_allow() -> None:
    limits = BatchLimits(max_tokens=4096, max_texts=64)
    pool = Pool()
    rng = random.Random(1)
    pool.add(job_of([rng.randint(5, 200) for _ in range(500)]))
    for batch in drain(pool, limits):
        width = max(item.length for item in batch)
        real = sum(item.length for item in batch)
        assert len(batch) == 1 or real >= (1 - MAX_PADDING_SHARE) * len(batch) * width


def test_a_small_request_is_not_starved_by_a_big_one() -> None:
    limits = BatchLimits(max_tokens=256, max_texts=8)
    pool = Pool()
    big, small = job_of([20] * 5000), job_of([40])
    pool.add(big)
    pool.add(small)
    first_two = [pool.take(limits), pool.take(limits)]
    assert any(item.job is small for batch in first_two for item in batch)


def test_cancelled_requests_leave_the_pool() -> None:
    limits = BatchLimits(max_tokens=1024, max_texts=32)
    pool = Pool()
    gone, kept = job_of([10] * 100), job_of([10] * 3)
    pool.add(gone)
    pool.add(kept)
    gone.cancelled = True
    batches = drain(pool, limits)
    assert [item.job for batch in batches for item in batch] == [kept] * 3
    assert not pool


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> LoadedModel:
    store = ModelStore(tmp_path_factory.mktemp("batcher-store"))
    record = create_from_folder(store, parse_name("tiny"), tiny_dir)
    return Engine("CPU", "fp32", "THROUGHPUT", None).load(record)


WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "warm",
    "mat",
    "while",
    "water",
    "ran",
    "down",
    "the",
    "old",
    "stone",
    "road",
    "near",
    "our",
    "house",
]


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for _ in range(count)]


def test_vectors_come_back_in_order_and_independent_of_company(tiny_model: LoadedModel) -> None:
    texts = sentences(300)

    async def run() -> tuple[np.ndarray, list[np.ndarray]]:
        lane = Lane(tiny_model, BatchLimits(max_tokens=256, max_texts=16))
        together = await lane.embed(texts, 32, True)
        alone = await asyncio.gather(*(lane.embed([t], 32, True) for t in texts[:40]))
        await lane.close()
        return together.vectors, [a.vectors[0] for a in alone]

    together, alone = asyncio.run(run())
    direct = np.concatenate([tiny_model.infer(0, tiny_model.tokens.texts([t], 32, True)) for t in texts[:40]])
    assert np.allclose(together[:40], direct, atol=1e-5)
    assert np.allclose(np.stack(alone), direct, atol=1e-5)


def test_a_full_queue_refuses_and_cancelled_work_is_dropped(tmp_path: Path, tiny_dir: Path) -> None:
    store = ModelStore(tmp_path / "models")
    record = create_from_folder(store, parse_name("tiny"), tiny_dir)
    engine = Engine("CPU", "fp32", "THROUGHPUT", None)
    residency = Residency(engine, store, BatchLimits(max_tokens=64, max_texts=2), 300.0, 1)
    runtime = Runtime(engine, store, residency, max_inputs=10_000, max_queue=2)

    async def run() -> tuple[bool, int, bool]:
        async def request(texts: list[str]) -> Embedded:
            return await runtime.embed(record, texts, EmbedOptions())

        first = asyncio.create_task(request(sentences(3000, 1)))
        second = asyncio.create_task(request(sentences(3000, 2)))
        await asyncio.sleep(0)
        try:
            await request(["one more"])
            refused = False
        except QueueFull:
            refused = True
        first.cancel()
        second.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
        small = await request(["after the storm"])
        work_left = any(resident.lane.pool for resident in runtime.running())
        await runtime.close()
        return refused, small.vectors.shape[0], work_left

    refused, answered, work_left = asyncio.run(run())
    assert refused
    assert answered == 1
    assert not work_left
