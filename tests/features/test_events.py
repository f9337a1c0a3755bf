"""The event and item contracts: every rejection reason, and good records parsed exactly."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.core.events import REJECTION_REASONS, Event, ItemRecord, Rejection, event_limits, parse_event, parse_item
from p13n.config import StateConfig
from tests.stream.poison_cases import EXPLODING_VALUE, ITEM_POISON, POISON, exploding_decode, good_record

NOW = 1_800_000_000_000
GOOD = {"event_id": "e1", "user_id": "u1", "type": "click", "item_id": "i1", "timestamp": 1_767_225_600_000}


def parse(obj) -> Event | Rejection:
    data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return parse_event(data, now_ms=NOW)


@pytest.mark.parametrize(
    ("record", "reason", "mentions"),
    [
        (b"", "empty", "empty"),
        (b"   \n", "empty", "empty"),
        (b"{not json", "invalid_json", "malformed"),
        (b"\xff\xfe\x00garbage", "invalid_json", ""),
        (b"[1, 2]", "not_an_object", "array"),
        ({k: v for k, v in GOOD.items() if k != "user_id"}, "missing_field", "user_id"),
        ({**GOOD, "user_id": 42}, "wrong_type", "$.user_id"),
        ({**GOOD, "value": "high"}, "wrong_type", "$.value"),
        ({**GOOD, "event_id": "x" * 129}, "too_long", "$.event_id"),
        ({**GOOD, "item_id": "x" * 257}, "too_long", "$.item_id"),
        ({**GOOD, "item_text": "x" * 9000}, "too_long", "$.item_text"),
        ({**GOOD, "type": "teleport"}, "unknown_type", "teleport"),
        ({**GOOD, "timestamp": "yesterday"}, "bad_timestamp", "yesterday"),
        ({**GOOD, "timestamp": "2026-01-01T00:00:00"}, "bad_timestamp", "offset"),
        ({**GOOD, "timestamp": -5}, "bad_timestamp", "1970"),
        ({**GOOD, "timestamp": NOW + 2 * 86_400_000}, "future_timestamp", "future"),
        ({**GOOD, "type": "click", "item_id": None}, "missing_field", "item_id"),
        ({**GOOD, "type": "preference", "text": "  "}, "missing_field", "text"),
        ({**GOOD, "type": "rating"}, "missing_field", "value"),
        ({**GOOD, "tenant": "a/b"}, "invalid_value", "$.tenant"),
        ({**GOOD, "context": {"k": 1}}, "wrong_type", "$.context"),
        # invalid UTF-8 inside a string (the hardening case event-invalid-utf8.bin)
        (b'{"event_id":"bad-utf8-1","user_id":"u\xff\xfe","type":"click","item_id":"i1","timestamp":1795000000000}',
         "invalid_utf8", "UTF-8"),  # fmt: skip
        (b'{"event_id":"e","user_id":"u","type":"message","text":"caf\xc3","timestamp":1795000000000}', "invalid_utf8",
         "UTF-8"),  # fmt: skip
        # numbers beyond the bound (event-rating-1e300.json; 1e39 overflows float32; 1e400 overflows float64)
        ({**GOOD, "type": "rating", "value": 1e300}, "out_of_range", "$.value"),
        ({**GOOD, "type": "rating", "value": 1e39}, "out_of_range", "$.value"),
        ({**GOOD, "type": "rating", "value": -2e6}, "out_of_range", "max_abs_value"),
        ({**GOOD, "value": 1e39}, "out_of_range", "$.value"),  # bounded whatever the type
        (json.dumps({**GOOD, "type": "rating"}).replace('"type"', '"value": 1e400, "type"').encode(), "out_of_range",
         "$.value"),  # fmt: skip
        # epoch seconds instead of milliseconds (event-epoch-seconds.json)
        ({**GOOD, "timestamp": 1_795_000_000}, "timestamp_too_old", "epoch seconds"),
        ({**GOOD, "timestamp": 1}, "timestamp_too_old", "1990-01-01"),
        ({**GOOD, "timestamp": "1989-12-31T23:59:59Z"}, "timestamp_too_old", "1990-01-01"),
        ({**GOOD, "timestamp": NOW * 1000}, "future_timestamp", "epoch microseconds"),
    ],
)
def test_rejections_carry_a_precise_reason(record, reason, mentions):
    result = parse(record)
    assert isinstance(result, Rejection), result
    assert result.reason == reason
    assert result.reason in REJECTION_REASONS
    assert mentions in result.detail


def test_a_good_event_is_parsed_with_defaults():
    ev = parse({**GOOD, "value": 3, "unknown_extra_field": "ignored"})
    assert isinstance(ev, Event)
    assert (ev.ts_ms, ev.tenant, ev.value, ev.key) == (GOOD["timestamp"], "default", 3.0, "default/u1")


def test_rfc3339_timestamps_with_offsets_agree_with_epoch_ms():
    a = parse({**GOOD, "timestamp": "2026-01-01T00:00:00Z"})
    b = parse({**GOOD, "timestamp": "2026-01-01T02:00:00+02:00"})
    assert a.ts_ms == b.ts_ms == 1_767_225_600_000


def test_message_and_preference_need_no_item():
    assert isinstance(parse({"event_id": "e", "user_id": "u", "type": "preference", "timestamp": GOOD["timestamp"],
                             "text": "I am vegan"}), Event)  # fmt: skip


def test_a_day_in_the_future_is_the_configurable_limit():
    assert isinstance(parse_event(json.dumps({**GOOD, "timestamp": NOW + 3_600_000}).encode(), now_ms=NOW), Event)
    late = parse_event(json.dumps({**GOOD, "timestamp": NOW + 3_600_000}).encode(), now_ms=NOW, max_future_ms=1000)
    assert isinstance(late, Rejection) and late.reason == "future_timestamp"


def test_items_parse_and_reject():
    item = parse_item(b'{"item_id": "i1", "text": "Shoes", "attributes": {"category": "run", "tags": ["a"]}, '
                      b'"deleted": false}')  # fmt: skip
    assert item.attributes == {"category": "run", "tags": ["a"]} and item.tenant == "default"
    assert parse_item(b'{"item_id": 5}').reason == "wrong_type"
    assert parse_item(b"").reason == "empty"


def test_the_hardening_cases_get_their_reason():
    """The issue's failing inputs, byte for byte."""
    utf8 = b'{"event_id":"bad-utf8-1","user_id":"u\xff\xfe","type":"click","item_id":"i1","timestamp":1795000000000}'
    assert parse_event(utf8, now_ms=NOW, key=b"default/u\xff\xfe").reason == "invalid_utf8"
    assert parse_item(b'{"item_id":"i\xff","text":"an item"}').reason == "invalid_utf8"
    huge = b'{"event_id": "huge-1", "user_id": "u-huge", "type": "rating", "item_id": "i1", "value": 1e+300, ' \
           b'"timestamp": 1795000000000}'  # fmt: skip
    assert parse_event(huge, now_ms=NOW).reason == "out_of_range"
    secs = parse_event(b'{"event_id": "secs-1", "user_id": "u-secs", "type": "click", "item_id": "i1", '
                       b'"timestamp": 1795000000}', now_ms=NOW)  # fmt: skip
    assert secs.reason == "timestamp_too_old" and "looks like epoch seconds (2026-11-18T11:06:40Z)" in secs.detail


