"""``p13n demo``: the embedded stack end to end.

Start Redis-compatible server + Kafka-compatible broker + consumer, publish a synthetic catalog and
event stream, wait for the consumer to fold it, then show two contrasting users: their profile,
their top-scored items and a prompt rewritten for them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from p13n.config import Config
from p13n.devstack import DevStack, wait_until

__all__ = ["run_demo"]

QUESTION = "Can you suggest a gift I would enjoy this weekend?"


def run_demo(cfg: Config, *, stack: DevStack, topics: dict[str, int], users: int, console, services) -> int:
    from features.encoder import Encoder
    from features.store import RedisStore
    from features.synthetic import SyntheticSpec, generate
    from p13n.connections import redis_client
    from stream.producer import make_producer, produce_lines

    with console.status("starting the embedded stack (Redis-compatible server, Kafka-compatible broker, consumer)…"):
        running, started = stack.up(topics=topics, services=services)
    for name, rec in running.items():
        console.print(f"  {name:<8} {rec.url:<36} {'started' if name in started else 'already running'}")
    cfg = Config.from_sources(overrides={"redis": {"url": running["redis"].url},
                                         "kafka": {"bootstrap": running["kafka"].url}})  # fmt: skip

    run = int(time.time()) % 100_000
    tenant = f"demo{run}"  # a fresh tenant per run: runs on a long-lived stack do not mix
    data = generate(SyntheticSpec(users=users, events_per_user=40, seed=run % 1000, tenant=tenant))
    demo_dir = stack.state_dir / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(demo_dir / "events.jsonl", data.events)
    _write_jsonl(demo_dir / "items.jsonl", data.items)
    console.print(f"generated {len(data.events):,} events of {users} users with drifting interests "
                  f"and {len(data.items)} items -> {demo_dir}")  # fmt: skip

    producer = make_producer(cfg.kafka)
    try:
        with console.status("publishing the catalog and the events…"):
            items = [(n, json.dumps(item).encode()) for n, item in enumerate(data.items, 1)]
            produce_lines(producer, cfg.kafka.items_topic, items, validate=False)
            lines = [(n, json.dumps(ev).encode()) for n, ev in enumerate(data.events, 1)]
            report = produce_lines(producer, cfg.kafka.events_topic, lines)
    finally:
        producer.close()
    console.print(f"published {len(items)} items and {report.sent:,} events ({report.rate:,.0f} events/s)")

    encoder = Encoder.from_config(cfg.encoder)
    store = RedisStore(redis_client(cfg.redis), cfg, dim=encoder.dimension)
    users_in_demo = sorted({(tenant, e["user_id"]) for e in data.events})
    expected = len({e["event_id"] for e in data.events})
    started_at = time.monotonic()
    with console.status("the consumer is folding the events into Redis…") as status:

        def folded() -> bool:
            n = sum(s.events_applied for _, s in store.read_users(users_in_demo) if s is not None)
            status.update(f"the consumer is folding the events into Redis… {n:,} / {expected:,}")
            return n >= expected

        wait_until(folded, timeout=180, what="the consumer to fold the demo events", interval=0.25)
    console.print(f"the consumer folded {expected:,} events in {time.monotonic() - started_at:.1f}s "
                  f"(log: {running['consumer'].log})")  # fmt: skip

    now_ms = max(e["timestamp"] for e in data.events)
    for user_id in _contrasting_users(data):
        _show_user(console, store, encoder, cfg, data, tenant, user_id, now_ms)
    console.print(f"\nevery user's profile: [bold]redis-cli -u {running['redis'].url} --no-raw hgetall "
                  f"'{cfg.redis.prefix}:{{{tenant}/<user_id>}}'[/bold]  (binary state; the HTTP API shows it as JSON)")  # fmt: skip
    console.print("the embedded stack is still running; stop it with: [bold]p13n dev down[/bold]  (or: make down)")
    return 0


def _contrasting_users(data) -> list[str]:
    """Two users whose current interests differ, preferring users who stated a preference."""
    stated = {e["user_id"] for e in data.events if e["type"] == "preference"}
    ordered = sorted(data.interests, key=lambda u: (u not in stated, u))
    first = ordered[0]
    second = next(u for u in ordered[1:] if data.interests[u][1] != data.interests[first][1]
                  and data.interests[u][0] != data.interests[first][1])  # fmt: skip
    return [first, second]


def _show_user(console, store, encoder, cfg: Config, data, tenant: str, user_id: str, now_ms: int) -> None:
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    from features.personalize import CandidateIn, context_for, score_candidates
    from features.prompt import rewrite_messages

    before, after = data.interests[user_id]
    console.rule(f"[bold]{tenant}/{user_id}[/bold] — interest drifted from {before} to {after}")
    candidates = [CandidateIn(item["item_id"]) for item in data.items]
    result = score_candidates(store, tenant, user_id, candidates, now_ms=now_ms, weights=cfg.scoring.weights,
                              k=5, explain=True, anchors=cfg.scoring.covisit_anchors)  # fmt: skip
    text = {i["item_id"]: i["text"] for i in data.items}
    table = Table(title=f"top 5 of {len(candidates)} catalog items")
    for column in ("item", "text", "score", "why (largest features)"):
        table.add_column(column)
    for scored in result.items:
        top = sorted((scored.features or {}).items(), key=lambda kv: -abs(kv[1] * cfg.scoring.weights.get(kv[0], 0)))[:3]
        table.add_row(scored.item_id, text.get(scored.item_id, ""), f"{scored.score:.3f}",
                      ", ".join(f"{k}={v:.2f}" for k, v in top))  # fmt: skip
    console.print(table, soft_wrap=False)
    query = encoder.encode([QUESTION])[0]
    context, _ = context_for(store, tenant, user_id, now_ms=now_ms, max_tokens=cfg.serving.max_context_tokens,
                             count_tokens=encoder.count_tokens, query_vector=query)  # fmt: skip
    messages = [{"role": "system", "content": "You are a helpful shopping assistant."}, {"role": "user", "content": QUESTION}]
    rewritten = rewrite_messages(messages, context)
    console.print(Panel(Text(json.dumps(messages, indent=1)), title="prompt before"), soft_wrap=False)
    console.print(Panel(Text("\n\n".join(f"({m['role']})\n{m['content']}" for m in rewritten)),
                        title=f"prompt after ({context.tokens} context tokens)"), soft_wrap=False)  # fmt: skip


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
