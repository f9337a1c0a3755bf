"""Request shapes and limits against a real Serve instance: no 500, ever; every error names the problem.

The failing inputs of the hardening issue are kept in ``tests/serving/cases/`` and each is asserted here
with the answer it must get.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from p13n.clock import now_ms as wall_ms
from stream.processing import BatchProcessor, records_from_lines
from tests.serving.test_api import a_user

pytestmark = pytest.mark.slow

CASES = Path(__file__).parent / "cases"
ERROR_TYPES = {"invalid_request_error", "authentication_error", "permission_error", "not_found_error",
               "rate_limit_error", "service_unavailable"}  # fmt: skip


def case(name: str) -> dict:
    return json.loads((CASES / name).read_text())


def assert_error(answer: dict, status: int, *, param: str | None = "-", code: str | None = None) -> dict:
    """The OpenAI error shape of DESIGN §7, naming the problem."""
    assert set(answer) == {"error"}, answer
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["message"] and error["type"] in ERROR_TYPES and error["code"], error
    if param != "-":
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


def chat(messages, user: str = "u1") -> dict:
    return {"model": "m", "user": user, "messages": messages}


NULL_PART = case("rewrite-null-text-part.json")["messages"]
NUMBER_PART = case("rewrite-number-text-part.json")["messages"]
DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "code"),
    [
        ("/v1/rewrite", case("rewrite-null-text-part.json"), 422, "messages[0].content[0].text", "invalid_field"),
        ("/v1/rewrite", case("rewrite-number-text-part.json"), 422, "messages[0].content[0].text", "invalid_field"),
        ("/v1/chat/completions", chat(NULL_PART), 422, "messages[0].content[0].text", "invalid_field"),
        ("/v1/chat/completions", chat(NUMBER_PART), 422, "messages[0].content[0].text", "invalid_field"),
        ("/v1/chat/completions", case("chat-string-messages.json"), 422, "messages[0]", "invalid_field"),
        ("/v1/chat/completions", chat([None]), 422, "messages[0]", "invalid_field"),
        ("/v1/chat/completions", chat([{"role": 5, "content": "hi"}]), 422, "messages[0].role", "invalid_field"),
        ("/v1/chat/completions", chat([{"role": "user", "content": {"text": "hi"}}]), 422, "messages[0].content",
         "invalid_field"),
        ("/v1/chat/completions", chat([{"role": "user", "content": ["hi"]}]), 422, "messages[0].content[0]",
         "invalid_field"),
        ("/v1/chat/completions", chat([]), 422, "messages", "invalid_field"),
        ("/v1/chat/completions", {**chat([{"role": "user", "content": "hi"}]), "user": 7}, 422, "user", "invalid_field"),
        ("/v1/chat/completions", [1, 2], 422, None, "invalid_field"),
        ("/v1/rewrite", {"user_id": "u1", "messages": ["hi"]}, 422, "messages[0]", "invalid_field"),
        ("/v1/rewrite", {"user_id": "u1", "messages": [None]}, 422, "messages[0]", "invalid_field"),
        ("/v1/rewrite", {"user_id": "u1", "messages": []}, 422, "messages", "invalid_field"),
        ("/v1/score", case("score-duplicate-candidates.json"), 422, "candidates[1].item_id", "duplicate_candidate"),
        ("/v1/score", [], 422, None, "invalid_field"),
    ],
)
def test_bad_bodies_get_4xx_naming_the_field(api, fake_llm, path, body, status, param, code):
    forwarded = len(fake_llm.requests)
    got, answer, _ = api.call("POST", path, body)
    assert got == status, answer
    assert_error(answer, status, param=param, code=code)
    assert len(fake_llm.requests) == forwarded, "nothing invalid reaches the upstream LLM"


def test_duplicate_candidates_are_rejected_naming_the_id(api):
    got, answer, _ = api.call("POST", "/v1/score", case("score-duplicate-candidates.json"))
    assert got == 422
    assert "'a'" in answer["error"]["message"] and "candidates[0]" in answer["error"]["message"]


@pytest.mark.parametrize(
    ("path", "raw", "status", "param", "code"),
    [
        ("/v1/rewrite", b'{"user_id": "u\xff\xfe", "prompt": "hi"}', 400, "user_id", "invalid_utf8"),
        ("/v1/score", b'{"user_id": "u", "candidates": [{"item_id": "i\xc3"}]}', 400, "candidates[0].item_id",
         "invalid_utf8"),
        ("/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": "caf\xe9"}]}', 400,
         "messages[0].content", "invalid_utf8"),
        ("/v1/events", b'{"events": [{"event_id": "e", "user_id": "u\xff"}]}', 400, "events[0].user_id", "invalid_utf8"),
        ("/v1/events", b'{"u\xff": 1}', 400, "u\\xff", "invalid_utf8"),
        ("/v1/score", DEEP, 422, None, "invalid_field"),  # typed bodies stop at the first level
        ("/v1/rewrite", DEEP, 422, None, "invalid_field"),
        ("/v1/score", b'{"user_id": "u", "candidates": ' + DEEP + b"}", 422, "candidates[0]", "invalid_field"),
        ("/v1/rewrite", b'{"user_id": "u", "messages": [{"role": "user", "content": ' + DEEP + b"}]}", 400, None,
         "too_deep"),
        ("/v1/chat/completions", DEEP, 400, None, "too_deep"),
        ("/v1/events", DEEP, 400, None, "too_deep"),
        ("/v1/events", b'{"events": [{"value": 1e400}]}', 422, "events[0].value", "invalid_field"),
        ("/v1/events", b'{"events": ["\\ud800"]}', 400, None, "invalid_json"),
        ("/v1/events", b"", 400, None, "empty_body"),
    ],
)
def test_bodies_that_are_not_json_get_400(api, path, raw, status, param, code):
    got, answer, _ = api.call("POST", path, raw=raw)
    assert got == status, answer
    assert_error(answer, status, param=param, code=code)


@pytest.mark.parametrize(
    ("method", "path", "key", "status", "code"),
    [
        ("POST", "/v1/score", None, 401, "missing_api_key"),
        ("POST", "/v1/rewrite", "nope", 401, "invalid_api_key"),
        ("POST", "/v1/chat/completions", None, 401, "missing_api_key"),
        ("POST", "/v1/events", "nope", 401, "invalid_api_key"),
        ("GET", "/v1/users/u1", None, 401, "missing_api_key"),
        ("DELETE", "/v1/users/u1", "nope", 401, "invalid_api_key"),
        ("GET", "/v1/users/u1?tenant=news", "key-shop", 403, "wrong_tenant"),
        ("GET", "/v1/score", "key-shop", 405, "method_not_allowed"),
        ("PUT", "/v1/users/u1", "key-shop", 405, "method_not_allowed"),
        ("GET", "/v2/nothing", "key-shop", 404, "not_found"),
        ("GET", "/v1/users/", "key-shop", 422, "invalid_field"),
        ("GET", "/v1/users/a/b", "key-shop", 422, "invalid_field"),
        ("GET", "/v1/users/%FF", "key-shop", 400, "invalid_utf8"),
    ],
)
def test_auth_and_routing_errors_have_the_error_shape(api, method, path, key, status, code):
    got, answer, _ = api.call(method, path, {"user_id": "u1"} if method == "POST" else None, key=key)
    assert got == status, answer
    assert_error(answer, status, code=code)


def without_context(messages: list[dict]) -> list[dict]:
    return [m for m in messages if not (m["role"] == "system" and "<user_context>" in str(m.get("content")))]


def test_rewrite_and_chat_pass_every_message_field_through(api, seeded, fake_llm):
    user = a_user(seeded)
    messages = case("rewrite-tool-calls.json")["messages"]
    messages[0] = {**messages[0], "name": "alice"}
    messages.append({"role": "assistant", "content": None, "refusal": "no", "audio": {"id": "a1"}})
    messages.append({"role": "user", "content": [{"type": "text", "text": "and"}, {"type": "image_url",
                                                   "image_url": {"url": "https://x/y.png", "detail": "low"}}]})  # fmt: skip
    status, body, _ = api.call("POST", "/v1/rewrite", {"user_id": user, "messages": messages, "budget_ms": 5000})
    assert status == 200, body
    assert len(body["messages"]) == len(messages) + 1, "the context is added"
    assert without_context(body["messages"]) == messages  # tool_calls, tool_call_id, name, null content, parts kept
    kept = without_context(body["messages"])
    assert kept[1]["tool_calls"][0]["function"] == {"name": "weather", "arguments": "{}"} and kept[1]["content"] is None
    assert kept[2]["tool_call_id"] == "call_1" and kept[0]["name"] == "alice"
    status, answer, _ = api.call("POST", "/v1/chat/completions", chat(messages, user))
    assert status == 200, answer
    sent = fake_llm.requests[-1]["messages"]
    assert len(sent) == len(messages) + 1 and without_context(sent) == messages


def post_chunked(url: str, path: str, chunks, key: str = "key-shop") -> tuple[int, dict]:
    """POST with ``Transfer-Encoding: chunked`` (no Content-Length); the server may answer before the end."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Authorization", f"Bearer {key}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        try:
            for chunk in chunks:
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered 413 and closed: the answer is still there to read
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def big_body(path: str, size: int = 6 * 1024 * 1024):
    """A valid JSON body of ``size`` bytes for ``path``, in 64 KB chunks."""
    filler = b"x" * (64 * 1024)
    heads = {"/v1/chat/completions": b'{"model": "m", "user": "u1", "messages": [{"role": "user", "content": "',
             "/v1/rewrite": b'{"user_id": "u1", "prompt": "', "/v1/score": b'{"user_id": "u1", "candidates": [], "x": "',
             "/v1/events": b'{"event_id": "e", "user_id": "u", "type": "message", "timestamp": 1, "text": "'}  # fmt: skip
    tail = b'"}]}' if path == "/v1/chat/completions" else b'"}'
    yield heads[path]
    for _ in range(size // len(filler)):
        yield filler
    yield tail


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/rewrite", "/v1/score", "/v1/events"])
def test_chunked_bodies_over_the_limit_get_413_and_nothing_is_forwarded(api, fake_llm, path):
    forwarded = len(fake_llm.requests)
    status, answer = post_chunked(api.url, path, big_body(path))
    assert status == 413, answer
    error = assert_error(answer, 413, param=None, code="body_too_large")
    assert "stopped reading" in error["message"]  # the limit held on the bytes read, with no Content-Length
    assert len(fake_llm.requests) == forwarded


def test_a_small_chunked_body_is_read_in_full(api):
    body = json.dumps({"user_id": "nobody", "candidates": [{"item_id": f"i{n}"} for n in range(50)]}).encode()
    status, answer = post_chunked(api.url, "/v1/score", [body[n : n + 100] for n in range(0, len(body), 100)])
    assert status == 200 and len(answer["items"]) == 50


def test_chat_has_the_prompt_size_limit_of_rewrite(api, fake_llm):
    forwarded = len(fake_llm.requests)
    status, answer, _ = api.call("POST", "/v1/chat/completions", chat([{"role": "user", "content": "x" * 5000}]))
    assert status == 413  # serving.max_prompt_bytes is 4000 in these tests
    assert_error(answer, 413, param="messages", code="prompt_too_large")
    assert len(fake_llm.requests) == forwarded


# Ids /v1/events accepts that a path must still reach: reserved, escape and space characters, unicode
ODD_IDS = ["a/", "a/b", "/", "a?b=c", "a#frag", "a\\b", "100%", "a%2Fb", "%", "with space", "plus+sign", "semi;colon",
           "café", "用户", "🎉", "tab\there", "nul\x00", ".", "..", "a" * 256]  # fmt: skip


def test_every_user_id_events_accept_is_reachable_by_get_and_delete(api, seeded, consumer_encoder):
    now = wall_ms()
    events = [{"event_id": f"odd-{n}", "user_id": uid, "type": "view", "item_id": "odd-item", "timestamp": now - n,
               "item_text": "a plain mug", "tenant": "shop"} for n, uid in enumerate(["a", *ODD_IDS])]  # fmt: skip
    status, body, _ = api.call("POST", "/v1/events", {"events": events})
    assert status == 202 and body == {"accepted": len(events), "rejected": []}, body
    processor = BatchProcessor(seeded.store, seeded.config, consumer_encoder.encode, clock_ms=lambda: now)
    processor.process_events(records_from_lines([json.dumps(e).encode() for e in events], "events"))
    for uid in ODD_IDS:
        path = f"/v1/users/{quote(uid, safe='')}"
        status, profile, _ = api.call("GET", path)
        assert status == 200 and profile["user_id"] == uid, (uid, profile)
        assert api.call("DELETE", path)[:2] == (200, {"deleted": True, "user_id": uid}), uid
        assert seeded.store.load_user("shop", uid) is None, uid
        status, answer, _ = api.call("GET", path)
        assert status == 404 and assert_error(answer, 404, param="user_id", code="user_not_found"), uid
    assert api.call("GET", "/v1/users/a")[0] == 200, "deleting `a/` (a%2F) left user `a` alone"


def test_events_all_rejected_is_an_error_that_lists_each_rejection(api):
    status, answer, _ = api.call("POST", "/v1/events", {"events": [{"event_id": "e"}, "junk"]})
    assert status == 422
    error = answer["error"]
    assert error["param"] == "events[0]" and error["code"] and error["type"] == "invalid_request_error", answer
    assert answer["accepted"] == 0 and [r["index"] for r in answer["rejected"]] == [0, 1]


def test_events_endpoint_applies_the_configured_bounds(api):
    """event-rating-1e300.json and event-epoch-seconds.json posted to /v1/events are rejected with their reasons
    (the endpoint validates with the consumer's bounds, ``state.max_abs_value`` and ``state.min_timestamp_ms``)."""
    now_ms = wall_ms()
    huge = {**json.loads((CASES / "event-rating-1e300.json").read_text()), "timestamp": now_ms}
    seconds = json.loads((CASES / "event-epoch-seconds.json").read_text())
    good = {"event_id": "bounds-ok", "user_id": "u-bounds", "type": "click", "item_id": "i1", "timestamp": now_ms}
    status, answer, _ = api.call("POST", "/v1/events", {"events": [huge, seconds, good]})
    assert status == 202, answer
    assert answer["accepted"] == 1
    assert [(r["index"], r["reason"]) for r in answer["rejected"]] == [(0, "out_of_range"), (1, "timestamp_too_old")]
    assert "epoch seconds" in answer["rejected"][1]["detail"]
