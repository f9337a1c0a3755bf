"""The request path's micro-batcher: batching, admission by deadline, and load shedding."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serving.budget import StageTimeout
from serving.local_encoder import BatchingEncoder


class GatedEncoder:
    """Encodes only when let through, recording each batch, so a test controls the queue."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.batches: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        assert self.gate.wait(timeout=30), "the test never opened the gate"
        self.batches.append(list(texts))
        return np.array([[float(len(t))] for t in texts])


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def test_concurrent_texts_share_batches_and_get_their_own_vectors():
    encoder = GatedEncoder()
    encoder.gate.set()
    async def main():
        return await asyncio.gather(*(batcher.encode("x" * n) for n in range(1, 17)))

    with ThreadPoolExecutor(1) as pool:
        batcher = BatchingEncoder(encoder, pool, max_batch=8, max_wait_ms=5.0)
        vectors = run(main())
    assert [float(v[0]) for v in vectors] == [float(n) for n in range(1, 17)]
    assert len(encoder.batches) < 16 and max(len(b) for b in encoder.batches) <= 8


def test_a_short_text_behind_long_ones_is_refused_when_their_length_would_make_it_late():
    encoder = GatedEncoder()
    pool = ThreadPoolExecutor(1)
    batcher = BatchingEncoder(encoder, pool, max_batch=16, max_wait_ms=0.0)

    async def main():
        flood = [asyncio.ensure_future(batcher.encode("unseen item text " * 30)) for _ in range(16)]
        await asyncio.sleep(0)
        wait_for_query = batcher.expected_wait_ms(len("what should I buy?"))
        with pytest.raises(StageTimeout):
            await batcher.encode("what should I buy?", remaining_ms=wait_for_query - 1)
        encoder.gate.set()
        await asyncio.gather(*flood)
        return wait_for_query

    try:
        wait_ms = run(main())
    finally:
        encoder.gate.set()
        pool.shutdown()
    assert wait_ms > 16 * len("unseen item text " * 30) * 0.01  # the queued characters count, not just one batch


def test_work_beyond_the_deadline_or_the_queue_limit_is_refused_at_once():
    encoder = GatedEncoder()  # closed: nothing finishes, the queue only grows
    pool = ThreadPoolExecutor(1)
    batcher = BatchingEncoder(encoder, pool, max_batch=1, max_wait_ms=0.0, max_queue_ms=20.0)

    async def offer(text: str, remaining_ms: float | None = None) -> asyncio.Task:
        task = asyncio.ensure_future(batcher.encode(text, remaining_ms))
        await asyncio.sleep(0)  # runs until it is queued (pending) or refused (done)
        return task

    async def main():
        first = [await offer(f"t{n}") for n in range(3)]
        tight = await offer("tight", remaining_ms=1.0)  # its budget ends before the queue drains
        long_text = "a long candidate description " * 20  # ~600 characters: several ms of work each
        unbounded = [await offer(f"{long_text}{n}") for n in range(20)]  # no budget, but the queue is limited
        refused = [t for t in [tight, *unbounded] if t.done()]
        assert all(isinstance(t.exception(), StageTimeout) for t in refused)
        encoder.gate.set()
        served = await asyncio.gather(*(t for t in [*first, *unbounded] if not t.done()))
        return tight.done(), len(refused), len(served)

    try:
        tight_refused, refused, served = run(main())
    finally:
        encoder.gate.set()
        pool.shutdown()
    assert tight_refused
    assert refused > 1, "the queue limit never refused a text without a budget"
    assert served >= 3 and served + refused == 24
