"""The event and item contracts: every rejection reason, and good records parsed exactly."""

from __future__ import annotations

import json

import pytest

from features.events import REJECTION_REASONS, Event, Rejection, parse_event, parse_item

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
    assert isinstance(parse({"event_id": "e", "user_id": "u", "type": "preference", "timestamp": 1,
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
