"""The HTTP API of a real Ray Serve instance: every endpoint, auth, limits, budgets, Redis outages."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import threading
import time
import urllib.request

import pytest

from features.encoder.runtime import Encoder, default_encoder_dir
from features.core.personalize import CandidateIn
from features.core.prompt import rewrite_messages
from p13n.clock import now_ms as wall_ms
from p13n.demo import QUESTION
from p13n.devstack import wait_until
from tests.serving.reference import context_for, score_candidates
from tests.serving.test_metric_names import promtool_problems

pytestmark = pytest.mark.slow


def a_user(seeded, tenant: str = "shop") -> str:
    return sorted(seeded.data[tenant].interests)[0]


def catalog(seeded, tenant: str = "shop", n: int = 100) -> list[dict]:
    return [{"item_id": i["item_id"]} for i in seeded.data[tenant].items[:n]]


def test_health_and_readiness(api):
    assert api.call("GET", "/healthz", key=None)[0] == 200
    assert api.call("GET", "/readyz", key=None)[0] == 200


EQUALITY_BUDGET_MS = 5000


def test_score_matches_features_called_directly(api, seeded):
    user = a_user(seeded)
    candidates = catalog(seeded)
    # a generous budget: this test is about equal answers (budgets have their own tests), and a noisy
    # machine can take the default 50 ms for the first request through handles
    status, body, _ = api.call("POST", "/v1/score", {"user_id": user, "candidates": candidates, "k": 20, "explain": True,
                                                     "budget_ms": EQUALITY_BUDGET_MS})  # fmt: skip
    assert status == 200, body
    assert body["degraded"] == [] and body["timings_ms"]["total"] > 0 and "redis" in body["timings_ms"]
    direct = score_candidates(seeded.store, "shop", user, [CandidateIn(c["item_id"]) for c in candidates],
                              now_ms=wall_ms(), weights=seeded.config.scoring.weights, k=20,
                              explain=True, anchors=seeded.config.scoring.covisit_anchors)  # fmt: skip
    assert [i["item_id"] for i in body["items"]] == [i.item_id for i in direct.items]
    for got, want in zip(body["items"], direct.items):
        assert got["score"] == pytest.approx(want.score, abs=1e-5)
        assert got["features"].keys() == want.features.keys()
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_rewrite_matches_features_called_directly(api, seeded):
    user = a_user(seeded)
    question = "Which of my recent items would make a good gift?"
    status, body, _ = api.call("POST", "/v1/rewrite", {"user_id": user, "budget_ms": EQUALITY_BUDGET_MS, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]})  # fmt: skip
    assert status == 200, body
    assert body["degraded"] == []
    encoder = Encoder.from_directory(default_encoder_dir())  # int8, one text: what the Encoder deployment ran
    context, _ = context_for(seeded.store, "shop", user, now_ms=wall_ms(), max_tokens=256,
                             count_tokens=encoder.count_tokens, query_vector=encoder.encode([question])[0])  # fmt: skip
    want = json.loads(json.dumps(context.as_json()))
    # identical selection and text; history scores carry a recency term of "now", which moved a few ms
    assert body["context"]["profile"] == want["profile"] and body["context"]["preferences"] == want["preferences"]
    assert [(h["item_id"], h["text"]) for h in body["context"]["history"]] == [(h["item_id"], h["text"]) for h in want["history"]]
    for got, expected in zip(body["context"]["history"], want["history"]):
        assert got["score"] == pytest.approx(expected["score"], abs=1e-5)
    assert body["messages"] == rewrite_messages([{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": question}], context)  # fmt: skip
    assert [m["role"] for m in body["messages"]] == ["system", "system", "user"]
    assert body["context"]["history"], "a user with history gets history in the context"


def test_prompt_form_and_unknown_user(api):
    status, body, _ = api.call("POST", "/v1/rewrite", {"user_id": "nobody-at-all", "prompt": "hello"})
    assert status == 200
    assert body["messages"] == [{"role": "user", "content": "hello"}] and "unknown_user" in body["degraded"]
    status, body, _ = api.call("POST", "/v1/score", {"user_id": "nobody-at-all", "candidates": [{"item_id": "x"}]})
    assert status == 200 and body["items"] == [{"item_id": "x", "score": 0.0}] and "unknown_user" in body["degraded"]


def test_unknown_candidates_with_text_are_scored_by_their_text(api, seeded):
    user = a_user(seeded)
    interest = seeded.data["shop"].interests[user][1]
    own = next(i for i in seeded.data["shop"].items if i["attributes"]["category"] == interest)
    status, body, _ = api.call("POST", "/v1/score", {"user_id": user, "explain": True, "candidates": [
        {"item_id": "brand-new-1", "text": own["text"]}, {"item_id": "brand-new-2", "text": "industrial pipe fittings"}]})  # fmt: skip
    assert status == 200 and "candidate_encoding_skipped" not in body["degraded"], body
    by_id = {i["item_id"]: i for i in body["items"]}
    assert by_id["brand-new-1"]["features"]["sim_long"] > by_id["brand-new-2"]["features"]["sim_long"]


@pytest.mark.parametrize(("key", "body_tenant", "status"), [(None, None, 401), ("wrong", None, 401),
                                                             ("key-shop", "news", 403), ("key-news", "news", 200)])
def test_auth(api, key, body_tenant, status):
    body = {"user_id": "u", "candidates": [{"item_id": "a"}]}
    if body_tenant:
        body["tenant"] = body_tenant
    got, answer, _ = api.call("POST", "/v1/score", body, key=key)
    assert got == status, answer
    if status != 200:  # OpenAI's error shape, so SDKs surface it
        assert answer["error"]["type"] == {401: "authentication_error", 403: "permission_error"}[status]
        assert answer["error"]["message"] and answer["error"]["code"]


def test_a_key_cannot_read_or_delete_another_tenants_user(api, seeded):
    user = a_user(seeded, "news")
    status, news_profile, _ = api.call("GET", f"/v1/users/{user}", key="key-news")
    assert status == 200 and news_profile["tenant"] == "news"
    status, shop_profile, _ = api.call("GET", f"/v1/users/{user}", key="key-shop")  # same id, the shop's own user
    assert status == 200 and shop_profile["tenant"] == "shop" and shop_profile["history"] != news_profile["history"]
    assert api.call("GET", f"/v1/users/{user}?tenant=news", key="key-shop")[0] == 403
    assert api.call("DELETE", f"/v1/users/{user}?tenant=news", key="key-shop")[0] == 403
    assert api.call("GET", f"/v1/users/{user}", key="key-news")[0] == 200  # still there


@pytest.mark.parametrize(
    ("path", "body", "raw", "status", "needle", "param"),
    [
        ("/v1/score", {"user_id": "u", "candidates": [{"item_id": f"i{n}"} for n in range(301)]}, None, 413, "limit is 300",
         "candidates"),
        ("/v1/rewrite", {"user_id": "u", "prompt": "x" * 5000}, None, 413, "`prompt` is 5000 bytes", "prompt"),
        ("/v1/score", {"user_id": "u", "candidates": [{"item_id": 7}]}, None, 422, "$.candidates[0].item_id",
         "candidates[0].item_id"),
        ("/v1/score", {"user_id": "u", "candidates": [], "budget_ms": -1}, None, 422, "$.budget_ms", "budget_ms"),
        ("/v1/score", {"candidates": []}, None, 422, "user_id", "user_id"),
        ("/v1/rewrite", {"user_id": "u"}, None, 422, "exactly one of `prompt` or `messages`", "messages"),
        ("/v1/score", None, b"{not json", 400, "not valid JSON", None),
        ("/v1/score", None, b"", 400, "empty", None),
    ],
)
def test_limits_and_validation_name_the_problem(api, path, body, raw, status, needle, param):
    got, answer, _ = api.call("POST", path, body, raw=raw)
    assert got == status, answer
    assert needle in answer["error"]["message"]
    assert answer["error"]["param"] == param and answer["error"]["type"] == "invalid_request_error"


def test_user_profile_and_delete(api, seeded):
    user = sorted(seeded.data["shop"].interests)[-1]
    status, profile, _ = api.call("GET", f"/v1/users/{user}")
    assert status == 200
    assert profile["user_id"] == user and profile["events_applied"] > 0 and profile["history"]
    assert any(k.startswith("category=") for k in profile["attributes"])
    assert api.call("DELETE", f"/v1/users/{user}")[0] == 200
    assert api.call("GET", f"/v1/users/{user}")[0] == 404
    assert api.call("DELETE", f"/v1/users/{user}")[0] == 404
    assert seeded.store.load_user("shop", user) is None


def test_tiny_budget_is_answered_in_time_and_degraded(api, seeded):
    user = a_user(seeded)
    for budget in (0.5, 1.0):
        status, body, elapsed = api.call("POST", "/v1/rewrite", {"user_id": user, "prompt": "gift ideas?", "budget_ms": budget})
        assert status == 200
        assert body["degraded"], body
        assert "redis_unavailable" not in body["degraded"], "running out of budget is not a Redis failure"
        assert body["timings_ms"]["total"] <= budget + 5
        status, body, elapsed = api.call("POST", "/v1/score", {"user_id": user, "candidates": catalog(seeded),
                                                               "budget_ms": budget})  # fmt: skip
        assert status == 200 and len(body["items"]) == 100
        assert body["degraded"], body
        assert body["timings_ms"]["total"] <= budget + 5


def test_the_demo_shows_a_degraded_answer_as_it_is(api, seeded):
    """``p13n demo`` prints what the API answered from a lower rung (candidates in catalog order, score 0, no
    ``features``; the prompt unchanged) and what it skipped, instead of failing on the missing ``features``.
    A budget under the 1 ms every stage keeps to answer back degrades both requests, every time."""
    from rich.console import Console

    from p13n.demo import Client, _show_user

    user = a_user(seeded)
    data = dataclasses.replace(seeded.data["shop"], items=seeded.data["shop"].items[:100])  # this Serve takes 300
    out = io.StringIO()
    _show_user(Console(file=out, width=200, color_system=None), Client(api.url, "key-shop"), seeded.config, data,
               user, budget_ms=0.5)  # fmt: skip
    shown = out.getvalue()
    flat = " ".join(shown.split())  # a title may wrap at the table's width
    lower_rung = r"[\d.]+ ms; degraded: (redis_timeout|deadline_exceeded)\)"
    assert re.search(rf"top 5 of {len(data.items)} catalog items \({lower_rung}", flat), shown
    assert re.search(rf"POST /v1/rewrite: prompt after \({lower_rung}", flat), shown
    rows = [next(line for line in shown.splitlines() if f" {i['item_id']} " in line) for i in data.items[:5]]
    assert all(" 0.000 " in row for row in rows), shown  # the catalog's first five, in its order, score 0
    assert [shown.index(row) for row in rows] == sorted(shown.index(row) for row in rows)
    assert not re.search(r"\w=-?\d+\.\d\d", shown), "a degraded answer has no features to explain"
    assert shown.count(QUESTION) == 2 and "<user_context>" not in shown, "the prompt after is the prompt before"


def test_events_endpoint_validates_and_produces(api, seeded):
    from kafka import KafkaConsumer

    now = wall_ms()
    events = [
        {"event_id": "http-1", "user_id": "web-user", "type": "click", "item_id": "running-001", "timestamp": now},
        {"event_id": "http-2", "user_id": "web-user", "type": "teleport", "item_id": "x", "timestamp": now},
        {"event_id": "http-3", "user_id": "web-user", "type": "view", "item_id": "running-002", "timestamp": now,
         "tenant": "news"},
        {"event_id": "http-4", "user_id": "web-user", "type": "view", "item_id": "running-003", "timestamp": now},
    ]  # fmt: skip
    status, body, _ = api.call("POST", "/v1/events", {"events": events})
    assert status == 202
    assert body["accepted"] == 2
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [(1, "unknown_type"), (2, "forbidden")]
    consumer = KafkaConsumer(seeded.config.kafka.events_topic, bootstrap_servers=seeded.config.kafka.bootstrap,
                             group_id=None, auto_offset_reset="earliest")  # fmt: skip
    got = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < 2 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300).values():
                got.extend(json.loads(r.value) for r in records if r.key == b"shop/web-user")
    finally:
        consumer.close()
    assert sorted(e["event_id"] for e in got) == ["http-1", "http-4"]
    assert all(e["tenant"] == "shop" for e in got)


def test_chat_completions_proxy_personalizes_and_returns_upstream_answer(api, seeded, fake_llm):
    user = a_user(seeded)
    status, body, _ = api.call("POST", "/v1/chat/completions", {"model": "m", "user": user,
                                                                "messages": [{"role": "user", "content": "Suggest a gift"}]})  # fmt: skip
    assert status == 200
    assert body["choices"][0]["message"]["content"] == "echo: 2 messages"  # the upstream's answer, unchanged
    sent = fake_llm.requests[-1]
    assert sent["messages"][0]["role"] == "system" and "<user_context>" in sent["messages"][0]["content"]
    assert sent["messages"][1] == {"role": "user", "content": "Suggest a gift"}
    assert fake_llm.headers[-1]["Authorization"] == "Bearer upstream-secret"


def test_chat_completions_streams(api, seeded, fake_llm):
    user = a_user(seeded)
    request = urllib.request.Request(api.url + "/v1/chat/completions", method="POST", headers={
        "authorization": "Bearer key-shop", "content-type": "application/json"},
        data=json.dumps({"model": "m", "user": user, "stream": True,
                         "messages": [{"role": "user", "content": "hi"}]}).encode())  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = [line[len("data: "):] for line in raw.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1])
    assert text.strip() == "echo: 2 messages"


def test_redis_down_answers_degraded_then_recovers(api, seeded, serving_redis):
    user = a_user(seeded, "news")
    request = {"user_id": user, "candidates": catalog(seeded, "news", 30), "budget_ms": 50}
    serving_redis.kill()
    try:
        for _ in range(3):
            status, body, elapsed = api.call("POST", "/v1/score", request, key="key-news")
            assert status == 200
            assert "redis_unavailable" in body["degraded"]
            assert [i["item_id"] for i in body["items"]] == [c["item_id"] for c in request["candidates"]]
            status, body, _ = api.call("POST", "/v1/rewrite", {"user_id": user, "prompt": "hi", "budget_ms": 50},
                                       key="key-news")  # fmt: skip
            assert status == 200 and "redis_unavailable" in body["degraded"]
            assert body["messages"] == [{"role": "user", "content": "hi"}]
        assert api.call("GET", "/readyz", key=None)[0] == 503
    finally:
        serving_redis.start()

    def recovered() -> bool:
        status, body, _ = api.call("POST", "/v1/score", request, key="key-news")
        return status == 200 and body["degraded"] == []

    wait_until(recovered, timeout=30, what="serving to recover after Redis returned", interval=0.2)
    assert api.call("GET", "/readyz", key=None)[0] == 200


def test_redis_restarted_under_serving_load(api, seeded, serving_redis):
    """A steady stream of /v1/score and /v1/rewrite (two clients, back to back) while Redis is killed and
    restarted: never a 5xx; while it is down every answer is degraded with ``redis_unavailable``; full
    answers again within 30 s of the restart (the pool's broken connections are not reused)."""
    user = a_user(seeded, "news")
    bodies = {"/v1/score": {"user_id": user, "candidates": catalog(seeded, "news", 30), "k": 5, "budget_ms": 2000},
              "/v1/rewrite": {"user_id": user, "budget_ms": 2000, "messages": [{"role": "user", "content": "news?"}]}}
    answers: list[tuple[str, float, float, int, list]] = []  # (path, sent, received, status, degraded)
    stop = threading.Event()

    def client(path: str) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            status, body, _ = api.call("POST", path, bodies[path], key="key-news")
            answers.append((path, sent, time.monotonic(), status, body.get("degraded")))

    def full_since(moment: float) -> bool:
        return all(any(a[0] == path and a[1] > moment and a[3] == 200 and a[4] == [] for a in answers)
                   for path in bodies)

    threads = [threading.Thread(target=client, args=(path,), daemon=True) for path in bodies]
    for thread in threads:
        thread.start()
    try:
        started = time.monotonic()
        wait_until(lambda: full_since(started), timeout=30, what="full answers before the outage")
        serving_redis.kill()
        down = time.monotonic()
        wait_until(lambda: all(sum(a[0] == path and a[1] > down for a in answers) >= 10 for path in bodies), timeout=30,
                   what="answers during the outage")  # fmt: skip
        restarting = time.monotonic()
        serving_redis.start()
        restarted = time.monotonic()
        wait_until(lambda: full_since(restarted), timeout=30, what="full answers after Redis returned", interval=0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert [a for a in answers if a[3] >= 500] == []
    assert all(a[3] == 200 for a in answers), {a[3] for a in answers}
    during = [a for a in answers if a[1] > down and a[2] < restarting]
    assert {a[0] for a in during} == set(bodies)
    assert all("redis_unavailable" in a[4] for a in during), [a[4] for a in during]


def prometheus_samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text format -> {(name, labels): value} (label values without quotes or commas)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        pairs = frozenset(tuple(p.split("=", 1)) for p in labels.rstrip("}").replace('"', "").split(",") if "=" in p)
        out[(name, pairs)] = float(value)
    return out


def metric_total(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, pairs), v in samples.items() if n == name and want <= pairs)


def test_prometheus_scrape_sees_every_replica_metric(api, seeded, fake_llm):
    """One scrape of the Ray node's endpoint: request durations per endpoint and status (errors too; chat with
    its upstream call), stages, degraded reasons and encoder batch sizes, as the replicas recorded them; and
    p13n's names pass ``promtool check metrics``."""
    user = a_user(seeded)
    for n in range(12):
        assert api.call("POST", "/v1/score", {"user_id": user, "candidates": catalog(seeded, n=20)})[0] == 200
        body = {"user_id": user, "prompt": f"something for the weekend {n}?"}
        assert api.call("POST", "/v1/rewrite", body)[0] == 200
    tiny = {"user_id": user, "prompt": "quick?", "budget_ms": 0.2}
    assert "redis_timeout" in api.call("POST", "/v1/rewrite", tiny)[1]["degraded"]
    assert api.call("POST", "/v1/score", {"user_id": user, "candidates": [{"item_id": 1}]})[0] == 422
    assert api.call("POST", "/v1/score", {"user_id": user, "candidates": []}, key="nope")[0] == 401
    fake_llm.delay_s = 0.4
    try:
        chat = {"model": "m", "user": user, "messages": [{"role": "user", "content": "hi"}]}
        assert api.call("POST", "/v1/chat/completions", chat)[0] == 200
    finally:
        fake_llm.delay_s = 0.0

    def scraped() -> tuple[str, dict] | None:
        with urllib.request.urlopen(api.metrics_url, timeout=5) as response:
            text = response.read().decode()
        samples = prometheus_samples(text)
        ready = (metric_total(samples, "ray_p13n_request_duration_seconds_count", endpoint="rewrite") >= 13
                 and metric_total(samples, "ray_p13n_request_duration_seconds_count", endpoint="chat") >= 1
                 # earlier chats of this module may be exported first: wait for the slow one (upstream included)
                 and metric_total(samples, "ray_p13n_request_duration_seconds_sum", endpoint="chat") >= 0.4
                 and metric_total(samples, "ray_p13n_request_duration_seconds_count", status="401") >= 1
                 and metric_total(samples, "ray_p13n_degraded_total", reason="redis_timeout") >= 1)  # fmt: skip
        return (text, samples) if ready else None

    wait_until(lambda: scraped() is not None, timeout=90, what="the replicas' metrics in a scrape", interval=1.0)
    text, samples = scraped()
    assert metric_total(samples, "ray_p13n_request_duration_seconds_count", endpoint="score", status="200") >= 12
    assert metric_total(samples, "ray_p13n_request_duration_seconds_count", endpoint="score", status="422") >= 1
    assert metric_total(samples, "ray_p13n_request_duration_seconds_count", deployment="Ingress") >= 28
    assert metric_total(samples, "ray_p13n_request_duration_seconds_sum", endpoint="chat") >= 0.4  # upstream included
    assert metric_total(samples, "ray_p13n_stage_duration_seconds_count") >= 2  # one request in STAGE_SAMPLE=10
    assert metric_total(samples, "ray_p13n_encoder_batch_size_count") >= 12  # every rewrite query was encoded
    # Ray tags every replica metric with labels of its own (WorkerId, ReplicaId, …: camelCase); ours are snake_case
    problems = [p for p in promtool_problems(text) if "label names should be written in 'snake_case'" not in p]
    assert problems == []
    assert {"endpoint", "status"} <= {k for (n, pairs), _ in samples.items() if n.startswith("ray_p13n_request")
                                      for k, _ in pairs}  # fmt: skip
