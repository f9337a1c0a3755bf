"""``p13n demo``: the embedded stack end to end.

Start Redis-compatible server + Kafka-compatible broker + consumer + Serve app, publish a synthetic
catalog and event stream, wait for the consumer to fold it, then show — through the HTTP API — two
contrasting users' top-scored items and a prompt rewritten for them, one user's question answered from
what they said weeks before (a conversation sent as ``message`` events, recalled as memories), and a
latency table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote

from p13n.config import Config
from p13n.devstack import DevStack

__all__ = ["run_demo"]

QUESTION = "Can you suggest a gift I would enjoy this weekend?"
DEMO_TENANT = "demo"
DEMO_KEY = "p13n-demo-key"  # bound to tenant "demo" in the dev stack (p13n.devstack.DEV_API_KEYS)
DEMO_BUDGET_MS = 2000.0  # per request: the demo shows the full path, not the latency ladder (that is `p13n bench load`)


def run_demo(cfg: Config, *, stack: DevStack, topics: dict[str, int], users: int, console, services) -> int:
    from p13n.seeding import publish, recent_synthetic, run_id, wait_folded

    with console.status("starting the embedded stack (Redis-compatible server, Kafka-compatible broker, consumer)…"):
        running, started = stack.up(topics=topics, services=services)
    for name, rec in running.items():
        console.print(f"  {name:<8} {rec.url:<36} {'started' if name in started else 'already running'}")
    cfg = Config.from_sources(overrides={"redis": {"url": running["redis"].url},
                                         "kafka": {"bootstrap": running["kafka"].url}})  # fmt: skip

    run = run_id()
    # users are named per run, so runs on a long-lived stack do not mix
    data = recent_synthetic(users=users, tenant=DEMO_TENANT, user_prefix=f"r{run}-user-", seed=run % 1000)
    talker, conversation = f"r{run}-talker", _conversation(run)
    data.events.extend(_conversation_events(conversation, talker))
    demo_dir = stack.state_dir / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(demo_dir / "events.jsonl", data.events)
    _write_jsonl(demo_dir / "items.jsonl", data.items)
    console.print(f"generated {len(data.events):,} events of {users} users with drifting interests "
                  f"and {len(data.items)} items -> {demo_dir}")  # fmt: skip

    with console.status("publishing the catalog and the events…"):
        report = publish(cfg, data)
    console.print(f"published {len(data.items)} items and {report.sent:,} events ({report.rate:,.0f} events/s)")

    started_at = time.monotonic()
    with console.status("the consumer is folding the events into Redis…") as status:
        wait_folded(cfg, data, on_progress=lambda done, total: status.update(
            f"the consumer is folding the events into Redis… {done:,} / {total:,}"))  # fmt: skip
    console.print(f"the consumer folded {len({e['event_id'] for e in data.events}):,} events in "
                  f"{time.monotonic() - started_at:.1f}s (log: {running['consumer'].log})")  # fmt: skip

    api = Client(running["serve"].url, DEMO_KEY)
    shown = _contrasting_users(data)
    for user_id in shown:
        _show_user(console, api, cfg, data, user_id)
    _show_memory(console, api, talker, conversation)
    _latency_table(console, api, data, shown)
    console.print(f"\nany user's profile as JSON: [bold]curl -H 'Authorization: Bearer {DEMO_KEY}' "
                  f"{running['serve'].url}/v1/users/{shown[0]}[/bold]")  # fmt: skip
    inspector = running["serve"].url + "/ui/users/"
    console.print(f"what p13n believes about a user, in a browser: [bold]{inspector}{quote(shown[0], safe='')}[/bold] "
                  f"(and {inspector}{quote(talker, safe='')}, who talked); enter the API key {DEMO_KEY} once",
                  soft_wrap=True)  # fmt: skip
    console.print("the embedded stack is still running; stop it with: [bold]p13n dev down[/bold]  (or: make down)")
    return 0


def _conversation(run: int) -> dict:
    """A generated two-person conversation of five sessions ending about now."""
    from datetime import datetime, timedelta, timezone

    from features.datasets.conversations import generate_conversation

    start = datetime.now(timezone.utc) - timedelta(days=80)
    return generate_conversation(seed=run % 1000, sessions=5, turns_per_session=12, start=start)


def _conversation_events(conversation: dict, user_id: str) -> list[dict]:
    """The conversation's turns as ``message`` events of ``user_id`` (tenant ``demo``), as the eval builds them."""
    from features.evaluation.memory_recall import conversation_events

    return [{"event_id": f"{user_id}-{e.event_id}", "user_id": user_id, "tenant": DEMO_TENANT, "type": "message",
             "timestamp": e.ts_ms, "text": e.text, "session_id": e.session_id}
            for e in conversation_events(conversation, user_id)]  # fmt: skip


