"""The HTTP API against a hostile client, over raw sockets: compressed bodies, odd or doubled
Authorization headers, bodies that stall mid-way, and an upstream LLM that dies mid-stream.

Each answer is the error shape of DESIGN §7 naming the problem, never a hang or a dropped connection.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import time
import zlib
from urllib.parse import urlsplit

import pytest

from p13n.devstack import wait_until
from tests.serving.test_requests import assert_error

pytestmark = pytest.mark.slow

SCORE = json.dumps({"user_id": "nobody", "candidates": [{"item_id": "a"}]}).encode()
CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
BOMB = gzip.compress(b"0" * (50 * 1024 * 1024))  # 50 MB of zeros in ~50 KB: must never be inflated


def post(url: str, path: str, body: bytes, headers: list[tuple[str, str]]) -> tuple[int, dict]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        for name, value in [*headers, ("Content-Length", str(len(body)))]:
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


AUTH = ("Authorization", "Bearer key-shop")


@pytest.mark.parametrize(
    ("path", "body", "encoding"),
    [("/v1/score", gzip.compress(SCORE), "gzip"), ("/v1/score", zlib.compress(SCORE), "deflate"),
     ("/v1/events", BOMB, "gzip"), ("/v1/chat/completions", gzip.compress(CHAT), "gzip"),
     ("/v1/rewrite", b"{}", "br")],
    ids=["score-gzip", "score-deflate", "events-gzip-bomb", "chat-gzip", "rewrite-br"],
)  # fmt: skip
def test_compressed_bodies_get_415_naming_the_encoding(api, fake_llm, path, body, encoding):
    forwarded = len(fake_llm.requests)
    status, answer = post(api.url, path, body, [AUTH, ("Content-Encoding", encoding)])
    assert status == 415, answer
    error = assert_error(answer, 415, param=None, code="unsupported_content_encoding")
    assert repr(encoding) in error["message"], error
    assert len(fake_llm.requests) == forwarded


def test_identity_content_encoding_is_read_as_is(api):
    status, answer = post(api.url, "/v1/score", SCORE, [AUTH, ("Content-Encoding", "identity")])
    assert status == 200 and [i["item_id"] for i in answer["items"]] == ["a"], answer


@pytest.mark.parametrize("value", ["Bearer\tkey-shop", "Bearer   key-shop  ", "bearer key-shop", "BEARER key-shop"])
def test_bearer_with_any_whitespace_or_case_is_accepted(api, value):
    status, answer = post(api.url, "/v1/score", SCORE, [("Authorization", value)])
    assert status == 200, answer


@pytest.mark.parametrize("value", ["Basic a2V5LXNob3A=", "Bearer", "Bearer   ", "key-shop"])
def test_a_malformed_authorization_header_is_named(api, value):
    status, answer = post(api.url, "/v1/score", SCORE, [("Authorization", value)])
    assert status == 401, answer
    assert_error(answer, 401, param="authorization", code="malformed_authorization")


@pytest.mark.parametrize("keys", [("key-shop", "key-news"), ("nope", "key-shop"), ("key-shop", "key-shop")])
def test_two_authorization_headers_are_refused(api, keys):
    """Which of two keys acts would depend on the proxy in front; p13n picks neither."""
    status, answer = post(api.url, "/v1/score", SCORE, [("Authorization", f"Bearer {k}") for k in keys])
    assert status == 400, answer
    assert_error(answer, 400, param="authorization", code="duplicate_authorization")


def test_a_stalled_body_gets_408_and_blocks_no_other_request(api):
    """Slowloris: a client that declares 1000 bytes and stops after 7 is answered when
    ``serving.body_timeout_s`` (2 s in these tests) passes without bytes; others are served meanwhile."""
    parts = urlsplit(api.url)
    stalled = socket.create_connection((parts.hostname, parts.port), timeout=15)
    try:
        stalled.sendall(b"POST /v1/score HTTP/1.1\r\nHost: p13n\r\nAuthorization: Bearer key-shop\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"user_")  # fmt: skip
        started = time.monotonic()
        assert api.call("POST", "/v1/score", json.loads(SCORE), timeout=5)[0] == 200
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = stalled.recv(65536)
            if not chunk:
                break
            answer += chunk
        waited = time.monotonic() - started
    finally:
        stalled.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert_error(json.loads(body), 408, param=None, code="body_timeout")
    assert 1.5 < waited < 12, waited


def test_an_upstream_dying_mid_stream_ends_the_stream_with_an_error_event(api, fake_llm):
    """The status line (200) is already sent when the upstream dies: the client gets the chunks it had, an SSE
    error event in the error shape, and ``[DONE]`` — a complete HTTP answer, not a cut connection."""
    fake_llm.die_after_chunks = 1
    try:
        parts = urlsplit(api.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        conn.request("POST", "/v1/chat/completions", body, {"Authorization": "Bearer key-shop"})
        response = conn.getresponse()
        status, stream = response.status, response.read()  # IncompleteRead if the stream were cut
        conn.close()
    finally:
        fake_llm.die_after_chunks = None
    assert status == 200
    events = [e.removeprefix(b"data: ") for e in stream.split(b"\n\n") if e.strip()]
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "echo: "  # what came before is kept
    assert events[-1] == b"[DONE]", events
    error = assert_error(json.loads(events[-2]), 502, param=None, code="upstream_unavailable")
    assert "mid-stream" in error["message"], error


@pytest.mark.parametrize(
    ("body", "param"),
    [(b'{"model": "m", "n": ' + b"9" * 5000 + b', "messages": []}', "n"),
     (b'{"events": [{"event_id": "e", "value": -' + b"1" * 5000 + b"}]}", "events[0].value"),
     (b'{"a": {"b": [1, 1e999]}}', "a.b[1]")],
    ids=["int-5000-digits", "negative-int-5000-digits", "float-1e999"],
)  # fmt: skip
def test_numbers_out_of_range_in_free_form_bodies_are_named(body, param):
    """Chat and events bodies are free-form JSON: a number msgspec cannot hold is still located by its path."""
    from p13n.errors import BadRequest
    from serving.schemas import decode_json

    with pytest.raises(BadRequest) as caught:
        decode_json(body)
    assert caught.value.param == param and param in str(caught.value), (caught.value.param, str(caught.value))


def test_an_upstream_that_never_answers_gets_502_after_the_configured_silence(api, fake_llm):
    """``serving.upstream_timeout_s`` is 3 s in these tests; the fake LLM thinks for 6."""
    recorded = len(fake_llm.requests)
    fake_llm.delay_s = 6.0
    try:
        started = time.monotonic()
        status, answer, _ = api.call("POST", "/v1/chat/completions", json.loads(CHAT), timeout=10)
        waited = time.monotonic() - started
    finally:
        fake_llm.delay_s = 0.0
        # the fake records the request when it is done thinking: let it, so later tests count their own
        wait_until(lambda: len(fake_llm.requests) > recorded, timeout=15, what="the slow fake LLM answer")
    assert status == 502, answer
    error = assert_error(answer, 502, param=None, code="upstream_unavailable")
    assert "did not answer within 3 s" in error["message"], error
    assert 2.5 < waited < 6, waited
