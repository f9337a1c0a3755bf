"""Ingestion benchmarks (``p13n bench ingest``).

* **processing stage** — records already fetched → Redis acknowledged, one process, items already
  embedded: what one consumer process can fold, without the broker in the way;
* **broker ceiling** — how fast the broker alone delivers records to one plain consumer;
* **end to end** — events produced at a fixed rate with ``timestamp = now`` through the broker and
  a consumer loop; freshness = apply time − event time.

Target (stream issue): processing stage ≥ 20,000 events/s per consumer process.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict

import numpy as np
import redis

from benchmarks.common import percentiles
from features.core.state import ItemInfo
from features.redis.store import RedisStore
from features.datasets.synthetic import SyntheticSpec, generate
from p13n.clock import now_ms
from p13n.config import Config
from p13n.vocabulary import user_key
from stream.processing import BatchProcessor, records_from_lines

__all__ = ["bench_processing", "bench_broker_ceiling", "bench_end_to_end", "run_ingest", "ingest_markdown"]

DIM = 384


def _random_encoder(seed: int = 0):
    rng = np.random.default_rng(seed)

    def encode(texts: list[str]) -> np.ndarray:
        vectors = rng.standard_normal((len(texts), DIM)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    return encode


def _isolated(config: Config, name: str) -> Config:
    return Config.from_sources(env={}, overrides={
        **{k: v for k, v in config.to_dict().items() if k in ("state", "consumer", "scoring", "encoder")},
        "redis": {**config.to_dict()["redis"], "prefix": f"bench-{name}-{uuid.uuid4().hex[:6]}"},
        "kafka": {**config.to_dict()["kafka"], "events_topic": f"bench-{name}-{uuid.uuid4().hex[:6]}",
                  "group_id": f"bench-{uuid.uuid4().hex[:6]}", "session_timeout_ms": 6000,
                  "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 10000},
    })  # fmt: skip


def _cleanup(client, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


def _preload_items(store: RedisStore, items: list[dict], encode) -> None:
    vectors = encode([i["text"] for i in items])
    store.put_items("default", {i["item_id"]: ItemInfo(vector=v, attributes=i["attributes"], text=i["text"])
                                for i, v in zip(items, vectors)})  # fmt: skip


def _server_cpu_s(client) -> float | None:
    """CPU seconds the Redis server has used (``INFO cpu``: user + system); None where the server does not say."""
    try:
        info = client.info("cpu")
    except redis.ResponseError:  # a server or proxy that refuses INFO
        return None
    if "used_cpu_user" not in info:
        return None
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def bench_processing(config: Config, client, *, users: int = 2000, events_per_user: int = 30, batch: int = 1000) -> dict:
    """Events/s of BatchProcessor over pre-fetched records, each batch submitted before the previous one is
    settled as in the consumer loop (wall clock, Redis included).

    Also the CPU the Redis server spent meanwhile (whoever else used it, too): Redis runs commands
    on one thread, so ``events_per_redis_cpu_s`` is the most one Redis core can take of this stream,
    whatever the consumers do."""
    cfg = _isolated(config, "proc")
    data = generate(SyntheticSpec(users=users, events_per_user=events_per_user, seed=3))
    encode = _random_encoder()
    store = RedisStore(client, cfg, dim=DIM)
    try:
        _preload_items(store, data.items, encode)
        processor = BatchProcessor(store, cfg, encode)
        records = records_from_lines([json.dumps(e).encode() for e in data.events], cfg.kafka.events_topic)
        records.sort(key=lambda r: (r.offset, r.partition))  # interleave partitions as a fetch would
        writes = sum(len({(r.key, r.partition) for r in records[i : i + batch]}) for i in range(0, len(records), batch))
        stages: dict[str, float] = defaultdict(float)
        applied = 0
        server_start = _server_cpu_s(client)
        start, cpu_start = time.perf_counter(), time.process_time()
        waiting = None  # as `p13n consume` does: the next batch is submitted before the previous one settles
        for i in [*range(0, len(records), batch), None]:
            submitted = processor.submit(records[i : i + batch]) if i is not None else None
            if waiting is not None:
                outcome = processor.settle(waiting)
                applied += outcome.applied
                for stage, seconds in outcome.stage_s.items():
                    stages[stage] += seconds
            waiting = submitted
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        server_end = _server_cpu_s(client)
    finally:
        _cleanup(client, cfg.redis.prefix)
    return {"records": len(records), "applied": applied, "users": users, "batch": batch,
            "events_per_user_write": round(len(records) / writes, 2),
            "seconds": round(elapsed, 3), "events_per_s": round(len(records) / elapsed),
            "cpu_seconds": round(cpu, 3), "events_per_cpu_s": round(len(records) / cpu),
            **_server_cpu(len(records), server_start, server_end),
            "stage_seconds": {k: round(v, 3) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])}}  # fmt: skip


def _server_cpu(records: int, start: float | None, end: float | None) -> dict:
    if start is None or end is None or end <= start:
        return {}
    return {"redis_cpu_seconds": round(end - start, 3), "events_per_redis_cpu_s": round(records / (end - start))}


def bench_broker_ceiling(config: Config, *, records: int = 20000) -> dict:
    """Produce ``records`` small JSON records, then read them back with one plain consumer."""
    from kafka import KafkaConsumer

    from p13n.kafka_client import ensure_topics
    from stream.producer import make_producer

    cfg = _isolated(config, "broker")
    topic = cfg.kafka.events_topic
    ensure_topics(cfg.kafka.bootstrap, {topic: cfg.kafka.partitions})
    value = json.dumps({"event_id": "x" * 12, "user_id": "user-00001", "type": "view", "item_id": "running-001",
                        "timestamp": 1_767_225_600_000}).encode()  # fmt: skip
    producer = make_producer(cfg.kafka)
    start = time.perf_counter()
    for n in range(records):
        producer.send(topic, key=user_key("default", f"u{n % 997}").encode(), value=value)
    producer.flush()
    produce_s = time.perf_counter() - start
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=cfg.kafka.bootstrap.split(","), group_id=cfg.kafka.group_id,
                             auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=5000,
                             session_timeout_ms=6000, heartbeat_interval_ms=1000, max_poll_interval_ms=10000)  # fmt: skip
    got, first = 0, None
    deadline = time.monotonic() + 120
    try:
        while got < records and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                if first is None:
                    first = time.perf_counter()
                got += len(batch)
    finally:
        consumer.close()
    consume_s = time.perf_counter() - (first or time.perf_counter())
    return {"records": records, "received": got, "produce_per_s": round(records / produce_s),
            "consume_per_s": round(got / consume_s) if consume_s > 0 else None}  # fmt: skip


def bench_end_to_end(config: Config, client, *, rate: float = 1000.0, seconds: float = 10.0) -> dict:
    """Produce at ``rate`` events/s with timestamp = now; a consumer loop folds them; report freshness."""
    from p13n.kafka_client import ensure_topics
    from stream.consumer import ConsumerLoop
    from stream.producer import make_producer

    cfg = _isolated(config, "e2e")
    data = generate(SyntheticSpec(users=500, events_per_user=10, seed=4))
    encode = _random_encoder(1)
    store = RedisStore(client, cfg, dim=DIM)
    _preload_items(store, data.items, encode)
    ensure_topics(cfg.kafka.bootstrap, {cfg.kafka.events_topic: cfg.kafka.partitions, cfg.kafka.items_topic: 1,
                                        cfg.kafka.dlq_topic: 1})  # fmt: skip
    freshness: list[float] = []

    class Recording(BatchProcessor):
        def settle(self, submitted):
            outcome = super().settle(submitted)
            freshness.extend(outcome.freshness_s)
            return outcome

    stop = threading.Event()
    loop = ConsumerLoop(cfg, Recording(store, cfg, encode), stop=stop)
    thread = threading.Thread(target=loop.run, name="bench-consumer", daemon=True)
    thread.start()
    producer = make_producer(cfg.kafka)
    template = [e for e in data.events if e["type"] != "preference"]
    sent = 0
    lag_ms: list[float] = []
    try:
        # wait for the group join so the measured window is steady state
        warm = dict(template[0], event_id="warmup", timestamp=now_ms())
        producer.send(cfg.kafka.events_topic, key=user_key(warm["tenant"], warm["user_id"]).encode(), value=json.dumps(warm).encode())
        producer.flush()
        deadline = time.monotonic() + 60
        while not freshness and time.monotonic() < deadline:
            stop.wait(0.05)
        freshness.clear()
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            due = sent / rate
            if due > elapsed:
                stop.wait(due - elapsed)
            lag_ms.append(max(0.0, (time.perf_counter() - start - due) * 1000))
            event = dict(template[sent % len(template)], event_id=f"e2e-{sent}", timestamp=now_ms())
            producer.send(cfg.kafka.events_topic, key=user_key(event["tenant"], event["user_id"]).encode(), value=json.dumps(event).encode())
            sent += 1
        producer.flush()
        deadline = time.monotonic() + 60
        while len(freshness) < sent and time.monotonic() < deadline:
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
        producer.close()
        _cleanup(client, cfg.redis.prefix)
    ms = [f * 1000 for f in freshness]
    return {"rate": rate, "seconds": seconds, "sent": sent, "applied": len(freshness),
            "freshness_ms": percentiles(ms, (50, 90, 99)) if ms else {},
            "producer_send_lag_ms": percentiles(lag_ms, (50, 99)) if lag_ms else {}}  # fmt: skip


def run_ingest(config: Config, client, *, quick: bool = False) -> dict:
    from benchmarks.ingest_messages import bench_messages
    from stream.runtime import folding_process

    with folding_process():  # as `p13n consume` runs
        # Shared machines are noisy: the headline is the median of five runs, all five are reported.
        batch = config.consumer.max_batch  # what `p13n consume` polls
        runs = sorted((bench_processing(config, client, users=300 if quick else 2000, events_per_user=10 if quick else 30,
                                        batch=batch) for _ in range(1 if quick else 5)), key=lambda r: r["events_per_s"])  # fmt: skip
        processing = {**runs[len(runs) // 2], "runs_events_per_s": [r["events_per_s"] for r in runs]}
        # How throughput depends on how many of a batch's events share a user (one state write each):
        # many users with few events each (~1 event per write), and smaller polls of the same stream.
        sweep = [processing] + ([] if quick else [
            bench_processing(config, client, users=20_000, events_per_user=3, batch=batch),
            bench_processing(config, client, users=2000, events_per_user=30, batch=1000),
        ])
    messages = bench_messages(config, client, users=2 if quick else 20, messages_per_user=20 if quick else 100)
    broker = bench_broker_ceiling(config, records=2000 if quick else 20000)
    e2e = bench_end_to_end(config, client, rate=200 if quick else 1000, seconds=2 if quick else 10)
    target = processing["events_per_s"] >= 20_000
    return {"quick": quick, "processing": processing, "processing_sweep": sweep, "messages": messages, "broker": broker,
            "end_to_end": e2e,
            "targets": {"processing_events_per_s >= 20000": {"measured": processing["events_per_s"], "met": target}}}  # fmt: skip


def ingest_markdown(result: dict) -> str:
    from benchmarks.report import machine_line, markdown_table

    p, b, e = result["processing"], result["broker"], result["end_to_end"]
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in p["stage_seconds"].items())
    return "\n".join([
        "## Ingestion (`p13n bench ingest`)",
        "",
        machine_line(result),
        "",
        markdown_table(["stage", "throughput", "notes"], [
            ["processing stage (fetched → Redis acknowledged)", f"**{p['events_per_s']:,} events/s**",
             f"median of runs at {', '.join(f'{r:,}' for r in p.get('runs_events_per_s', [p['events_per_s']]))} events/s; "
             f"{p.get('events_per_cpu_s', 0):,} events per CPU-second of the consumer process; "
             + (f"Redis server busy {p['redis_cpu_seconds']:.2f} CPU-s meanwhile; " if "redis_cpu_seconds" in p else "")
             + f"{p['records']:,} records, {p['users']:,} users, batches of {p['batch']}; time in: {stages}"],
            ["Redis ceiling (one core)", f"{p['events_per_redis_cpu_s']:,} events/s" if "events_per_redis_cpu_s" in p else "n/a",
             "events per CPU-second of the Redis server in the processing runs: Redis runs commands on one "
             "thread, so this is the most one Redis instance (not a cluster) takes of this stream, however many consumers feed it"],
            *([["processing stage, message events", f"{m['events_per_s']:,} events/s",
                f"{m['records']:,} distinct conversation turns of {m['users']} users, batches of {m['batch']}: each is "
                f"embedded ({m['encoder_variant']} encoder) and folded into the text embedding and memories; time in: "
                + ", ".join(f"{k} {v:.2f}s" for k, v in m["stage_seconds"].items())]] if (m := result.get("messages")) else []),
            ["broker ceiling: produce", f"{b['produce_per_s']:,} records/s", "kafka-python producer, acks=all"],
            ["broker ceiling: consume", f"{b['consume_per_s']:,} records/s" if b["consume_per_s"] else "n/a",
             f"one plain consumer, {b['received']:,} records, no processing"],
            ["end to end", f"{e['applied']:,} of {e['sent']:,} applied at {e['rate']:g}/s offered",
             f"freshness p50 {e['freshness_ms'].get('p50')} ms, p90 {e['freshness_ms'].get('p90')} ms, "
             f"p99 {e['freshness_ms'].get('p99')} ms; producer send lag p99 {e['producer_send_lag_ms'].get('p99')} ms"],
        ]),
        "",
        "Processing stage by batch shape (each user in a batch is one atomic state write):",
        "",
        markdown_table(["users", "events", "batch", "events per user write", "events/s"],
                       [[f"{r['users']:,}", f"{r['records']:,}", r["batch"], r["events_per_user_write"],
                         f"{r['events_per_s']:,}"] for r in result.get("processing_sweep", [p])]),  # fmt: skip
        "",
        markdown_table(["target", "measured", "status"],
                       [[k, v["measured"], "met" if v["met"] else "NOT met"] for k, v in result["targets"].items()]),
    ])  # fmt: skip