def _show_memory(console, api: Client, user_id: str, conversation: dict) -> None:
    from rich.panel import Panel
    from rich.text import Text

    qa = next(q for q in conversation["qa"] if q["category"] == 2)  # a "when" question
    turns = sum(len(v) for k, v in conversation.items() if k.startswith("session_") and isinstance(v, list))
    console.rule(f"[bold]{user_id}[/bold] — {turns} turns of conversation sent as message events; a question about one")
    rewritten = api.post("/v1/rewrite", {"user_id": user_id, "messages": [{"role": "user", "content": qa["question"]}],
                                         "budget_ms": DEMO_BUDGET_MS})
    recalled = [m for m in rewritten["context"]["memories"]
                if any(i.endswith(f"-{e}") for i in m["event_ids"] for e in qa["evidence"])]  # fmt: skip
    console.print(f"question: {qa['question']}")
    title = f"POST /v1/rewrite: prompt after ({rewritten['timings_ms']['total']:.1f} ms)"
    prompt = "\n\n".join(f"({m['role']})\n{m['content']}" for m in rewritten["messages"])
    console.print(Panel(Text(prompt), title=title), soft_wrap=False)
    found = "recalled" if recalled else "NOT recalled"
    console.print(f"the turn that answers it ({', '.join(qa['evidence'])}) was {found}; the answer: {qa['answer']}")


def _contrasting_users(data) -> list[str]:
    """Two users whose current interests differ, preferring users who stated a preference."""
    stated = {e["user_id"] for e in data.events if e["type"] == "preference"}
    ordered = sorted(data.interests, key=lambda u: (u not in stated, u))
    first = ordered[0]
    second = next(u for u in ordered[1:] if data.interests[u][1] != data.interests[first][1]
                  and data.interests[u][0] != data.interests[first][1])  # fmt: skip
    return [first, second]


