"""Publishing conversation turns (``serving.publish_messages``): which turn, which event id, and that a Kafka
outage never delays or fails the chat answer (the end-to-end path to a recalled memory is in
``test_proxy.py``)."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request

import msgspec
import pytest

from p13n.config import Config
from p13n.devstack import free_port, wait_until
from p13n.errors import BrokerUnavailable
from serving.publish import MAX_IN_FLIGHT, TurnPublisher, turn_records
from tests.serving.conftest import running_api
from tests.serving.test_api import metric_total, prometheus_samples

NOW = 1_800_000_000_000


def _event(records) -> dict:
    [(key, value)] = records
    return {"key": key, **msgspec.json.decode(value)}


def test_only_the_last_user_message_is_a_turn_and_its_id_names_the_conversation():
    first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    later = [*first, {"role": "assistant", "content": "hello"},
             {"role": "user", "content": [{"type": "text", "text": "I moved"}, {"type": "text", "text": "to Lyon"}]},
             {"role": "tool", "tool_call_id": "c1", "content": "{}"}]  # fmt: skip
    event = _event(turn_records(Config(), "shop", "u1", later, NOW))
    assert (event["key"], event["text"]) == (b"shop/u1", "I moved to Lyon")
    assert event["context"] == {"role": "user", "source": "chat_completions"}
    assert event["event_id"] == _event(turn_records(Config(), "shop", "u1", later, NOW + 5))["event_id"]  # a retry
    other_start = [{"role": "user", "content": "hey"}, *later[2:]]  # the same last turn in another conversation
    assert _event(turn_records(Config(), "shop", "u1", other_start, NOW))["event_id"] != event["event_id"]
    assert _event(turn_records(Config(), "shop", "u2", later, NOW))["event_id"] != event["event_id"]
    answer = _event(turn_records(Config(), "shop", "u1", later, NOW, answer="Bienvenue à Lyon"))
    assert answer["context"]["role"] == "assistant" and answer["event_id"] != event["event_id"]
    assert turn_records(Config(), "shop", "u1", [{"role": "system", "content": "x"}], NOW) == []
    assert turn_records(Config(), "shop", "u1", [{"role": "user", "content": "   "}], NOW) == []
    long = _event(turn_records(Config(), "shop", "u1", [{"role": "user", "content": "é" * 9000}], NOW))
    assert len(long["text"]) == 8192


def test_the_publisher_never_waits_drops_beyond_its_bound_and_counts_each_outcome():
    release, counts = threading.Event(), []

    def produce(records):
        if records == [(b"k", b"fail")]:
            raise BrokerUnavailable("Kafka unavailable at 127.0.0.1:1")
        assert release.wait(timeout=10)

    async def main():
        publisher = TurnPublisher(produce, lambda role, outcome: counts.append((role, outcome)))
        started = time.perf_counter()
        for _ in range(MAX_IN_FLIGHT + 3):
            publisher.publish([(b"k", b"v")], "user")
        assert time.perf_counter() - started < 0.5  # scheduling only: nothing waited for "Kafka"
        assert counts == [("user", "dropped")] * 3
        release.set()
        await publisher.drain(10)
        publisher.publish([(b"k", b"fail")], "assistant")
        await publisher.drain(10)

    asyncio.run(main())
    assert counts.count(("user", "produced")) == MAX_IN_FLIGHT and counts[-1] == ("assistant", "failed")


@pytest.fixture(scope="module")
def kafka_down(serving_config, fake_llm, tmp_path_factory):
    with running_api(serving_config, fake_llm, tmp_path_factory.mktemp("serve-publish-down"),
                     P13N_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}", P13N_SERVING_PUBLISH_MESSAGES="true",
                     P13N_SERVING_PUBLISH_ASSISTANT_MESSAGES="true") as service:  # fmt: skip
        yield service


def test_chat_answers_in_time_while_kafka_is_down_and_the_lost_turns_are_counted(kafka_down, seeded):
    user = seeded.data["shop"].events[0]["user_id"]
    chat = {"model": "m", "user": user, "messages": [{"role": "user", "content": "hi"}]}
    assert kafka_down.call("POST", "/v1/rewrite", {"user_id": user, "prompt": "warm up"})[0] == 200
    for _ in range(3):
        status, body, elapsed_ms = kafka_down.call("POST", "/v1/chat/completions", chat)
        assert status == 200 and body["choices"][0]["message"]["content"].startswith("echo:"), body
        assert elapsed_ms < 2000  # producing would block up to 4 s before giving up on the bootstrap

    def failed() -> float:
        with urllib.request.urlopen(kafka_down.metrics_url, timeout=5) as response:
            samples = prometheus_samples(response.read().decode())
        return metric_total(samples, "ray_p13n_published_messages_total", role="user", outcome="failed")

    wait_until(lambda: failed() >= 3, timeout=90, what="failed publications in a scrape", interval=1.0)