def test_bounds_come_from_the_state_config():
    limits = event_limits(StateConfig(max_abs_value=10.0, min_timestamp_ms=0))
    assert limits == {"max_future_ms": 86_400_000, "min_timestamp_ms": 0, "max_abs_value": 10.0}
    assert parse(json.dumps({**GOOD, "timestamp": 1}).encode()).reason == "timestamp_too_old"
    assert parse_event(json.dumps({**GOOD, "timestamp": 1}).encode(), now_ms=NOW, **limits).ts_ms == 1
    assert parse_event(json.dumps({**GOOD, "value": 10.0}).encode(), now_ms=NOW, **limits).value == 10.0
    assert parse_event(json.dumps({**GOOD, "value": 10.5}).encode(), now_ms=NOW, **limits).reason == "out_of_range"
    assert parse(json.dumps({**GOOD, "type": "rating", "value": 1e6}).encode()).value == 1e6  # the default bound holds


@pytest.mark.parametrize(
    ("key", "outcome"),
    [
        (None, "default/u1"),  # no key: the payload names the user
        (b"default/u1", "default/u1"),
        (b"demo/u1", "key_mismatch"),  # the case: key names tenant demo, the payload none
        (b"u1", "key_mismatch"),
        (b"", "key_mismatch"),  # an empty key is a key
        (b"default/u1 ", "key_mismatch"),
        (b"default/u\xff", "key_mismatch"),
    ],
)
def test_the_key_must_be_the_payloads_tenant_and_user(key, outcome):
    result = parse_event(json.dumps(GOOD).encode(), now_ms=NOW, key=key)
    assert (result.key if isinstance(result, Event) else result.reason) == outcome
    shop = parse_event(json.dumps({**GOOD, "tenant": "shop"}).encode(), now_ms=NOW, key=b"shop/u1")
    assert isinstance(shop, Event) and shop.key == "shop/u1"



@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyError("k"), RecursionError("deep"), OverflowError("big")])
def test_any_exception_in_the_decoder_becomes_a_decode_error(exc):
    def decode(data: bytes):
        raise exc

    event = parse_event(json.dumps(GOOD).encode(), now_ms=NOW, decode=decode)
    assert event == Rejection("decode_error", f"{type(exc).__name__}: {exc}")
    item = parse_item(b'{"item_id": "i1"}', decode=decode)
    assert item == Rejection("decode_error", f"{type(exc).__name__}: {exc}")


