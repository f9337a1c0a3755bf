"""The consumer loop against poison pills, on the real embedded broker and Redis: one record of every
failure kind between good ones — each in the DLQ with its reason and detail, every good one applied,
the loop alive."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from features.core.events import parse_item
from features.redis.store import RedisStore
from p13n.clock import now_ms as wall_ms
from p13n.devstack import ensure_topics, wait_until
from stream.consumer import ConsumerLoop
from stream.processing import BatchProcessor
from tests.stream.replay import assert_matches_replay, valid_events
from tests.stream.test_consumer import applied_events, read_dlq, synthetic_lines
from tests.stream.test_processing import exploding, invalid_utf8_reason, poisoned

pytestmark = [pytest.mark.slow, pytest.mark.config(state={"covisit_top_m": 1000})]

CASES = Path(__file__).resolve().parents[2].parent / "shared" / "cases" / "hardening"


def send_raw(config, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    """Send (key, value) records as they are (the bytes of a poison pill need no valid JSON)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=config.kafka.bootstrap, acks="all")
    try:
        for future in [producer.send(topic, key=key, value=value) for key, value in records]:
            future.get(timeout=30)
    finally:
        producer.close()


def key_of(value: bytes) -> bytes:
    """The key a producer gives the record: ``tenant/user_id`` of its payload (``default/u`` for the bad ones)."""
    try:
        obj = json.loads(value)
        return f"{obj.get('tenant', 'default')}/{obj['user_id']}".encode() if isinstance(obj["user_id"], str) else b"default/u"
    except (ValueError, KeyError, TypeError):
        return b"default/u"


def event(event_id: str, **fields) -> bytes:
    now = wall_ms()
    return json.dumps({"event_id": event_id, "user_id": "u", "type": "view", "timestamp": now - 60_000,
                       "item_id": "i", **fields}).encode()  # fmt: skip


# the poisoned user's own fold overflows float32 (features/core/decay.py); this test is about the loop
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_every_kind_of_poison_pill_is_dead_lettered_and_the_loop_stays_alive(config, redis_client, consumer_encoder):
    store = RedisStore(redis_client, config, dim=consumer_encoder.dimension)
    ten_days = 10 * 86_400_000
    reason, detail = invalid_utf8_reason()
    bad_events = {
        b"{definitely not json": ("invalid_json", ""),
        b"": ("empty", ""),
        b"[1, 2]": ("not_an_object", ""),
        event("x1", user_id=["u"]): ("wrong_type", ""),
        event("x2", item_id="i" * 300): ("too_long", ""),
        event("x3", type="beam"): ("unknown_type", ""),
        event("x4", timestamp="soon"): ("bad_timestamp", ""),
        event("x5", timestamp=wall_ms() + ten_days): ("future_timestamp", ""),
        event("x6", type="rating"): ("missing_field", "value"),
        event("x7", tenant="no spaces allowed"): ("invalid_value", ""),
        (CASES / "event-invalid-utf8.bin").read_bytes(): (reason, detail),
        event("boom-event"): ("decode_error", "RuntimeError: decoder bug on boom-event"),  # injected decoder bug
        event("poison", user_id="poisoned", type="rating", value=5, item_id="poison-item"): (
            "store_rejected", "non-finite popularity delta for item poison-item"),  # Redis refuses its globals call
    }  # fmt: skip
    bad_items = {
        b'{"item_id": 5}': ("wrong_type", ""),
        (CASES / "item-invalid-utf8.bin").read_bytes(): (reason, detail),
        b'{"item_id": "boom-item", "text": "x"}': ("decode_error", "RuntimeError: decoder bug on boom-item"),
    }
    good = synthetic_lines(users=10, per_user=12, seed=31)
    good_items = [json.dumps({"item_id": f"shelf-{n}", "text": f"Shelf number {n}"}).encode() for n in range(5)]
    ensure_topics(config.kafka.bootstrap, {config.kafka.events_topic: 4, config.kafka.items_topic: 4,
                                           config.kafka.dlq_topic: 1})  # fmt: skip
    events_out = good[:30] + list(bad_events) + good[30:]
    send_raw(config, config.kafka.events_topic, [(key_of(value), value) for value in events_out])
    send_raw(config, config.kafka.items_topic, [(None, v) for v in good_items[:2] + list(bad_items) + good_items[2:]])

    decode_event = exploding(poisoned, b'"boom-event"')
    processor = BatchProcessor(store, config, consumer_encoder.encode, parse_event=decode_event,
                               parse_item=exploding(parse_item, b'"boom-item"'))  # fmt: skip
    loop = ConsumerLoop(config, processor)
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            loop.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test below, not swallowed
            crashed.append(exc)
            raise

    thread = threading.Thread(target=run, name="consumer-loop", daemon=True)
    thread.start()
    events = valid_events(good)
    users = sorted({(e.tenant, e.user_id) for e in events})
    expected = len({(e.tenant, e.user_id, e.event_id) for e in events})

    def done() -> bool:
        assert thread.is_alive(), f"the consumer loop died: {crashed!r}"
        return applied_events(store, users) >= expected and set(store.get_items("default", [
            f"shelf-{n}" for n in range(5)])) == {f"shelf-{n}" for n in range(5)}  # fmt: skip

    try:
        wait_until(done, timeout=90, what="every good record applied", interval=0.2)
        letters = read_dlq(config, expected=len(bad_events) + len(bad_items))
        got = {r.value: {k: v.decode() for k, v in r.headers} for r in letters}
        wanted = {**bad_events, **bad_items}
        assert sorted(got) == sorted(wanted)
        for value, headers in got.items():
            assert headers["p13n-reason"] == wanted[value][0], (value, headers)
            assert wanted[value][1] in headers["p13n-detail"] and headers["p13n-detail"], (value, headers)
        topics = {headers["p13n-source-topic"] for headers in got.values()}
        assert topics == {config.kafka.events_topic, config.kafka.items_topic}
        assert thread.is_alive() and not crashed
        assert applied_events(store, users) == expected
        assert_matches_replay(store, events, consumer_encoder.encode)
    finally:
        loop.stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive() and not crashed
