"""``p13n demo``: start the embedded stack, publish a synthetic stream and show it arriving."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from p13n.config import Config
from p13n.devstack import DevStack

__all__ = ["run_demo"]


def run_demo(cfg: Config, *, stack: DevStack, topics: dict[str, int], users: int, console) -> int:
    from rich.table import Table

    from features.synthetic import SyntheticSpec, generate
    from stream.producer import make_producer, produce_lines

    with console.status("starting the embedded stack (Redis-compatible server + Kafka-compatible broker)…"):
        running, started = stack.up(topics=topics)
    for name, rec in running.items():
        console.print(f"  {name:<6} {rec.url:<28} {'started' if name in started else 'already running'}")
    cfg = Config.from_sources(overrides={"redis": {"url": running["redis"].url},
                                         "kafka": {"bootstrap": running["kafka"].url}})  # fmt: skip

    data = generate(SyntheticSpec(users=users, events_per_user=30, seed=int(time.time()) % 1000))
    demo_dir = stack.state_dir / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    events_file, items_file = demo_dir / "events.jsonl", demo_dir / "items.jsonl"
    _write_jsonl(events_file, data.events)
    _write_jsonl(items_file, data.items)
    console.print(f"generated {len(data.events)} events of {users} users with drifting interests -> {events_file}")

    producer = make_producer(cfg.kafka)
    try:
        with console.status("publishing items and events…"):
            lines = [(n, json.dumps(item).encode()) for n, item in enumerate(data.items, 1)]
            item_report = produce_lines(producer, cfg.kafka.items_topic, lines, validate=False)
            lines = [(n, json.dumps(ev).encode()) for n, ev in enumerate(data.events, 1)]
            report = produce_lines(producer, cfg.kafka.events_topic, lines)
    finally:
        producer.close()
    console.print(f"published {item_report.sent} items and {report.sent} events ({report.rate:,.0f} events/s)")

    with console.status("reading the events back from Kafka…"):
        arrived = _read_back(cfg, expected=report.sent)
    table = Table(title=f"events arrived on {cfg.kafka.events_topic}")
    table.add_column("type")
    table.add_column("count", justify="right")
    for etype, count in sorted(Counter(e["type"] for e in arrived).items(), key=lambda kv: -kv[1]):
        table.add_row(etype, str(count))
    console.print(table)
    console.print(f"{len(arrived)} of {report.sent} events arrived; "
                  f"{len({e['user_id'] for e in arrived})} users, partitions keyed by tenant/user_id")  # fmt: skip
    console.print("the embedded stack is still running; stop it with: [bold]p13n dev down[/bold]  (or make down)")
    return 0 if len(arrived) == report.sent else 1


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def _read_back(cfg: Config, *, expected: int, timeout_s: float = 60.0) -> list[dict]:
    """Read the events topic from the beginning with a throw-away group until ``expected`` arrived."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        cfg.kafka.events_topic,
        bootstrap_servers=cfg.kafka.bootstrap.split(","),
        group_id=f"p13n-demo-{time.time_ns()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_interval_ms=5000,
    )
    arrived: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(arrived) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                arrived.extend(json.loads(r.value) for r in records)
    finally:
        consumer.close()
    return arrived
