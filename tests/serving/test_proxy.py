"""The OpenAI-compatible proxy as the official ``openai`` SDK sees it, against a real Serve instance and the
local OpenAI-protocol upstream (``fake_llm.py``; its model names pick how it answers).

This module's instance adds the context as a developer message, except for models named ``sys-…`` (system)
and ``merge-…`` (merged into the first system message),
sends the upstream pseudonymous user ids, has a 4 s total upstream deadline (3 s of silence, as the other
modules) and publishes both sides of each conversation turn to the session's Kafka broker.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.request

import openai
import pytest

from features.redis.store import RedisStore
from p13n.devstack import wait_until
from stream.processing import BatchProcessor, records_from_lines
from tests.serving.conftest import running_api
from tests.serving.fake_llm import TRICKLE_CHUNKS

SECRET = "pseudonym-secret"


@pytest.fixture(scope="module")
def proxy(serving_config, fake_llm, tmp_path_factory):
    with running_api(serving_config, fake_llm, tmp_path_factory.mktemp("serve-proxy"),
                     P13N_SERVING_CONTEXT_ROLE="developer",
                     P13N_SERVING_CONTEXT_ROLE_BY_MODEL=json.dumps({"sys-": "system", "merge-": "merge"}),
                     P13N_SERVING_UPSTREAM_USER="pseudonymous", P13N_SERVING_UPSTREAM_USER_SECRET=SECRET,
                     P13N_SERVING_UPSTREAM_TOTAL_TIMEOUT_S="4", P13N_SERVING_PUBLISH_MESSAGES="true",
                     P13N_SERVING_PUBLISH_ASSISTANT_MESSAGES="true") as service:  # fmt: skip
        yield service


@pytest.fixture
def client(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key="key-shop", max_retries=0, timeout=30)


def _seeded_user(seeded) -> str:
    return seeded.data["shop"].events[0]["user_id"]


def test_models_are_relayed_from_the_upstream_with_p13n_auth(client, proxy, fake_llm):
    assert [m.id for m in client.models.list()] == ["fake-1", "fake-2"]
    assert fake_llm.headers[-1]["Authorization"] == "Bearer upstream-secret"  # p13n's upstream key, not the client's
    with pytest.raises(openai.AuthenticationError) as caught:
        openai.OpenAI(base_url=proxy.url + "/v1", api_key="nope", max_retries=0).models.list()
    assert caught.value.code == "invalid_api_key"
    fake_llm.models_failure = (503, b"models are down for maintenance")
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            client.models.list()
    finally:
        fake_llm.models_failure = None
    assert caught.value.status_code == 503 and caught.value.code == "upstream_error"
    assert "models are down for maintenance" in caught.value.message
    assert caught.value.response.headers["x-upstream-request-id"] == "req_models_failed"
    assert caught.value.response.headers["x-request-id"].split(",")[0] == "req_models_failed"  # Serve appends its id


def test_an_upstream_429_reaches_the_client_with_its_retry_after(client, seeded):
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="rate-limited", messages=messages, user=_seeded_user(seeded))
    headers = caught.value.response.headers
    assert caught.value.status_code == 429 and headers["retry-after"] == "7"
    assert headers["x-ratelimit-remaining-requests"] == "0" and headers["x-upstream-request-id"] == "req_limited"
    assert caught.value.code == "rate_limit_exceeded"  # the upstream's own error body, relayed
    with pytest.raises(openai.RateLimitError) as caught:  # a plain-text 429 is wrapped into the error shape
        client.chat.completions.create(model="rate-limited-plain", messages=messages)
    assert caught.value.type == "rate_limit_error" and caught.value.code == "upstream_error"
    assert caught.value.response.headers["retry-after"] == "7"
    assert "Too Many Requests" in caught.value.message


def test_upstream_headers_are_relayed_on_success(client, seeded):
    raw = client.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                                           user=_seeded_user(seeded))  # fmt: skip
    assert raw.headers["x-upstream-request-id"] == "req_ok" and raw.headers["openai-processing-ms"] == "5"
    assert raw.headers["x-ratelimit-remaining-requests"] == "59" and raw.headers.get("server") != "fake-llm"
    assert raw.parse().choices[0].message.content.startswith("echo:")


def test_errors_parse_into_typed_sdk_exceptions(client):
    with pytest.raises(openai.BadRequestError) as caught:  # the upstream's 400, relayed
        client.chat.completions.create(model="bad-param", messages=[{"role": "user", "content": "hi"}], temperature=3)
    assert (caught.value.code, caught.value.param) == ("invalid_value", "temperature")
    with pytest.raises(openai.UnprocessableEntityError) as caught:  # p13n's own validation
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": 5}])
    assert caught.value.param == "messages[0].content" and caught.value.code == "invalid_field"
    with pytest.raises(openai.InternalServerError) as caught:  # an upstream 500 is a bad gateway here
        client.chat.completions.create(model="plain-500", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502 and "upstream LLM answered 500: upstream exploded" in caught.value.message


@pytest.mark.parametrize(("model", "roles"), [
    ("gpt-x", ["system", "developer", "user"]),  # serving.context_role
    ("sys-x", ["system", "system", "user"]),
    ("merge-x", ["system", "user"]),
])  # fmt: skip
def test_each_context_role_reaches_the_upstream(client, seeded, fake_llm, model, roles):
    user = _seeded_user(seeded)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "shoes?"}]
    client.chat.completions.create(model=model, user=user, messages=messages)
    sent = fake_llm.requests[-1]
    assert sent["model"] == model and [m["role"] for m in sent["messages"]] == roles
    context = sent["messages"][0]["content"] if model.startswith("merge-") else sent["messages"][1]["content"]
    assert "<user_context>" in context and sent["messages"][-1] == {"role": "user", "content": "shoes?"}
    if model.startswith("merge-"):
        assert context.startswith("Be brief.\n\n<user_context>")
    else:
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    pseudonym = hmac.new(SECRET.encode(), f"shop\0{user}".encode(), hashlib.sha256).hexdigest()[:32]
    assert sent["user"] == pseudonym  # serving.upstream_user = pseudonymous


def test_rewrite_adds_the_context_in_the_configured_role(proxy, seeded):
    status, body, _ = proxy.call("POST", "/v1/rewrite", {"user_id": _seeded_user(seeded), "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "shoes?"}]})  # fmt: skip
    assert status == 200 and [m["role"] for m in body["messages"]] == ["system", "developer", "user"], body
    assert "<user_context>" in body["messages"][1]["content"]


def test_a_stream_longer_than_the_total_deadline_ends_with_an_error_event(proxy):
    """Chunks come every 0.5 s (never 3 s of silence), 12 of them: the 4 s total deadline cuts the stream."""
    request = urllib.request.Request(proxy.url + "/v1/chat/completions", method="POST", data=json.dumps(
        {"model": "trickle", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"authorization": "Bearer key-shop", "content-type": "application/json"})  # fmt: skip
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=30) as response:
        status, text = response.status, response.read().decode()
    elapsed = time.monotonic() - started
    events = [e.removeprefix("data: ") for e in text.split("\n\n") if e.startswith("data: ")]
    assert status == 200 and events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "upstream_unavailable" and "4 s (serving.upstream_total_timeout_s)" in error["message"]
    assert 1 <= len(events) - 2 < TRICKLE_CHUNKS and 3.5 < elapsed < 6


def _turns(config, user: str, want: int) -> list[dict]:
    """The events of ``shop/user`` on the events topic, polled until ``want`` arrived."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(config.kafka.events_topic, bootstrap_servers=config.kafka.bootstrap, group_id=None,
                             auto_offset_reset="earliest")  # fmt: skip
    got: list[dict] = []
    try:
        def enough() -> bool:
            for records in consumer.poll(timeout_ms=300).values():
                got.extend(json.loads(r.value) for r in records if r.key == f"shop/{user}".encode())
            return len(got) >= want

        wait_until(enough, timeout=30, what=f"{want} published turns")
    finally:
        consumer.close()
    return got