class Client:
    """A tiny JSON client of the p13n API (stdlib only)."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key

    def post(self, path: str, body: dict) -> dict:
        import urllib.error
        import urllib.request

        from p13n.errors import ServiceError

        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"authorization": f"Bearer {self.key}",
                                                  "content-type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ServiceError(f"POST {self.url}{path} answered {exc.code}: {exc.read()[:300].decode(errors='replace')}") from exc
        except OSError as exc:
            raise ServiceError(f"POST {self.url}{path} failed: {exc}") from exc


def _degraded(answer: dict) -> str:
    """``; degraded: reason, …`` for an answer that skipped stages, else nothing (for a title).

    >>> _degraded({"degraded": ["redis_timeout"]}), _degraded({"degraded": []})
    ('; degraded: redis_timeout', '')
    """
    return f"; degraded: {', '.join(answer['degraded'])}" if answer["degraded"] else ""


def _show_user(console, api: Client, cfg: Config, data, user_id: str, budget_ms: float = DEMO_BUDGET_MS) -> None:
    """The user's top 5 of the catalog and a prompt rewritten for them. A degraded answer (from a lower rung:
    the candidates in catalog order without ``features``, the prompt unchanged) is shown as it is, with the
    stages it skipped in the titles."""
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    before, after = data.interests[user_id]
    console.rule(f"[bold]{user_id}[/bold] — interest drifted from {before} to {after}")
    candidates = [{"item_id": item["item_id"]} for item in data.items]
    # The demo shows the whole path, so it gives each request a generous budget: on a busy machine the default
    # budgets would make p13n answer from a lower rung (non-personalized, without features), as designed.
    scored = api.post("/v1/score", {"user_id": user_id, "candidates": candidates, "k": 5, "explain": True,
                                    "budget_ms": budget_ms})  # fmt: skip
    text = {i["item_id"]: i["text"] for i in data.items}
    table = Table(title=f"POST /v1/score: top 5 of {len(candidates)} catalog items "
                        f"({scored['timings_ms']['total']:.1f} ms{_degraded(scored)})")  # fmt: skip
    for column in ("item", "text", "score", "why (largest weighted features)"):
        table.add_column(column)
    for item in scored["items"]:
        features = item.get("features") or {}  # absent when the answer came from the non-personalized rung
        top = sorted(features.items(), key=lambda kv: -abs(kv[1] * cfg.scoring.weights.get(kv[0], 0)))[:3]
        table.add_row(item["item_id"], text.get(item["item_id"], ""), f"{item['score']:.3f}",
                      ", ".join(f"{k}={v:.2f}" for k, v in top))  # fmt: skip
    console.print(table, soft_wrap=False)
    messages = [{"role": "system", "content": "You are a helpful shopping assistant."}, {"role": "user", "content": QUESTION}]
    rewritten = api.post("/v1/rewrite", {"user_id": user_id, "messages": messages, "budget_ms": budget_ms})
    console.print(Panel(Text(json.dumps(messages, indent=1)), title="prompt before"), soft_wrap=False)
    console.print(Panel(Text("\n\n".join(f"({m['role']})\n{m['content']}" for m in rewritten["messages"])),
                        title=f"POST /v1/rewrite: prompt after ({rewritten['timings_ms']['total']:.1f} ms"
                              f"{_degraded(rewritten)})"), soft_wrap=False)  # fmt: skip


def _latency_table(console, api: Client, data, users: list[str], rate: float = 40.0, seconds: float = 3.0) -> None:
    """A short open-loop burst per endpoint: requests leave on schedule, whether or not earlier ones returned."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from rich.table import Table

    candidates = [{"item_id": item["item_id"]} for item in data.items[:100]]
    bodies = {
        "/v1/score": lambda n: {"user_id": users[n % len(users)], "candidates": candidates, "k": 10},
        "/v1/rewrite": lambda n: {"user_id": users[n % len(users)], "prompt": f"{QUESTION} (#{n})"},
    }
    table = Table(title=f"latency over a {seconds:g}s burst at {rate:g} requests/s per endpoint (client side, ms)")
    for column in ("endpoint", "requests", "p50", "p99", "max", "degraded"):
        table.add_column(column, justify="right" if column != "endpoint" else "left")
    with ThreadPoolExecutor(max_workers=32) as pool:
        for path, body in bodies.items():
            start = time.perf_counter()
            futures = []
            for n in range(int(rate * seconds)):
                delay = start + n / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(_timed, api, path, body(n)))
            results = [f.result() for f in futures]
            ms = np.array([r[0] for r in results])
            degraded = sum(1 for r in results if r[1])
            table.add_row(path, str(len(ms)), f"{np.percentile(ms, 50):.1f}", f"{np.percentile(ms, 99):.1f}",
                          f"{ms.max():.1f}", str(degraded))  # fmt: skip
    console.print(table, soft_wrap=False)


def _timed(api: Client, path: str, body: dict) -> tuple[float, bool]:
    started = time.perf_counter()
    answer = api.post(path, body)
    return (time.perf_counter() - started) * 1000, bool(answer.get("degraded"))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
