"""In-process query encoding with micro-batching and admission by deadline.

On this project's 2-core machines a Ray handle call to the Encoder deployment cost ~13 ms
(measured: rewrite ``encode`` stage 15 ms vs 1.7 ms for the ONNX call itself), more than the
work. So by default (``serving.query_encoder = "local"``) the Ingress replica encodes queries
itself: concurrent requests are gathered into one ONNX call (up to ``max_batch`` texts, waiting at
most ``max_wait_ms`` for company) on one worker thread — onnxruntime releases the GIL, so the
event loop keeps serving meanwhile. A request whose deadline would pass before its batch could
finish is refused at once (:class:`~serving.budget.StageTimeout`), which is what keeps budgeted
requests on time while the encoder is saturated.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from features.encoder import Encoder
from serving.budget import StageTimeout

__all__ = ["BatchingEncoder"]


class BatchingEncoder:
    def __init__(self, encoder: Encoder, *, max_batch: int = 16, max_wait_ms: float = 1.0) -> None:
        self.encoder = encoder
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="p13n-encoder")
        self.queue: list[tuple[str, asyncio.Future]] = []
        self.batch_ms = 3.0  # running estimate of one batch's duration
        self.busy = False
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    def expected_wait_ms(self) -> float:
        """How long a text queued now would take: the batches ahead of it, plus its own."""
        batches_ahead = len(self.queue) // self.max_batch + (1 if self.busy else 0)
        return (batches_ahead + 1) * self.batch_ms + self.max_wait_s * 1000

    async def encode(self, text: str, remaining_ms: float | None = None) -> np.ndarray:
        if remaining_ms is not None and self.expected_wait_ms() > remaining_ms:
            raise StageTimeout("encode")  # would be late: do not even queue
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._run())
        future: asyncio.Future = loop.create_future()
        self.queue.append((text, future))
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
                batch = [(t, f) for t, f in self.queue[: self.max_batch] if not f.done()]
                del self.queue[: self.max_batch]
                if not batch:
                    continue
                self.busy = True
                started = loop.time()
                try:
                    vectors = await loop.run_in_executor(self.pool, self.encoder.encode, [t for t, _ in batch])
                except Exception as exc:  # noqa: BLE001 - handed to every waiting caller, not swallowed
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                finally:
                    self.busy = False
                elapsed_ms = (loop.time() - started) * 1000
                self.batch_ms = 0.8 * self.batch_ms + 0.2 * elapsed_ms
                for (_, future), vector in zip(batch, vectors):
                    if not future.done():
                        future.set_result(vector)
