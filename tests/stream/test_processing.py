"""The processing stage against a real Redis: dead letters, exactly-once effect, equality with a clean replay."""

from __future__ import annotations

import json
import random
from pathlib import Path

import msgspec
import pytest

from features.core.events import REJECTION_REASONS, Event, parse_event, parse_item
from features.redis.store import RedisStore
from features.datasets.synthetic import SyntheticSpec, generate
from stream.processing import BatchProcessor, Record
from tests.stream.replay import two_tenant_lines, NOW_MS, assert_matches_replay, records_for, valid_events


@pytest.fixture
def processor(redis_client, config, consumer_encoder) -> BatchProcessor:
    store = RedisStore(redis_client, config, dim=consumer_encoder.dimension)
    return BatchProcessor(store, config, consumer_encoder.encode, clock_ms=lambda: NOW_MS)


def synthetic_lines(users: int = 25, seed: int = 3) -> list[bytes]:
    """About ``users`` users' events, half of them in tenant "default", half in "acme" (same item ids,
    other item texts)."""
    return two_tenant_lines((users + 1) // 2, 30, seed)


BAD = {
    b"{not json": "invalid_json",
    b"": "empty",
    b"\x00\xff\x13garbage": "invalid_json",
    json.dumps({"event_id": "b1", "user_id": 7, "type": "view", "timestamp": 1, "item_id": "i"}).encode(): "wrong_type",
    json.dumps({"event_id": "b2", "user_id": "u", "type": "warp", "timestamp": 1, "item_id": "i"}).encode(): "unknown_type",
    json.dumps({"event_id": "b3", "user_id": "u" * 300, "type": "view", "timestamp": 1, "item_id": "i"}).encode(): "too_long",
    json.dumps({"event_id": "b4", "user_id": "u", "type": "view", "timestamp": NOW_MS + 10 * 86_400_000,
                "item_id": "i"}).encode(): "future_timestamp",  # fmt: skip
}


def test_bad_records_become_dead_letters_and_good_neighbours_are_applied(processor):
    good = synthetic_lines(users=5)
    lines = []
    for n, raw in enumerate(good):
        lines.append(raw)
        if n % 15 == 0:
            lines.extend(BAD)
    outcome = processor.process_events(records_for(lines, "events"))
    reasons = sorted(d.reason for d in outcome.dead_letters)
    assert reasons == sorted(list(BAD.values()) * len(range(0, len(good), 15)))
    for letter in outcome.dead_letters:
        assert letter.record.value in BAD and BAD[letter.record.value] == letter.reason and letter.detail
    events = valid_events(good)
    assert outcome.applied + outcome.duplicates == len(events)
    assert outcome.applied == len({(e.tenant, e.user_id, e.event_id) for e in events})
    assert_matches_replay(processor.store, events, processor.encode)


def test_replaying_any_batches_again_changes_nothing(processor, redis_client, config):
    lines = synthetic_lines()
    records = records_for(lines, "events")
    rnd = random.Random(7)
    position = 0
    while position < len(records):  # random batch sizes, and after each batch a re-delivery of a random span
        size = rnd.randint(1, 120)
        processor.process_events(records[position : position + size])
        start = rnd.randint(0, position + size)
        again = processor.process_events(records[start : position + size])
        assert again.applied == 0
        position += size
    assert_matches_replay(processor.store, valid_events(lines), processor.encode)


def test_overlapped_batches_with_redeliveries_equal_a_clean_replay(processor):
    """The consumer submits the next poll before the previous one is acknowledged (its users fold on
    the states still on their way); re-deliveries of unacknowledged spans are skipped all the same."""
    lines = synthetic_lines()
    records = records_for(lines, "events")
    rnd = random.Random(11)
    position, unsettled = 0, []
    while position < len(records):
        size = rnd.randint(1, 150)
        unsettled.append(processor.submit(records[position : position + size]))
        if rnd.random() < 0.3:  # a re-delivery, e.g. after a rebalance, while earlier batches are unsettled
            unsettled.append(processor.submit(records[rnd.randint(0, position + size) : position + size]))
        while len(unsettled) > rnd.randint(1, 2):
            processor.settle(unsettled.pop(0))
        position += size
    outcomes = [processor.settle(t) for t in unsettled]
    assert all(o.conflicts == 0 for o in outcomes)
    assert_matches_replay(processor.store, valid_events(lines), processor.encode)


def test_a_write_in_between_breaks_the_chain_and_both_batches_are_refolded(processor, redis_client, config,
                                                                          consumer_encoder):  # fmt: skip
    """Another writer (a zombie consumer) changes a user between two unacknowledged batches of this one:
    the first batch's write conflicts, the second's — chained on it — must too, and both are re-folded
    on what the other writer wrote."""
    lines = synthetic_lines(users=3)
    records = records_for(lines, "events")
    third = len(records) // 3
    processor.process_events(records[:third])  # this consumer now caches its users
    zombie = BatchProcessor(RedisStore(redis_client, config, dim=consumer_encoder.dimension), config,
                            consumer_encoder.encode, clock_ms=lambda: NOW_MS)  # fmt: skip
    zombie.process_events(records[third : 2 * third])  # unknown to `processor`: its cached versions are stale
    first = processor.submit(records[third : 2 * third])
    second = processor.submit(records[2 * third :])
    a, b = processor.settle(first), processor.settle(second)
    assert a.conflicts > 0 and b.conflicts > 0
    assert assert_matches_replay(processor.store, valid_events(lines), processor.encode) is None


def test_first_seen_items_are_embedded_once_and_catalog_attributes_kept(processor):
    processor.store.put_items("default", {"running-000": __import__("features.core.state", fromlist=["ItemInfo"]).ItemInfo(
        vector=None, attributes={"category": "running"}, text="Catalog text")})  # fmt: skip
    lines = [json.dumps({"event_id": f"e{n}", "user_id": f"u{n % 3}", "type": "click", "timestamp": NOW_MS - 1000 + n,
                         "item_id": "running-000", "item_text": "Fast running shoes"}).encode() for n in range(6)]  # fmt: skip
    first = processor.process_events(records_for(lines[:3], "events"))
    second = processor.process_events(records_for(lines[3:], "events")[:0] + [
        r.__class__(r.topic, r.partition, r.offset + 100, r.key, r.value) for r in records_for(lines[3:], "events")])  # fmt: skip
    assert (first.items_embedded, second.items_embedded) == (1, 0)
    stored = processor.store.get_items("default", ["running-000"])["running-000"]
    assert stored.attributes == {"category": "running"} and stored.text == "Catalog text" and stored.vector is not None
    user = processor.store.load_user("default", "u0")
    assert user.attribute_preferences(NOW_MS)["category=running"] > 0


def test_item_records_are_stored_deleted_and_dead_lettered(processor):
    from stream.processing import Record

    records = [
        Record("items", 0, 0, None, b'{"item_id": "a", "text": "Jazz vinyl", "attributes": {"genre": "jazz"}}'),
        Record("items", 0, 1, None, b'{"item_id": "b", "text": "Tent"}'),
        Record("items", 0, 2, None, b'{"item_id": 5}'),
        Record("items", 0, 3, None, b'{"item_id": "b", "deleted": true}'),
    ]
    outcome = processor.process_items(records)
    assert [d.reason for d in outcome.dead_letters] == ["wrong_type"]
    items = processor.store.get_items("default", ["a", "b"])
    assert set(items) == {"a"} and items["a"].attributes == {"genre": "jazz"} and items["a"].vector is not None


CASES = Path(__file__).resolve().parents[2].parent / "shared" / "cases" / "hardening"


def invalid_utf8_reason() -> tuple[str, str]:
    """What the invalid-UTF-8 case must become: ``invalid_utf8`` once parse_event names it, until then the
    processor's own safety net (``decode_error``, the exception in the detail)."""
    return ("invalid_utf8", "") if "invalid_utf8" in REJECTION_REASONS else ("decode_error", "UnicodeDecodeError")


def exploding(parse, marker: bytes):
    """``parse``, except that it raises on a record holding ``marker`` (a decoder bug)."""

    name = marker.decode().strip('"')

    def parse_or_raise(data: bytes, **kwargs):
        if marker in data:
            raise RuntimeError(f"decoder bug on {name}")
        return parse(data, **kwargs)

    return parse_or_raise


def test_any_exception_out_of_decoding_one_record_is_a_dead_letter(redis_client, config, consumer_encoder):
    store = RedisStore(redis_client, config, dim=consumer_encoder.dimension)
    processor = BatchProcessor(store, config, consumer_encoder.encode, clock_ms=lambda: NOW_MS,
                               parse_event=exploding(parse_event, b'"boom-event"'),
                               parse_item=exploding(parse_item, b'"boom-item"'))  # fmt: skip
    good = synthetic_lines(users=4)
    boom = json.dumps({"event_id": "boom-event", "user_id": "u", "type": "view", "timestamp": NOW_MS, "item_id": "i"}).encode()
    utf8 = (CASES / "event-invalid-utf8.bin").read_bytes()
    outcome = processor.process_events(records_for(good[:50] + [boom, utf8] + good[50:], "events"))
    letters = {d.record.value: d for d in outcome.dead_letters}
    assert set(letters) == {boom, utf8}
    assert (letters[boom].reason, letters[boom].detail) == ("decode_error", "RuntimeError: decoder bug on boom-event")
    reason, detail = invalid_utf8_reason()
    assert letters[utf8].reason == reason and detail in letters[utf8].detail
    assert_matches_replay(store, valid_events(good), processor.encode)

    items = [Record("items", 0, 0, None, b'{"item_id": "a", "text": "Jazz vinyl"}'),
             Record("items", 0, 1, None, b'{"item_id": "boom-item", "text": "x"}'),
             Record("items", 0, 2, None, (CASES / "item-invalid-utf8.bin").read_bytes()),
             Record("items", 0, 3, None, b'{"item_id": "b", "text": "Tent"}')]  # fmt: skip
    outcome = processor.process_items(items)
    assert [(d.record.offset, d.reason) for d in outcome.dead_letters] == [(1, "decode_error"), (2, reason)]
    assert outcome.dead_letters[0].detail == "RuntimeError: decoder bug on boom-item"
    assert outcome.applied == 2 and set(store.get_items("default", ["a", "b", "boom-item"])) == {"a", "b"}


def poisoned(data: bytes, **kwargs):
    """parse_event, with the rating of event ``poison`` raised to 1e300 after decoding (no decode bound
    can stop a value that arrives this way: the store must cope with it)."""
    event = parse_event(data, **kwargs)
    if isinstance(event, Event) and event.event_id == "poison":
        return msgspec.structs.replace(event, value=1e300)
    return event


# the poisoned user's own fold overflows float32 (features/core/decay.py); this test is about the globals script
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_a_script_call_redis_refuses_dead_letters_its_culprit_and_applies_the_rest(redis_client, config,
                                                                                   consumer_encoder):  # fmt: skip
    """A delta that turns non-finite in the globals script made Redis answer ``value is not a valid float``:
    the consumer died and the poll's popularity/co-visitation updates were lost. Now the refused call is
    retried, split, its culprit dead-lettered (store_rejected) and everything else applied; likewise for
    any refusal: a tenant whose popularity key holds a string (WRONGTYPE), a user whose stored version is garbage."""
    store = RedisStore(redis_client, config, dim=consumer_encoder.dimension)
    processor = BatchProcessor(store, config, consumer_encoder.encode, clock_ms=lambda: NOW_MS, parse_event=poisoned)
    redis_client.set(store.keys.popularity("broken"), "not a sorted set")
    redis_client.hset(store.keys.user("default", "blocked"), "v", "garbage")  # its write is refused
    good = synthetic_lines(users=6)
    poison = json.dumps({"event_id": "poison", "user_id": "poisoned", "type": "rating", "value": 5,
                         "timestamp": NOW_MS - 5000, "item_id": "poison-item"}).encode()  # fmt: skip
    broken = json.dumps({"event_id": "b1", "user_id": "b", "tenant": "broken", "type": "purchase",
                         "timestamp": NOW_MS - 5000, "item_id": "x"}).encode()  # fmt: skip
    blocked = [json.dumps({"event_id": f"k{n}", "user_id": "blocked", "type": "click", "timestamp": NOW_MS - 5000 + n,
                           "item_id": "sports-001"}).encode() for n in range(2)]  # fmt: skip
    records = records_for(good[:60] + [poison, blocked[0]] + good[60:] + [broken, blocked[1]], "events")
    # the poison shares its global call with good events of its partition: they must be applied all the same
    assert sum(r.partition == records_for([poison], "events")[0].partition for r in records) > 20
    outcome = processor.process_events(records)
    letters = {d.record.value: d for d in outcome.dead_letters}
    assert set(letters) == {poison, broken, *blocked}
    assert all(letters[b].reason == "store_rejected" and "not a number: garbage" in letters[b].detail for b in blocked)
    assert letters[poison].reason == "store_rejected"
    assert "non-finite popularity delta for item poison-item" in letters[poison].detail
    assert letters[broken].reason == "store_rejected" and "WRONGTYPE" in letters[broken].detail
    assert_matches_replay(store, valid_events(good), processor.encode)
    assert store.popularity("default", ["poison-item"], NOW_MS)[0] == 0


def conversation_lines(users: int = 6, turns: int = 40, seed: int = 5) -> list[bytes]:
    """Message events of a few users (repeated phrases among them), interleaved with clicks."""
    rng = random.Random(seed)
    phrases = ["thanks!", "I adopted a puppy named Biscuit", "we moved to Lisbon", "ok", "I love pottery classes",
               "my sister is a nurse", "see you tomorrow"]  # fmt: skip
    lines = []
    for n in range(users * turns):
        user = f"talker{n % users}"
        event = {"event_id": f"m{n}", "user_id": user, "type": "message", "timestamp": NOW_MS - 10**8 + n * 1000,
                 "text": f"{rng.choice(phrases)} {rng.randrange(8)}", "session_id": f"s{n // 50}"}  # fmt: skip
        if n % 7 == 0:
            event = {"event_id": f"c{n}", "user_id": user, "type": "click", "timestamp": NOW_MS - 10**8 + n * 1000,
                     "item_id": f"i{n % 5}", "item_text": f"item {n % 5}"}  # fmt: skip
        lines.append(json.dumps(event).encode())
    return lines


def test_messages_become_memories_written_with_the_state_exactly_once(processor, redis_client):
    lines = conversation_lines()
    records = records_for(lines, "events")
    rnd = random.Random(11)
    position, pending = 0, []
    while position < len(records):  # overlapped batches with re-deliveries, as the consumer submits them
        size = rnd.randint(1, 60)
        again = records[rnd.randint(0, position) : position]
        pending.append(processor.submit(records[position : position + size] + again))
        if len(pending) == 2:
            processor.settle(pending.pop(0))
        position += size
    for ticket in pending:
        processor.settle(ticket)
    events = valid_events(lines)
    assert_matches_replay(processor.store, events, processor.encode)
    key = processor.store.keys.user("default", "talker1")
    assert redis_client.hexists(key, "m") and redis_client.hexists(key, "s")
    memories = processor.store.read_memories([("default", "talker1")])[0]
    assert memories.mentions == sum(1 for e in events if e.user_id == "talker1" and e.type == "message")
    assert processor.store.delete_user("default", "talker1")
    assert not redis_client.exists(key)
    assert processor.store.read_memories([("default", "talker1")])[0].mentions == 0


def test_memories_bounded_as_configured_in_the_consumer(redis_client, config, consumer_encoder):
    cfg = msgspec.structs.replace(config, memory=msgspec.structs.replace(config.memory, max_mentions=10))
    store = RedisStore(redis_client, cfg, dim=consumer_encoder.dimension)
    processor = BatchProcessor(store, cfg, consumer_encoder.encode, clock_ms=lambda: NOW_MS)
    lines = conversation_lines(users=2, turns=30)
    for start in range(0, len(lines), 13):
        processor.process_events(records_for(lines, "events")[start : start + 13])
    for memories in store.read_memories([("default", "talker0"), ("default", "talker1")]):
        assert memories.mentions == 10
    assert_matches_replay(store, valid_events(lines), processor.encode)
