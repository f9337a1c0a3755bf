"""Dependencies down: the endpoints that cannot degrade answer 503 with the reason, never 500.

This module's Serve instance is configured with a Kafka bootstrap and an upstream LLM where nothing listens
(unreachable for its whole life); Redis is the session's serving Redis, killed and restarted here.
"""

from __future__ import annotations


import pytest

from p13n.clock import now_ms as wall_ms
from p13n.devstack import free_port, wait_until
from tests.serving.conftest import running_api

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(serving_config, fake_llm, tmp_path_factory):
    with running_api(serving_config, fake_llm, tmp_path_factory.mktemp("serve-outages"),
                     P13N_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
                     P13N_SERVING_UPSTREAM_URL=f"http://127.0.0.1:{free_port()}/v1") as service:  # fmt: skip
        yield service


def assert_unavailable(answer: dict, code: str, needle: str) -> None:
    error = answer["error"]
    assert error["type"] == "service_unavailable" and error["code"] == code, answer
    assert needle in error["message"], answer


def test_user_endpoints_answer_503_while_redis_is_down(api, seeded, serving_redis):
    user = sorted(seeded.data["shop"].interests)[0]
    assert api.call("GET", f"/v1/users/{user}")[0] == 200
    serving_redis.kill()
    try:
        for method in ("GET", "DELETE"):
            status, answer, elapsed_ms = api.call(method, f"/v1/users/{user}", timeout=10)
            assert status == 503, answer
            assert_unavailable(answer, "store_unavailable", "Redis unavailable")
            assert elapsed_ms < 5000
        status, answer, _ = api.call("GET", "/readyz", key=None)
        assert status == 503 and answer["error"]["code"] == "store_unavailable"
    finally:
        serving_redis.start()
    wait_until(lambda: api.call("GET", f"/v1/users/{user}")[0] == 200, timeout=30, what="the user readable again",
               interval=0.2)  # fmt: skip
    assert seeded.store.load_user("shop", user) is not None, "the DELETE sent while Redis was down deleted nothing"


def test_events_answer_503_when_the_broker_is_unreachable(api):
    event = {"event_id": "down-1", "user_id": "u", "type": "view", "item_id": "i", "timestamp": wall_ms()}
    for _ in range(2):  # each call tries to reach Kafka again
        status, answer, elapsed_ms = api.call("POST", "/v1/events", {"events": [event]}, timeout=10)
        assert status == 503, answer
        assert_unavailable(answer, "broker_unavailable", "Kafka")
        assert elapsed_ms < 7000
    status, answer, _ = api.call("POST", "/v1/events", {"events": [{**event, "type": "teleport"}]})
    assert status == 422 and answer["error"]["code"] == "unknown_type", "bad input is still named while Kafka is down"


def test_chat_answers_502_when_the_upstream_llm_is_unreachable(api):
    status, answer, _ = api.call("POST", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user",
                                                                                              "content": "hi"}]})  # fmt: skip
    assert status == 502, answer
    assert_unavailable(answer, "upstream_unavailable", "upstream LLM unreachable")