def test_a_decoder_returning_nonsense_is_a_decode_error_too():
    assert parse_event(json.dumps(GOOD).encode(), now_ms=NOW, decode=lambda data: 42).reason == "decode_error"
    assert parse_item(b'{"item_id": "i1"}', decode=lambda data: {"item_id": "i1"}).reason == "decode_error"


def test_one_record_of_every_failure_kind_between_good_records():
    """The stream of the poison-pill test: each bad record gets its own reason, every good one is parsed."""
    stream: list[tuple[bytes, bytes | None, str | None]] = []
    for n, case in enumerate(POISON):
        stream.append((*good_record(n), None))
        stream.append((case.value, case.key, case.reason))
    stream.append((EXPLODING_VALUE, None, "decode_error"))
    stream.append((*good_record(len(POISON)), None))
    results = [parse_event(value, now_ms=NOW, key=key, decode=exploding_decode) for value, key, _ in stream]
    assert [r.reason if isinstance(r, Rejection) else None for r in results] == [want for _, _, want in stream]
    assert [r.event_id for r in results if isinstance(r, Event)] == [f"good-u-good-{n}" for n in range(len(POISON) + 1)]
    assert {case.reason for case in POISON} | {"decode_error"} == set(REJECTION_REASONS)
    assert all(r.detail for r in results if isinstance(r, Rejection))


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ({"year": 2**63}, "out_of_range"),  # msgpack, the item store's format, has no larger ints
        ({"year": -(2**63) - 1}, "out_of_range"),
        ({"price": "1e400"}, None),  # a string stays a string
    ],
)
def test_item_attribute_numbers_are_bounded(attributes, reason):
    item = parse_item(json.dumps({"item_id": "i1", "attributes": attributes}).encode())
    assert (item.reason if isinstance(item, Rejection) else None) == reason
    assert parse_item(b'{"item_id": "i1", "attributes": {"price": 1e400}}').reason == "out_of_range"
    largest = parse_item(json.dumps({"item_id": "i1", "attributes": {"year": 2**63 - 1}}).encode())
    assert largest.attributes["year"] == 2**63 - 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.one_of(st.none(), st.binary(max_size=40)))
def test_parse_event_never_raises_on_any_bytes(data, key):
    for result in (parse_event(data, now_ms=NOW, key=key), parse_item(data)):
        assert isinstance(result, Event | ItemRecord) or result.reason in REJECTION_REASONS


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from([*GOOD, "value", "tenant", "text", "context", "session_id"]), _json_values),
       st.sampled_from([b"", b"\xff", b"\\u0000", b"\xed\xa0\x80"]))  # fmt: skip
def test_parse_event_never_raises_on_any_json_fields(fields, noise):
    data = json.dumps({**GOOD, **fields}).encode().replace(b'"u1"', b'"u1' + noise + b'"')
    result = parse_event(data, now_ms=NOW, key=b"default/u1")
    assert isinstance(result, Event) or (result.reason in REJECTION_REASONS and result.detail)
    if isinstance(result, Event) and result.value is not None:
        assert abs(result.value) <= 1e6


def test_one_catalog_record_of_every_failure_kind_between_good_ones():
    values = [v for _, bad, _ in ITEM_POISON for v in (b'{"item_id":"ok","text":"fine"}', bad)]
    results = [parse_item(v) for v in values]
    assert [r.reason if isinstance(r, Rejection) else r.item_id for r in results] == [
        x for _, _, reason in ITEM_POISON for x in ("ok", reason)
    ]


@pytest.mark.parametrize(
    ("attributes", "reason", "at"),
    [
        ({"tags": [f"t{n}" for n in range(100_000)]}, "too_long", "$.attributes['tags']"),  # ~1 MB, one Kafka record
        ({"ok": "x", "tags": ["ok", "x" * 257]}, "too_long", "$.attributes['tags'][1]"),
        ({"brand": "x" * 257}, "too_long", "$.attributes['brand']"),
        ({f"a{n}": ["y" * 256] * 64 for n in range(64)}, None, None),  # the largest accepted: 64 × 64 × 256
        ({"brand": "x" * 256, "year": 1999, "price": 9.5, "new": True}, None, None),
    ],
    ids=["list-100k", "list-entry-257", "string-257", "largest-accepted", "scalars"],
)
def test_item_attribute_values_are_bounded_like_ids(attributes, reason, at):
    """Categorical values become per-user preference keys and are compared with every candidate on the request
    path: one catalog record must not make each fold and score carry megabytes."""
    item = parse_item(json.dumps({"item_id": "i1", "attributes": attributes}).encode())
    if reason is None:
        assert isinstance(item, ItemRecord) and item.attributes == attributes
    else:
        assert isinstance(item, Rejection) and item.reason == reason and item.detail.endswith(f"at `{at}`"), item
