"""Property-based: whatever a client sends to any endpoint, a real Serve instance answers it within 10 s,
never with a 5xx, and every 4xx says what is wrong (OpenAI's error shape, a message, and the field or reason).

Bodies are drawn near the real shapes (each field valid or any JSON value), as any JSON, and as raw bytes.
Derandomized and bounded (``EXAMPLES`` per endpoint) so the suite is reproducible and fast.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serving.conftest import KEYS

pytestmark = pytest.mark.slow

EXAMPLES = 100
CLIENT_TIMEOUT_S = 10.0
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
ERROR_TYPES = {"invalid_request_error", "authentication_error", "permission_error", "not_found_error",
               "rate_limit_error"}  # fmt: skip

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
any_json = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                             max_size=4), max_leaves=12)  # fmt: skip
ids = st.text(min_size=1, max_size=12)


def maybe(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly the valid shape, sometimes any JSON value in its place."""
    return st.one_of(valid, valid, valid, any_json)


def shaped(required: dict, optional: dict) -> st.SearchStrategy:
    return maybe(st.fixed_dictionaries({k: maybe(v) for k, v in required.items()},
                                       optional={k: maybe(v) for k, v in optional.items()}))  # fmt: skip


text_part = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "refusal"]), "text": maybe(st.text())})
content = st.none() | st.text(max_size=40) | st.lists(maybe(text_part), max_size=3)
message = shaped({"role": st.sampled_from(["system", "user", "assistant", "tool", "developer"]), "content": content},
                 {"name": st.text(max_size=8), "tool_call_id": ids, "tool_calls": st.lists(any_json, max_size=2)})
messages = st.lists(message, min_size=0, max_size=4)
candidate = shaped({"item_id": ids}, {"text": st.text(max_size=30)})
BODIES = {
    "/v1/score": shaped({"user_id": ids, "candidates": st.lists(candidate, max_size=6)},
                        {"k": st.integers(-2, 8) | st.integers(), "budget_ms": st.floats(-1, 200) | st.floats(), "explain": st.booleans(),
                         "tenant": st.sampled_from(["shop", "news", "../x"])}),
    "/v1/rewrite": shaped({"user_id": ids}, {"prompt": st.text(max_size=60), "messages": messages,
                                             "max_context_tokens": st.integers(0, 600) | st.integers(),
                                             "budget_ms": st.floats(-1, 200),
                                             "tenant": st.sampled_from(["shop", "news"])}),
    "/v1/chat/completions": shaped({"model": st.just("m"), "messages": messages},
                                   {"user": ids, "stream": st.booleans(), "temperature": st.floats(0, 2)}),
    "/v1/events": shaped({"events": st.lists(shaped(
        {"event_id": ids, "user_id": ids, "type": st.sampled_from(["view", "click", "rating", "message", "teleport"]),
         "timestamp": st.integers(0, 2**62) | st.just("2026-11-29T10:00:00Z")},
        {"item_id": ids, "value": st.floats(allow_nan=False), "text": st.text(max_size=30),
         "tenant": st.sampled_from(["shop", "news"])}), max_size=3)}, {}),
}  # fmt: skip


def send(api, method: str, path: str, data: bytes | None, key: str | None = "key-shop") -> tuple[int, bytes]:
    """One request; a client timeout of 10 s propagates and fails the example (a hang is a failure)."""
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    request = urllib.request.Request(api.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def assert_well_answered(status: int, payload: bytes) -> dict | None:
    assert status < 500, payload[:500]
    if status < 400:
        return None
    answer = json.loads(payload)
    error = answer["error"]
    assert error["type"] in ERROR_TYPES and error["message"].strip(), answer
    assert error["param"] or error["code"], answer
    return error


@pytest.mark.parametrize("path", list(BODIES))
def test_any_body_near_the_shape_is_answered_without_5xx(api, path):
    @PROPERTY
    @given(body=BODIES[path], key=st.sampled_from(["key-shop", "key-shop", "key-shop", "key-news", None]))
    def check(body, key):
        assert_well_answered(*send(api, "POST", path, json.dumps(body).encode(), key))

    check()


@pytest.mark.parametrize("path", list(BODIES))
def test_any_bytes_are_answered_without_5xx(api, path):
    @PROPERTY
    @given(raw=st.binary(max_size=200) | any_json.map(lambda v: json.dumps(v).encode()))
    def check(raw):
        assert_well_answered(*send(api, "POST", path, raw))

    check()


def test_any_user_id_is_reachable_by_get_and_delete(api):
    """Every id of 1–256 characters, percent-encoded, reaches that user: unknown ones answer 404 naming it."""

    @PROPERTY
    @given(user_id=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=256),
           method=st.sampled_from(["GET", "DELETE"]))  # fmt: skip
    def check(user_id, method):
        status, payload = send(api, method, "/v1/users/" + quote(user_id, safe=""), None)
        error = assert_well_answered(status, payload)
        assert status == 404 and error["code"] == "user_not_found" and error["param"] == "user_id", (user_id, error)
        assert repr(user_id) in error["message"]

    check()


def test_any_path_and_method_is_answered_without_5xx(api):
    @PROPERTY
    @given(path=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40),
           method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH"]), key=st.sampled_from([*KEYS, "nope", None]))  # fmt: skip
    def check(path, method, key):
        target = "/" + quote(path, safe="/%?=&")
        assert_well_answered(*send(api, method, target, b"{}" if method in ("POST", "PUT", "PATCH") else None, key))

    check()
