"""``p13n.client`` against a real Serve instance: typed answers, one exception per failure class, retries.

The Serve app is this module's own (one start); the 503 paths kill the session's serving Redis and start it
again, as ``test_outages.py`` does. Transport failures and ``Retry-After`` use local sockets and a stdlib HTTP
server (Serve never sends ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2 as httpx
import pytest

import p13n.client
from p13n.client import (APIConnectionError, APITimeoutError, AsyncP13nClient, AuthenticationError, Backoff,
                         BadRequestError, Candidate, NotFoundError, P13nClient, PermissionDeniedError, RateLimitError,
                         ScoreResult, ServiceUnavailableError, UserProfile)  # fmt: skip
from p13n.clock import now_ms as wall_ms
from p13n.devstack import free_port
from stream.processing import BatchProcessor, records_from_lines

pytestmark = pytest.mark.slow

FAST = Backoff(base_s=0.05, max_s=0.2)
ODD_ID = "client/user?x=1#frag é"  # every character a path or query would otherwise cut


def a_user(seeded, tenant: str = "shop") -> str:
    return sorted(seeded.data[tenant].interests)[0]


@pytest.fixture
def client(api):
    with P13nClient(api.url, "key-shop", timeout=30, retries=2, backoff=FAST) as p13n:
        yield p13n


def test_the_public_surface_is_pinned():
    assert sorted(p13n.client.__all__) == sorted([
        "P13nClient", "AsyncP13nClient", "Backoff", "Candidate", "ScoredItem", "ScoreResult", "ContextItem",
        "ContextMemory", "RewriteContext", "RewriteResult", "EventRejection", "EventsResult", "StatedPreference",
        "HistoryEntry", "Horizon", "UserMemory", "UserProfile", "Deleted", "P13nClientError", "APIStatusError",
        "BadRequestError", "AuthenticationError", "PermissionDeniedError", "NotFoundError", "RateLimitError",
        "ServiceUnavailableError", "InternalServerError", "APIConnectionError", "APITimeoutError"])  # fmt: skip
    assert all(hasattr(p13n.client, name) for name in p13n.client.__all__)


def test_score_and_rewrite_answer_typed_results_equal_to_the_raw_api(api, seeded, client):
    user = a_user(seeded)
    ids = [i["item_id"] for i in seeded.data["shop"].items[:40]]
    got = client.score(user, ids[:39] + [Candidate(ids[39])], k=10, explain=True, budget_ms=5000)
    assert isinstance(got, ScoreResult) and got.degraded == [] and got.timings_ms["total"] > 0
    status, raw, _ = api.call("POST", "/v1/score", {"user_id": user, "candidates": [{"item_id": i} for i in ids],
                                                    "k": 10, "explain": True, "budget_ms": 5000})  # fmt: skip
    assert status == 200
    assert [i.item_id for i in got.items] == [i["item_id"] for i in raw["items"]] and len(got.items) == 10
    assert got.items[0].features.keys() == raw["items"][0]["features"].keys()
    assert got.items[0].score == pytest.approx(raw["items"][0]["score"], abs=1e-5)

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Which gift for me?"}]
    rewritten = client.rewrite(user, messages=messages, budget_ms=5000)
    assert rewritten.degraded == [] and rewritten.context.history and rewritten.context.history[0].item_id
    assert [m["role"] for m in rewritten.messages] == ["system", "system", "user"]
    assert rewritten.messages[-1] == messages[-1]
    unknown = client.rewrite("nobody-at-all", prompt="hello")
    assert unknown.messages == [{"role": "user", "content": "hello"}] and "unknown_user" in unknown.degraded


def test_a_user_whose_id_holds_slash_query_and_fragment_is_read_and_deleted(api, seeded, consumer_encoder, client):
    now = wall_ms()
    item = seeded.data["shop"].items[0]["item_id"]
    events = [{"event_id": f"odd-{n}", "tenant": "shop", "user_id": ODD_ID, "type": "click", "item_id": item,
               "timestamp": now - 1000 * n} for n in range(3)]  # fmt: skip
    processor = BatchProcessor(seeded.store, seeded.config, consumer_encoder.encode, clock_ms=lambda: now)
    processor.process_events(records_from_lines([json.dumps(e).encode() for e in events], "events"))

    profile = client.get_user(ODD_ID)
    assert isinstance(profile, UserProfile)
    assert (profile.user_id, profile.tenant, profile.events_applied) == (ODD_ID, "shop", 3)
    assert [h.item_id for h in profile.history] == [item] * 3 and len(profile.interest_clock_utc) == 24
    assert client.delete_user(ODD_ID).deleted
    for call in (client.get_user, client.delete_user):
        with pytest.raises(NotFoundError) as caught:
            call(ODD_ID)
        assert (caught.value.status, caught.value.code, caught.value.param) == (404, "user_not_found", "user_id")
        assert ODD_ID in caught.value.message and caught.value.attempts == 1
    assert seeded.store.load_user("shop", ODD_ID) is None


def test_each_failure_class_is_its_own_exception_and_4xx_are_never_retried(api, seeded):
    user = a_user(seeded)
    with P13nClient(api.url, "not-a-key", retries=3, backoff=FAST) as stranger:
        with pytest.raises(AuthenticationError) as caught:
            stranger.score(user, ["a"])
        assert (caught.value.status, caught.value.code, caught.value.attempts) == (401, "invalid_api_key", 1)
    with P13nClient(api.url, "key-shop", retries=3, backoff=FAST) as shop:
        with pytest.raises(PermissionDeniedError) as caught:
            shop.score(user, ["a"], tenant="news")
        assert (caught.value.status, caught.value.param, caught.value.code) == (403, "tenant", "wrong_tenant")
        with pytest.raises(PermissionDeniedError):
            shop.get_user(a_user(seeded, "news"), tenant="news")
        assert shop.get_user(user, tenant="shop").tenant == "shop"

        # the client sends candidates as given: the server names the repeated one
        with pytest.raises(BadRequestError) as caught:
            shop.score(user, ["a", {"item_id": "b"}, Candidate("a")])
        error = caught.value
        assert (error.status, error.param, error.code, error.attempts) == (422, "candidates[2].item_id",
                                                                            "duplicate_candidate", 1)  # fmt: skip
        assert "candidates[0]" in error.message and error.body["error"]["type"] == "invalid_request_error"
        with pytest.raises(BadRequestError) as caught:
            shop.rewrite(user)  # neither prompt nor messages
        assert (caught.value.status, caught.value.param) == (422, "messages")
        with pytest.raises(BadRequestError) as caught:
            shop.score(user, [f"i{n}" for n in range(301)])  # the test Serve allows 300
        error = caught.value
        assert (error.status, error.param, error.code) == (413, "candidates", "too_many_candidates")


def test_send_events_reports_rejections_and_raises_when_none_is_accepted(api, client):
    now = wall_ms()
    good = {"event_id": "client-1", "user_id": "client-web", "type": "click", "item_id": "running-001",
            "timestamp": now}
    bad = {**good, "event_id": "client-2", "type": "teleport"}
    answer = client.send_events([good, bad])
    assert answer.accepted == 1 and [(r.index, r.reason) for r in answer.rejected] == [(1, "unknown_type")]
    with pytest.raises(BadRequestError) as caught:
        client.send_events([bad])
    assert (caught.value.status, caught.value.param, caught.value.code) == (422, "events[0]", "unknown_type")
    assert caught.value.body["rejected"][0]["reason"] == "unknown_type"


def test_503_is_retried_then_raised_and_a_retry_after_recovery_succeeds(api, seeded, serving_redis):
    user = a_user(seeded)
    statuses: list[int] = []

    def seen(response: httpx.Response) -> None:
        statuses.append(response.status_code)

    with (httpx.Client(timeout=10, event_hooks={"response": [seen]}) as http,
          P13nClient(api.url, "key-shop", retries=2, backoff=FAST, http_client=http) as p13n):
        assert p13n.get_user(user).user_id == user
        serving_redis.kill()
        try:
            statuses.clear()
            with pytest.raises(ServiceUnavailableError) as caught:
                p13n.get_user(user)
            error = caught.value
            assert (error.status, error.code, error.attempts) == (503, "store_unavailable", 3)
            assert statuses == [503, 503, 503] and "Redis unavailable" in error.message
        finally:
            if serving_redis.pid is None:
                serving_redis.start()

    serving_redis.kill()
    restarted: list[int] = []

    def restart_on_first_503(response: httpx.Response) -> None:
        if response.status_code == 503 and not restarted:
            serving_redis.start()  # returns once Redis answers; Serve reconnects on a later attempt
            restarted.append(1)

    try:
        with (httpx.Client(timeout=10, event_hooks={"response": [restart_on_first_503]}) as http,
              P13nClient(api.url, "key-shop", retries=40, backoff=Backoff(base_s=0.1, max_s=0.5),
                         http_client=http) as p13n):
            assert p13n.get_user(user).user_id == user  # after at least one 503, retried until Redis is back
        assert restarted
    finally:
        if serving_redis.pid is None:
            serving_redis.start()


def test_async_client(api, seeded):
    user = a_user(seeded)

    async def calls():
        async with AsyncP13nClient(api.url, "key-shop", retries=1, backoff=FAST) as p13n:
            ranked, profile = await asyncio.gather(p13n.score(user, ["a", "b"], k=1), p13n.get_user(user))
            assert len(ranked.items) == 1 and profile.user_id == user
            with pytest.raises(NotFoundError):
                await p13n.get_user("nobody-at-all")
            with pytest.raises(BadRequestError) as caught:
                await p13n.score(user, ["a", "a"])
            assert caught.value.param == "candidates[1].item_id"
            rewritten = await p13n.rewrite(user, prompt="gift ideas?")
            assert rewritten.messages[-1] == {"role": "user", "content": "gift ideas?"}
        async with AsyncP13nClient(api.url, "wrong", retries=1) as stranger:
            with pytest.raises(AuthenticationError):
                await stranger.delete_user(user)

    asyncio.run(calls())


# --- transport failures and Retry-After (no Serve needed) ---------------------------------------


def test_a_refused_connection_is_retried_then_raised():
    with P13nClient(f"http://127.0.0.1:{free_port()}", "k", retries=2, backoff=FAST) as p13n:
        with pytest.raises(APIConnectionError) as caught:
            p13n.score("u", ["a"])
    assert caught.value.status is None and caught.value.attempts == 3
    assert not isinstance(caught.value, APITimeoutError)


def test_a_silent_server_times_out_and_only_idempotent_calls_are_retried():
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:  # accepts (the kernel does), never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with P13nClient(url, "k", timeout=0.3, retries=1, backoff=FAST) as p13n:
            with pytest.raises(APITimeoutError) as caught:
                p13n.get_user("u")
            assert caught.value.attempts == 2
            with pytest.raises(APITimeoutError) as caught:
                p13n.delete_user("u")  # the first DELETE may have happened: not sent again
            assert caught.value.attempts == 1


class _Scripted(BaseHTTPRequestHandler):
    """Answers from ``server.script``: a list of (status, headers, body), one per request, the last repeated."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        status, headers, body = self.server.script[min(self.server.seen, len(self.server.script) - 1)]
        self.server.seen += 1
        self.server.times.append(time.monotonic())
        self.send_response(status)
        for name, value in {"content-type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    server.seen, server.script, server.times = 0, [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


UNAVAILABLE = json.dumps({"error": {"message": "busy", "type": "service_unavailable", "param": None,
                                    "code": "store_unavailable"}}).encode()  # fmt: skip
OK = json.dumps({"items": [{"item_id": "a", "score": 1.0}], "degraded": [], "timings_ms": {"total": 1.0}}).encode()


def test_retry_after_is_honoured_instead_of_the_backoff(scripted):
    scripted.script = [(503, {"retry-after": "0.3"}, UNAVAILABLE)] * 2 + [(200, {}, OK)]
    url = f"http://127.0.0.1:{scripted.server_address[1]}"
    with P13nClient(url, "k", retries=3, backoff=Backoff(base_s=5.0, max_s=5.0), seed=1) as p13n:
        assert p13n.score("u", ["a"]).items[0].item_id == "a"
    gaps = [b - a for a, b in zip(scripted.times, scripted.times[1:])]
    assert scripted.seen == 3 and all(0.3 <= gap < 1.0 for gap in gaps), gaps


def test_a_retry_after_beyond_the_backoff_cap_and_429_are_raised_at_once(scripted):
    url = f"http://127.0.0.1:{scripted.server_address[1]}"
    scripted.script = [(503, {"retry-after": "120"}, UNAVAILABLE)]
    with P13nClient(url, "k", retries=3, backoff=FAST) as p13n:
        with pytest.raises(ServiceUnavailableError) as caught:
            p13n.score("u", ["a"])
        assert (caught.value.attempts, caught.value.retry_after, scripted.seen) == (1, 120.0, 1)
        scripted.seen = 0
        limited = json.dumps({"error": {"message": "slow down", "type": "rate_limit_error", "param": None,
                                        "code": "rate_limited"}}).encode()  # fmt: skip
        scripted.script = [(429, {"retry-after": "0.05"}, limited)]
        with pytest.raises(RateLimitError) as caught:
            p13n.score("u", ["a"])
        error = caught.value
        assert (error.status, error.code, error.retry_after, error.attempts, scripted.seen) == (429, "rate_limited",
                                                                                                0.05, 1, 1)  # fmt: skip


def test_the_readme_example_runs(api, capsys):
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    example = readme.split("## Python client", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    target = '"http://127.0.0.1:8000", api_key="p13n-dev-key"'
    assert target in example
    exec(compile(example.replace(target, f'"{api.url}", api_key="key-shop"'), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "unknown_user" in printed and "no user 'a/b?c' in tenant 'shop'" in printed
    assert "422 candidates[1].item_id duplicate_candidate" in printed
