"""In-process query encoding with micro-batching and admission by deadline.

On this project's 2-core machines a Ray handle call to the Encoder deployment cost ~13 ms
(measured: rewrite ``encode`` stage 15 ms vs 1.7 ms for the ONNX call itself), more than the
work. So by default (``serving.query_encoder = "local"``) the Ingress replica encodes queries
itself: concurrent requests are gathered into one ONNX call (up to ``max_batch`` texts, waiting at
most ``max_wait_ms`` for company) on one worker thread — onnxruntime releases the GIL, so the
event loop keeps serving meanwhile. A request whose deadline would pass before its batch could
finish is refused at once (:class:`~serving.budget.StageTimeout`), which is what keeps budgeted
requests on time while the encoder is saturated.

The worker thread runs at a lower OS priority (``nice``, Linux): when encoding saturates the
CPU, the event-loop thread — which answers budgeted requests that skipped encoding — still gets
the core at once instead of waiting for the encoder's time slice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from features.encoder.runtime import Encoder
from p13n.config import EncoderConfig
from serving.budget import StageTimeout

__all__ = ["BatchingEncoder", "EncoderProcess", "lower_thread_priority"]

log = logging.getLogger("p13n.serve")

BATCH_OVERHEAD_MS = 0.5  # a batch's fixed cost (hand-off to the worker, session run), measured order


def lower_thread_priority(increment: int) -> None:
    """Raise the calling thread's nice value by ``increment`` (Linux: nice is per thread).

    >>> lower_thread_priority(0)  # no-op
    """
    if increment <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except OSError as exc:  # e.g. a sandbox without the syscall: run at normal priority
        log.warning("could not lower the encoder thread's priority: %s", exc)


class EncoderProcess:
    """The query encoder in a child process of its own, at a lower OS priority.

    A thread would share the replica's GIL: when the encoder thread held it while the OS ran
    something else, the event loop waited too (a lowered priority makes that worse). A child
    process has its own interpreter, so saturating it never stalls the request path; a batch
    costs one pickle of texts and vectors each way. Started with ``spawn`` — forking a Ray
    worker's threads is not safe.
    """

    def __init__(self, config: EncoderConfig, *, nice: int = 0) -> None:
        import multiprocessing

        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                                        initargs=(str(config.directory), config.variant, config.threads,
                                                  config.max_length, nice))  # fmt: skip
        self.pool.submit(_encode_in_worker, ["warm-up"]).result(timeout=120)  # loaded before the first request

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)



_worker_encoder: Encoder | None = None


def _start_worker(directory: str, variant: str, threads: int, max_length: int, nice: int) -> None:
    global _worker_encoder
    lower_thread_priority(nice)
    _worker_encoder = Encoder(Path(directory), variant=variant, threads=threads, max_length=max_length)


def _encode_in_worker(texts: list[str]) -> np.ndarray:
    assert _worker_encoder is not None, "the encoder process was not initialised"
    return _worker_encoder.encode(texts)


class BatchingEncoder:
    """Micro-batches concurrent ``encode(text)`` calls into calls of ``batch_encode(texts)`` on ``pool``
    (one worker: a thread, or an :class:`EncoderProcess`'s process)."""

    def __init__(self, batch_encode: Callable[[list[str]], np.ndarray], pool: Executor, *, max_batch: int = 16,
                 max_wait_ms: float = 1.0, max_queue_ms: float = float("inf"),
                 on_batch: Callable[[int], None] = lambda size: None) -> None:  # fmt: skip
        self.batch_encode = batch_encode
        self.max_queue_ms = max_queue_ms  # never queue more than this much work, whatever the budget
        self.on_batch = on_batch  # e.g. a batch-size histogram
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.pool = pool
        self.queue: list[tuple[str, asyncio.Future]] = []
        # Cost model of a batch: BATCH_OVERHEAD_MS + characters × ms_per_char (running estimate). Counting
        # characters, not texts: when long texts flood the queue, a short query behind them waits for
        # their length — a per-batch estimate learnt on short queries admitted it anyway, and it missed
        # its deadline.
        self.ms_per_char = 0.03
        self.queued_chars = 0
        self.inflight_chars = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    @classmethod
    def in_thread(cls, encoder: Encoder, *, nice: int = 0, **options) -> BatchingEncoder:
        """Encode on one worker thread of this process, ``nice`` below the event loop."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="p13n-encoder", initializer=lower_thread_priority,
                                  initargs=(nice,))  # fmt: skip
        return cls(encoder.encode, pool, **options)

    @classmethod
    def in_process(cls, process: EncoderProcess, **options) -> BatchingEncoder:
        return cls(_encode_in_worker, process.pool, **options)

    def expected_wait_ms(self, chars: int = 0) -> float:
        """How long a text of ``chars`` characters queued now would take: the work ahead of it, plus its own."""
        batches = len(self.queue) // self.max_batch + 1 + (1 if self.inflight_chars else 0)
        work = self.queued_chars + self.inflight_chars + chars
        return batches * BATCH_OVERHEAD_MS + work * self.ms_per_char + self.max_wait_s * 1000

    async def encode(self, text: str, remaining_ms: float | None = None) -> np.ndarray:
        wait_ms = self.expected_wait_ms(len(text))
        if wait_ms > self.max_queue_ms or (remaining_ms is not None and wait_ms > remaining_ms):
            raise StageTimeout("encode")  # would be late: do not even queue
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._run())
        future: asyncio.Future = loop.create_future()
        self.queue.append((text, future))
        self.queued_chars += len(text)
        assert self._wakeup is not None
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if len(self.queue) < self.max_batch:
                await asyncio.sleep(self.max_wait_s)  # let concurrent requests join the batch
            while self.queue:
                taken = self.queue[: self.max_batch]
                del self.queue[: self.max_batch]
                self.queued_chars -= sum(len(t) for t, _ in taken)
                batch = [(t, f) for t, f in taken if not f.done()]
                if not batch:
                    continue
                chars = sum(len(t) for t, _ in batch)
                self.inflight_chars = chars
                self.on_batch(len(batch))
                started = loop.time()
                try:
                    vectors = await loop.run_in_executor(self.pool, self.batch_encode, [t for t, _ in batch])
                except Exception as exc:  # noqa: BLE001 - handed to every waiting caller, not swallowed
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                finally:
                    self.inflight_chars = 0
                elapsed_ms = (loop.time() - started) * 1000
                per_char = max(0.0, elapsed_ms - BATCH_OVERHEAD_MS) / max(1, chars)
                self.ms_per_char = 0.8 * self.ms_per_char + 0.2 * per_char
                for (_, future), vector in zip(batch, vectors):
                    if not future.done():
                        future.set_result(vector)
