"""Catalog embedding throughput (``p13n bench encoder``): MovieLens titles through the consumer's path.

Each variant embeds every title of ``movies.csv`` (as ``p13n import movielens`` writes them, ``"Title
(year) | Genre, Genre"``) through :class:`~stream.catalog.ChunkedEncoder` with the consumer's chunk
time — what ``p13n consume`` does with a catalog backlog. Variants run in alternating rounds in one
process (a shared machine's load moves between runs); each reports items/s of wall time (the median
round and every round), items per CPU-second of this process, and the load average around it.

Target (issue 13): ≥ 1,000 items/s on 2 cores with batch-independent vectors. The first variant, fp32 on
one thread, is what the consumer runs by default; every speed-up (``speedup_vs_default``) is against it.
"""

from __future__ import annotations

import csv
import os
import statistics
import time
from pathlib import Path

from p13n.config import Config

__all__ = ["CATALOG_VARIANTS", "TINY_MOVIELENS", "bench_catalog", "catalog_markdown", "catalog_titles"]

#: (name, model variant, intra-op threads); the first is the baseline of the speed-ups.
CATALOG_VARIANTS = [
    ("fp32, 1 thread (the consumer's default)", "fp32", 1),
    ("fp32, 2 threads", "fp32", 2),
    ("int8 dynamic, 2 threads (batch-dependent: not for catalogs)", "int8", 2),
    ("int8-static, 1 thread", "int8-static", 1),
    ("int8-static, 2 threads", "int8-static", 2),
]
#: The MovieLens sample shipped with the tests, used when no directory is given.
TINY_MOVIELENS = Path(__file__).resolve().parents[1] / "tests" / "data" / "movielens-tiny"


def catalog_titles(directory: Path) -> list[str]:
    """Item texts of ``directory/movies.csv`` as ``p13n import movielens`` writes them."""
    from p13n.importers import movie_text

    with (directory / "movies.csv").open(newline="", encoding="utf-8") as fh:
        return [movie_text(row["title"], row["genres"])[0] for row in csv.DictReader(fh)]


def bench_catalog(config: Config, movielens: Path | None = None, *, rounds: int = 2, limit: int | None = None,
                  variants: list[tuple[str, str, int]] = CATALOG_VARIANTS) -> dict:  # fmt: skip
    """items/s of each variant on every title of ``movielens`` (default: the shipped tiny sample), or on
    its first ``limit`` titles."""
    from features.encoder.runtime import Encoder
    from stream.catalog import ChunkedEncoder

    directory = movielens or TINY_MOVIELENS
    titles = catalog_titles(directory)[:limit]
    chunk_s = config.kafka.max_poll_interval_ms / 1000 / 5  # as stream.processing.BatchProcessor
    encoders = {name: Encoder(config.encoder.directory, variant=variant, threads=threads,
                              max_length=config.encoder.max_length)
                for name, variant, threads in variants}  # fmt: skip
    for encoder in encoders.values():
        encoder.encode(titles[:64])  # warm-up: first-run allocations
    walls: dict[str, list[float]] = {name: [] for name in encoders}
    cpus: dict[str, list[float]] = {name: [] for name in encoders}
    load_before = [round(x, 2) for x in os.getloadavg()]
    for _ in range(rounds):
        for name, encoder in encoders.items():
            chunked = ChunkedEncoder(encoder.encode, chunk_s=chunk_s)
            wall, cpu = time.perf_counter(), time.process_time()
            chunked(titles)
            walls[name].append(len(titles) / (time.perf_counter() - wall))
            cpus[name].append(len(titles) / (time.process_time() - cpu))
    baseline = statistics.median(walls[variants[0][0]])
    rows = {}
    for name, variant, threads in variants:
        median = statistics.median(walls[name])
        rows[name] = {"variant": variant, "threads": threads, "items_per_s": round(median, 1),
                      "items_per_s_rounds": [round(x, 1) for x in walls[name]],
                      "items_per_cpu_s": round(statistics.median(cpus[name]), 1),
                      "speedup_vs_default": round(median / baseline, 2),
                      "batch_independent": encoders[name].batch_independent}  # fmt: skip
    return {"dataset": str(directory), "items": len(titles), "rounds": rounds, "chunk_s": chunk_s,
            "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
            "variants": rows}  # fmt: skip


def catalog_markdown(result: dict) -> str:
    """The catalog section of the encoder benchmark's RESULTS.md text."""
    from benchmarks.report import markdown_table

    rows = [[name, r["items_per_s"], ", ".join(map(str, r["items_per_s_rounds"])), r["items_per_cpu_s"],
             r["speedup_vs_default"], "yes" if r["batch_independent"] else "no"]
            for name, r in result["variants"].items()]  # fmt: skip
    load = result["load_average"]
    return "\n".join([
        f"Catalog embedding: {result['items']} MovieLens titles ({result['dataset']}) through the consumer's "
        f"chunked path, {result['rounds']} alternating rounds; load average (1/5/15 min) {load['before']} before, "
        f"{load['after']} after.",
        "",
        markdown_table(["variant", "items/s (median)", "rounds", "items per CPU-s", "× fp32, 1 thread",
                        "batch-independent"], rows),  # fmt: skip
    ])  # fmt: skip
