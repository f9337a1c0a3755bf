"""An open-loop HTTP load generator on asyncio + aiohttp.

Requests leave on a schedule fixed before the clock starts — evenly spaced (``uniform``: request n at
``start + n/rate``) or with seeded exponential gaps (``poisson``: the arrivals of many independent
clients, the default) — whether or not earlier ones returned, so a stall in the server shows up as
queueing instead of silently lowering the rate (the "coordinated omission" of closed-loop tools).
Latency is measured from the *scheduled* send time; the generator also reports how late it actually
sent (send lag) and its own CPU use, because it shares the machine with the system under test. aiohttp rather than httpx: on this machine an
httpx generator collapsed at 200 req/s while an aiohttp one held 400 req/s (DESIGN.md §10).

Before the clock starts, a few unmeasured requests open keep-alive connections, as a long-running
client has them: otherwise the first scheduled requests of every step pay TCP connection set-up
through the proxy (seen as the only answers over 25 ms at the start of the budget step).
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from benchmarks.common import percentiles

__all__ = ["ARRIVALS", "RunResult", "arrival_offsets", "run_open_loop", "cpu_seconds", "count_error", "warm_up",
           "measured_post", "record_answer", "stage_percentiles"]

ARRIVALS = ("poisson", "uniform")


def arrival_offsets(arrivals: str, rate: float, total: int, seed: int = 0) -> np.ndarray:
    """Send times in seconds from the start for ``total`` requests at a mean ``rate`` per second.

    ``uniform``: n/rate. ``poisson``: cumulative sums of seeded exponential gaps of mean 1/rate,
    the first request at 0. Raises ValueError for another ``arrivals``.

    >>> arrival_offsets("uniform", 4, 3).tolist()
    [0.0, 0.25, 0.5]
    >>> a = arrival_offsets("poisson", 100, 10_000, seed=1)
    >>> bool(a[0] == 0 and (abs(a[-1] / 9_999 - 0.01) < 0.0005))
    True
    >>> bool((arrival_offsets("poisson", 100, 50, seed=1) == a[:50]).all())  # seeded: the same schedule
    True
    """
    if arrivals == "uniform":
        return np.arange(total, dtype=np.float64) / rate
    if arrivals == "poisson":
        gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=max(0, total - 1))
        return np.concatenate([[0.0], np.cumsum(gaps)])[:total]
    raise ValueError(f"arrivals must be one of {ARRIVALS}, got {arrivals!r}")


def stage_percentiles(stages: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """stage name -> p50/p99 of the server's ``timings_ms`` for that stage (ms)."""
    return {name: percentiles(values, (50, 99)) for name, values in sorted(stages.items()) if values}


def record_answer(payload: bytes, stages: dict[str, list[float]]) -> bool:
    """Add an answer's ``timings_ms`` to ``stages``; returns whether it was degraded."""
    answer = json.loads(payload)
    for name, ms in (answer.get("timings_ms") or {}).items():
        if isinstance(ms, (int, float)):
            stages.setdefault(name, []).append(float(ms))
    return bool(answer.get("degraded"))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class RunResult:
    rate: float
    duration_s: float
    arrivals: str = "uniform"
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)  # from the scheduled send time
    stages_ms: dict[str, list[float]] = field(default_factory=dict)  # timings_ms per stage, from the answers
    send_lag_ms: list[float] = field(default_factory=list)
    degraded: int = 0
    budget_ms: float | None = None
    generator_cpu: float = 0.0  # share of one core
    achieved_rate: float = 0.0

    def summary(self) -> dict:
        lat = percentiles(self.latency_ms, (50, 90, 99, 99.9)) if self.latency_ms else {}
        out = {
            "rate": self.rate,
            "arrivals": self.arrivals,
            "achieved_rate": round(self.achieved_rate, 1),
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "latency_ms": {**lat, "max": round(max(self.latency_ms), 3) if self.latency_ms else None},
            "server_ms": percentiles(self.stages_ms["total"], (50, 99)) if self.stages_ms.get("total") else {},
            "server_stages_ms": stage_percentiles(self.stages_ms),
            "degraded_ratio": round(self.degraded / self.ok, 4) if self.ok else None,
            "send_lag_ms": percentiles(self.send_lag_ms, (50, 99)) if self.send_lag_ms else {},
            "generator_cpu_share": round(self.generator_cpu, 3),
            "histogram": _histogram(self.latency_ms),
        }
        if self.budget_ms is not None and self.latency_ms:
            limit = self.budget_ms + 5
            arr = np.asarray(self.latency_ms)
            out["budget_ms"] = self.budget_ms
            out["within_budget_plus_5ms"] = round(float(np.mean(arr <= limit)), 5)
            out["budget_misses"] = int(np.sum(arr > limit))
        return out