def test_chat_turns_are_published_and_recalled_by_a_later_rewrite(client, proxy, seeded, consumer_encoder):
    user = f"talker-{time.time_ns()}"
    fact = "We adopted a beagle puppy from the shelter and named him Biscuit"
    history = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Hi! How can I help?"},
               {"role": "user", "content": fact}]  # fmt: skip
    answer = client.chat.completions.create(model="m", user=user, messages=history)
    client.chat.completions.create(model="m", user=user, messages=history)  # a retry: the same user turn
    streamed = [*history, {"role": "assistant", "content": answer.choices[0].message.content},
                {"role": "user", "content": "My sister lives in Lyon and teaches piano"}]  # fmt: skip
    chunks = list(client.chat.completions.create(model="m", user=user, messages=streamed, stream=True))
    streamed_text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    turns = _turns(seeded.config, user, want=6)  # 3 user + 3 assistant records
    by_role = {role: [t for t in turns if t["context"]["role"] == role] for role in ("user", "assistant")}
    assert [t["text"] for t in by_role["user"]] == [history[-1]["content"]] * 2 + [streamed[-1]["content"]]
    assert len({t["event_id"] for t in by_role["user"]}) == 2  # the retry published the same event
    assert [t["text"] for t in by_role["assistant"]][-1] == streamed_text.strip()
    assert by_role["assistant"][0]["text"] == answer.choices[0].message.content.strip()
    assert all(t["type"] == "message" and t["tenant"] == "shop" and t["user_id"] == user for t in turns)
    store = RedisStore(seeded.store.client, seeded.config, dim=consumer_encoder.dimension)
    outcome = BatchProcessor(store, seeded.config, consumer_encoder.encode).process_events(
        records_from_lines([json.dumps(t).encode() for t in turns], "events"))  # fmt: skip
    assert not outcome.dead_letters
    status, body, _ = proxy.call("POST", "/v1/rewrite", {"user_id": user, "prompt": "What is my dog called?",
                                                          "budget_ms": 2000})  # fmt: skip
    assert status == 200, body
    recalled = [m["text"] for m in body["context"]["memories"]]
    assert history[-1]["content"] in recalled and "Biscuit" in body["messages"][0]["content"]
