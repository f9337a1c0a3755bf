"""Issue 13's figure through the real path: MovieLens through Kafka, folded by ``p13n consume``,
ranked by ``/v1/score`` after the whole replay — beside ``p13n eval --at-end`` on the same data.

The requests are :func:`benchmarks.shapes.movielens_shapes`' (the catalog and every rating except the
held-out ones published to Kafka and folded by the running consumer; per evaluated user, the
held-out item + the protocol's 100 never-rated negatives, drawn by the same sampler and seed as
``p13n eval``). Each request asks for every candidate's score (``k`` = all of them), and the truth's
HR@10 / NDCG@10 are taken from those scores the way the offline replay takes them
(:func:`features.evaluation.metrics.expected_hit_ndcg`: ties broken at random, in expectation), so the two
figures differ only by what the two paths compute, not by how they are counted.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from benchmarks.shapes import Shapes, movielens_shapes

__all__ = ["score_shapes", "run_real_path"]


def score_shapes(shapes: Shapes, url: str, key: str, *, concurrency: int = 4, timeout_s: float = 30.0) -> dict:
    """Send every request of ``shapes`` to ``/v1/score`` (through :class:`p13n.client.AsyncP13nClient`) and
    summarise the held-out items' HR@10 and NDCG@10.

    Returns ``{"hr@10", "ndcg@10", "users", "degraded": {reason: count}, "failed", "errors": [first five],
    "per_user": {user: (HR@10, NDCG@10)}, "seconds"}``; a request that fails counts as an error, not as a miss.
    """
    from features.evaluation.metrics import VariantStats, expected_hit_ndcg
    from p13n.client import AsyncP13nClient, P13nClientError

    degraded: dict[str, int] = {}
    errors: list[str] = []
    per_user: dict[str, tuple[float, float]] = {}

    async def one(client: AsyncP13nClient, n: int, gate: asyncio.Semaphore) -> None:
        candidates = [c["item_id"] for c in shapes.score_body(n)["candidates"]]
        try:
            async with gate:
                answer = await client.score(shapes.users[n], candidates, budget_ms=timeout_s * 1000)
        except P13nClientError as exc:
            errors.append(f"{shapes.users[n]}: {exc}")
            return
        by_id = {row.item_id: row.score for row in answer.items}
        scores = np.array([by_id.get(c, -np.inf) for c in candidates], dtype=np.float64)
        per_user[shapes.users[n]] = expected_hit_ndcg(scores)
        for reason in answer.degraded:
            degraded[reason] = degraded.get(reason, 0) + 1

    async def main() -> None:
        gate = asyncio.Semaphore(concurrency)
        async with AsyncP13nClient(url, key, timeout=timeout_s) as client:
            await asyncio.gather(*(one(client, n, gate) for n in range(len(shapes.users))))

    started = time.perf_counter()
    asyncio.run(main())
    stats = VariantStats()
    for user in sorted(per_user):
        stats.add(*per_user[user])
    return {**stats.summary(), "degraded": degraded, "failed": len(errors), "errors": errors[:5],
            "per_user": per_user, "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


def run_real_path(config, directory: Path, *, url: str, key: str, tenant: str = "demo",
                  progress=lambda text: None) -> dict:  # fmt: skip
    """Publish MovieLens ``directory`` to the running stack, wait for the fold, score every evaluated user."""
    shapes = movielens_shapes(config, directory, tenant=tenant, progress=progress)
    progress(f"scoring {len(shapes.users)} users through /v1/score")
    return {"events": shapes.events, "catalog_items": shapes.catalog_items, **score_shapes(shapes, url, key)}


#: The offline row the real path must match: the blend, scored after the whole replay.
OFFLINE = "MovieLens (at-end)"
REAL = "MovieLens (real path: Kafka → p13n consume → /v1/score)"


def add_real_path(result: dict, real: dict, tolerance: float = 0.01) -> dict:
    """Put the real path's blend beside ``p13n eval --at-end``'s in a ``run_quality`` result (in place):
    a dataset row of its own and the issue's target, ``|HR@10 real − HR@10 offline| ≤ tolerance`` (and NDCG@10)."""
    offline = result["datasets"][OFFLINE]["variants"]["blend"]
    row = {"hr@10": real["hr@10"], "ndcg@10": real["ndcg@10"], "users": real["users"]}
    result["datasets"][REAL] = {"events": real["events"], "variants": {"blend": row}}
    result["real_path"] = {k: v for k, v in real.items() if k != "per_user"}
    for metric in ("hr@10", "ndcg@10"):
        gap = abs(real[metric] - offline[metric])
        result["targets"][f"real path blend {metric.upper()} within ±{tolerance} of eval --at-end"] = {
            "measured": round(gap, 4), "met": gap <= tolerance and real["failed"] == 0 and real["users"] == offline["users"]}
    return result
