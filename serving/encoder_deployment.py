"""The Encoder deployment: ONNX (int8 by default) with dynamic batching.

Concurrent ``encode(text)`` calls are gathered by ``@serve.batch`` into one
``Encoder.encode`` call, which pads per length bucket. Batch size and wait are
tuned through ``user_config`` (``max_batch_size``, ``batch_wait_timeout_s``)
without a restart. The ONNX call runs on a worker thread (onnxruntime releases
the GIL), so the replica's event loop keeps accepting requests meanwhile.
"""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from features.encoder.runtime import Encoder
from p13n.config import load_config
from serving.metrics import ServingMetrics

__all__ = ["EncoderDeployment"]


@serve.deployment(name="Encoder", max_ongoing_requests=256, ray_actor_options={"num_cpus": 0},
                  logging_config={"enable_access_log": False, "log_level": "WARNING"})
class EncoderDeployment:
    def __init__(self) -> None:
        config = load_config()
        self.encoder = Encoder(config.encoder.directory, variant=config.encoder.variant, threads=config.encoder.threads,
                               max_length=config.encoder.max_length)  # fmt: skip
        self.metrics = ServingMetrics()
        self.encoder.encode(["warm-up: load the model and allocate buffers before the first request"])

    def reconfigure(self, user_config: dict) -> None:
        if "max_batch_size" in user_config:
            self.encode_batch.set_max_batch_size(int(user_config["max_batch_size"]))
        if "batch_wait_timeout_s" in user_config:
            self.encode_batch.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        self.metrics.observe_encoder_batch(len(texts))
        vectors = await asyncio.get_running_loop().run_in_executor(None, self.encoder.encode, texts)
        return list(vectors)

    async def encode(self, text: str) -> np.ndarray:
        return await self.encode_batch(text)

    async def encode_unbatched(self, text: str) -> np.ndarray:
        """One text per ONNX call (the baseline the batching benchmark compares against)."""
        return (await asyncio.get_running_loop().run_in_executor(None, self.encoder.encode, [text]))[0]
