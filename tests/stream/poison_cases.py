"""One Kafka record of every way an event can be bad, with the rejection reason it must get.

A shared table for every layer that decodes events (``features.core.events.parse_event``, the
processing stage, a live consumer and its dead-letter topic), so each asserts the same reasons::

    from tests.stream.poison_cases import POISON, GOOD_KEY, good_record
    for case in POISON:
        result = parse_event(case.value, now_ms=..., key=case.key)
        assert result.reason == case.reason
    for name, value, reason in ITEM_POISON:
        assert parse_item(value).reason == reason

Every case is valid but for its one fault, and is keyed with the payload's ``tenant/user_id`` unless
the key is the fault. Event times are in late 2026 (valid for any clock from then until 2100, so a live
consumer on the wall clock rejects the same records); the future case is in 2100.

``EXPLODING_VALUE`` is a well-formed event that :func:`exploding_decode` — a decoder to inject
where the code under test takes one (``parse_event(..., decode=exploding_decode)``) — raises on:
an unexpected exception inside decoding must become a ``decode_error`` for that record only.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from features.core.events import _event_decoder  # the real decoder, wrapped below

__all__ = ["PoisonCase", "POISON", "ITEM_POISON", "EXPLODING_VALUE", "exploding_decode", "good_record"]

TS = 1_795_000_000_000  # 2026-11-18T11:06:40Z, epoch ms


class PoisonCase(NamedTuple):
    name: str
    value: bytes
    key: bytes | None
    reason: str


def _event(**fields) -> bytes:
    base = {"event_id": f"poison-{str(fields.get('user_id', 'u'))[:40]}", "user_id": "u-poison", "type": "click",
            "item_id": "i1", "timestamp": TS}  # fmt: skip
    return json.dumps({**base, **fields}).encode()


def _key(user_id: str, tenant: str = "default") -> bytes:
    return f"{tenant}/{user_id}".encode()


POISON: tuple[PoisonCase, ...] = (
    PoisonCase("empty", b"", None, "empty"),
    PoisonCase("not json", b"{not json", None, "invalid_json"),
    PoisonCase("binary", b"\x00\xff\x13garbage", None, "invalid_json"),
    # event-invalid-utf8.bin: invalid UTF-8 inside a JSON string
    PoisonCase("invalid utf-8 in a string",
               b'{"event_id":"bad-utf8-1","user_id":"u\xff\xfe","type":"click","item_id":"i1","timestamp":1795000000000}',
               b"default/u\xff\xfe", "invalid_utf8"),  # fmt: skip
    PoisonCase("array", b"[1, 2]", None, "not_an_object"),
    PoisonCase("missing user_id", json.dumps({"event_id": "m", "type": "click", "item_id": "i", "timestamp": TS}).encode(),
               None, "missing_field"),  # fmt: skip
    PoisonCase("user_id a number", _event(user_id=7), None, "wrong_type"),
    PoisonCase("user_id too long", _event(user_id="u" * 300), _key("u" * 300), "too_long"),
    PoisonCase("unknown type", _event(user_id="u-type", type="teleport"), _key("u-type"), "unknown_type"),
    PoisonCase("timestamp text", _event(user_id="u-ts", timestamp="soon"), _key("u-ts"), "bad_timestamp"),
    # event-epoch-seconds.json: epoch seconds where milliseconds are expected
    PoisonCase("epoch seconds", _event(user_id="u-secs", timestamp=1_795_000_000), _key("u-secs"), "timestamp_too_old"),
    PoisonCase("year 2100", _event(user_id="u-future", timestamp=4_102_444_800_000), _key("u-future"),
               "future_timestamp"),
    # event-rating-1e300.json, and 1e39, which overflows float32
    PoisonCase("rating 1e300", _event(user_id="u-huge", type="rating", value=1e300), _key("u-huge"), "out_of_range"),
    PoisonCase("rating 1e39", _event(user_id="u-f32", type="rating", value=1e39), _key("u-f32"), "out_of_range"),
    PoisonCase("rating 1e400", _event(user_id="u-inf", type="rating").replace(b'"type"', b'"value": 1e400, "type"'),
               _key("u-inf"), "out_of_range"),  # fmt: skip
    PoisonCase("rating without value", _event(user_id="u-rate", type="rating"), _key("u-rate"), "missing_field"),
    PoisonCase("tenant with a slash", _event(user_id="u-ten", tenant="a/b"), b"a/b/u-ten", "invalid_value"),
    # key `demo/u1` while the payload names no tenant: user default/u1
    PoisonCase("key of another tenant", _event(user_id="u1"), b"demo/u1", "key_mismatch"),
    PoisonCase("key of another user", _event(user_id="u1", tenant="shop"), b"shop/u2", "key_mismatch"),
)

#: The catalog topic's bad records: (name, value, reason); catalog keys are not checked.
ITEM_POISON: tuple[tuple[str, bytes, str], ...] = (
    ("invalid utf-8 in a string", b'{"item_id":"i\xff","text":"an item"}', "invalid_utf8"),  # item-invalid-utf8.bin
    ("not json", b"{not json", "invalid_json"),
    ("missing item_id", b'{"text":"an item"}', "missing_field"),
    ("an attribute beyond 64 bits", b'{"item_id":"i-big","attributes":{"year":18446744073709551616}}', "out_of_range"),
    ("an attribute beyond float64", b'{"item_id":"i-inf","attributes":{"price":1e400}}', "out_of_range"),
)

#: A valid event that :func:`exploding_decode` raises on.
EXPLODING_VALUE = _event(user_id="u-explode", event_id="explode-1")


def exploding_decode(data: bytes):
    """The events decoder, but raising ``RuntimeError("injected decoder fault")`` on :data:`EXPLODING_VALUE`."""
    if data == EXPLODING_VALUE:
        raise RuntimeError("injected decoder fault")
    return _event_decoder.decode(data)


def good_record(n: int, user_id: str = "u-good") -> tuple[bytes, bytes]:
    """(value, key) of the ``n``-th of a run of valid click events of ``user_id``."""
    value = _event(user_id=user_id, event_id=f"good-{user_id}-{n}", item_id=f"i{n % 5}", timestamp=TS + n)
    return value, _key(user_id)

