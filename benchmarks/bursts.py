"""Bursts: N requests sent at the same instant, every ``interval_s``; how long until the last answer.

A burst is what many clients firing in step look like to the API (a page that fans out, a cron, a
retry storm). Burst b is due at ``start + b × interval_s`` (a fixed schedule, as in
:mod:`benchmarks.loadgen`); all its requests are handed to the event loop at once, and the burst's
time is from that due time to its last answer. Per-request latency, server stage timings, send lag
and the generator's CPU use are reported beside it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.common import percentiles
from benchmarks.loadgen import cpu_seconds, measured_post, stage_percentiles, warm_up

__all__ = ["BurstResult", "run_bursts"]


@dataclass
class BurstResult:
    size: int
    bursts: int
    interval_s: float
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    burst_ms: list[float] = field(default_factory=list)  # due time -> last answer, complete bursts only
    latency_ms: list[float] = field(default_factory=list)  # every request, from its burst's due time
    stages_ms: dict[str, list[float]] = field(default_factory=dict)
    send_lag_ms: list[float] = field(default_factory=list)  # due time -> last request of the burst handed over
    degraded: int = 0
    generator_cpu: float = 0.0

    def summary(self) -> dict:
        return {
            "size": self.size,
            "bursts": self.bursts,
            "interval_s": self.interval_s,
            "sent": self.size * self.bursts,
            "ok": self.ok,
            "errors": self.errors,
            "burst_ms": {**percentiles(self.burst_ms, (50, 90, 99)), "max": round(max(self.burst_ms), 3)}
            if self.burst_ms else {},  # fmt: skip
            "complete_bursts": len(self.burst_ms),
            "latency_ms": percentiles(self.latency_ms, (50, 90, 99)) if self.latency_ms else {},
            "server_stages_ms": stage_percentiles(self.stages_ms),
            "degraded_ratio": round(self.degraded / self.ok, 4) if self.ok else None,
            "send_lag_ms": percentiles(self.send_lag_ms, (50, 99)) if self.send_lag_ms else {},
            "generator_cpu_share": round(self.generator_cpu, 3),
        }


async def run_bursts(
    url: str,
    make_body: Callable[[int], dict],
    *,
    size: int,
    bursts: int,
    interval_s: float = 0.5,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
) -> BurstResult:
    """Send ``bursts`` bursts of ``size`` simultaneous POSTs to ``url``, one every ``interval_s`` s.

    A burst with a failed request counts in ``errors`` and not in ``burst_ms``.
    """
    import aiohttp

    result = BurstResult(size=size, bursts=bursts, interval_s=interval_s)
    bodies = [json.dumps(make_body(n)).encode() for n in range(size * bursts)]
    hdrs = {"content-type": "application/json", **(headers or {})}
    loop = asyncio.get_running_loop()

    async def burst(session, b: int, due: float) -> None:
        result.send_lag_ms.append(max(0.0, (loop.time() - due) * 1000))
        tasks = [asyncio.create_task(measured_post(session, url, bodies[b * size + k], hdrs, due, result))
                 for k in range(size)]
        finished = await asyncio.gather(*tasks)
        if all(t is not None for t in finished):
            result.burst_ms.append((max(finished) - due) * 1000)

    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        # open as many keep-alive connections as one burst needs, unmeasured
        await warm_up(session, url, bodies[:size], hdrs, result.errors)
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        start = loop.time() + 0.05
        running = []
        for b in range(bursts):
            due = start + b * interval_s
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            running.append(asyncio.create_task(burst(session, b, due)))
            await asyncio.sleep(0)  # let the burst hand over its requests before the next sleep
        await asyncio.gather(*running)
        wall = time.perf_counter() - wall0
        result.generator_cpu = (cpu_seconds() - cpu0) / wall if wall > 0 else 0.0
    return result
