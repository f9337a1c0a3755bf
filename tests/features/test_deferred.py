"""Commands sent now and acknowledged later, against a real server (raw replies: no redis-py response callbacks)."""

from __future__ import annotations

from features.redis.deferred import DeferredPipeline


def test_replies_come_back_in_order_with_errors_in_place(redis_client):
    key = "p13n-test:deferred"
    with DeferredPipeline(redis_client) as pipe:
        pipe.send([("SET", key, b"\x00\xff" * 3000), ("GET", key)])
        pipe.send([("INCR", key), ("DEL", key)])
        got = pipe.replies()
    assert got[:2] == [b"OK", b"\x00\xff" * 3000]
    assert "not an integer" in str(got[2])
    assert got[3] == 1