async def _unmeasured(session, url: str, body: bytes, headers: dict[str, str]) -> str | None:
    """Send one request that is not measured; returns the error's name if it failed."""
    import aiohttp

    try:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            return None if response.status == 200 else str(response.status)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        return type(exc).__name__


def count_error(errors: dict[str, int], key: str) -> None:
    """One more failure of kind ``key`` (an HTTP status, an exception's name) in ``errors``."""
    errors[key] = errors.get(key, 0) + 1


async def warm_up(session, url: str, bodies: list[bytes], headers: dict[str, str], errors: dict[str, int]) -> None:
    """Send ``bodies`` at once, unmeasured, to open as many keep-alive connections; failures count in
    ``errors`` as ``warm-up <kind>``."""
    for failure in await asyncio.gather(*(_unmeasured(session, url, body, headers) for body in bodies)):
        if failure is not None:
            count_error(errors, f"warm-up {failure}")


async def measured_post(session, url: str, body: bytes, headers: dict[str, str], due: float, result) -> float | None:
    """POST ``body``; on a 200 answer add its latency from ``due`` (event-loop time), its stage timings and
    whether it was degraded to ``result`` (a :class:`RunResult` or a burst's result), else count the error.
    Returns the loop time the answer arrived, or None when the request failed."""
    import aiohttp

    try:
        async with session.post(url, data=body, headers=headers) as response:
            payload = await response.read()
            done = asyncio.get_running_loop().time()
            if response.status != 200:
                count_error(result.errors, str(response.status))
                return None
            result.ok += 1
            result.latency_ms.append((done - due) * 1000)
            if record_answer(payload, result.stages_ms):
                result.degraded += 1
            return done
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        count_error(result.errors, type(exc).__name__)
        return None


def _histogram(samples_ms: list[float]) -> dict:
    """Counts on log-spaced bins from 0.5 ms to 10 s (for the latency histogram plot)."""
    edges = np.geomspace(0.5, 10_000, 41)
    counts, _ = np.histogram(np.clip(samples_ms, edges[0], edges[-1]), bins=edges)
    return {"edges_ms": [round(float(e), 3) for e in edges], "counts": counts.tolist()}


async def run_open_loop(
    url: str,
    make_body: Callable[[int], dict],
    *,
    rate: float,
    duration_s: float,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
    budget_ms: float | None = None,
    arrivals: str = "uniform",
    seed: int = 0,
) -> RunResult:
    """Send ``rate × duration_s`` POSTs to ``url`` on the ``arrivals`` schedule (see
    :func:`arrival_offsets`, ``seed`` for Poisson gaps); collect what came back."""
    import aiohttp

    result = RunResult(rate=rate, duration_s=duration_s, budget_ms=budget_ms, arrivals=arrivals)
    total = int(rate * duration_s)
    bodies = [json.dumps(make_body(n)).encode() for n in range(total)]  # serialize before the clock starts
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    hdrs = {"content-type": "application/json", **(headers or {})}
    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        warm = max(1, min(total, int(rate // 20)))  # ~the connections in flight at this rate
        await warm_up(session, url, [bodies[n % total] for n in range(warm)], hdrs, result.errors)
        tasks = []
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        start = loop.time() + 0.05
        offsets = arrival_offsets(arrivals, rate, total, seed)
        for n in range(total):
            due = start + float(offsets[n])
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            result.send_lag_ms.append(max(0.0, (loop.time() - due) * 1000))
            tasks.append(asyncio.create_task(measured_post(session, url, bodies[n], hdrs, due, result)))
            result.sent += 1
        send_window = loop.time() - start
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - wall0
        result.generator_cpu = (cpu_seconds() - cpu0) / wall if wall > 0 else 0.0
        result.achieved_rate = result.sent / send_window if send_window > 0 else 0.0
    return result
