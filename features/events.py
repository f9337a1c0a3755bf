"""The event and item contracts (DESIGN.md §2), parsed and validated from bytes in one step.

:func:`parse_event` and :func:`parse_item` never raise for bad input: they return
either the validated record or a :class:`Rejection` with a machine-readable
``reason`` and a human ``detail``. The consumer sends rejections, with the
original bytes, to the dead-letter topic.

>>> ev = parse_event(b'{"event_id":"e1","user_id":"u1","type":"click","item_id":"i9",'
...                  b'"timestamp":"2026-01-01T00:00:00Z"}', now_ms=1_800_000_000_000)
>>> ev.ts_ms, ev.tenant, ev.key
(1767225600000, 'default', 'default/u1')
>>> parse_event(b'{"event_id":"e1","user_id":"u1","type":"teleport","timestamp":1}', now_ms=10)
Rejection(reason='unknown_type', detail="Invalid enum value 'teleport' - at `$.type`")
>>> parse_event(b'\\xff\\x00', now_ms=0).reason
'invalid_json'
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from p13n.config import ITEM_EVENT_TYPES

__all__ = [
    "Event",
    "ItemRecord",
    "Rejection",
    "REJECTION_REASONS",
    "parse_event",
    "parse_item",
    "parse_timestamp",
    "user_key",
]

EventType = Literal["view", "click", "cart", "purchase", "like", "dislike", "skip", "rating", "message", "preference"]

#: Every reason a record can be rejected for.
REJECTION_REASONS = (
    "empty",
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "too_long",
    "unknown_type",
    "bad_timestamp",
    "future_timestamp",
    "invalid_value",
)

Tenant = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Id128 = Annotated[str, Meta(min_length=1, max_length=128)]
Id256 = Annotated[str, Meta(min_length=1, max_length=256)]
Text = Annotated[str, Meta(max_length=8192)]
AttrValue = str | int | float | bool | list[str]


class Rejection(msgspec.Struct, frozen=True):
    """Why a record was not accepted."""

    reason: str
    detail: str


class _RawEvent(msgspec.Struct, frozen=True, kw_only=True):
    event_id: Id128
    user_id: Id256
    type: EventType
    timestamp: int | str
    item_id: Id256 | None = None
    item_text: Text | None = None
    value: float | None = None
    text: Text | None = None
    tenant: Tenant = "default"
    session_id: Id256 | None = None
    context: Annotated[dict[Annotated[str, Meta(max_length=64)], Annotated[str, Meta(max_length=256)]], Meta(max_length=32)] | None = None


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """A validated user event; ``ts_ms`` is the event time in epoch milliseconds."""

    event_id: str
    user_id: str
    type: str
    ts_ms: int
    item_id: str | None = None
    item_text: str | None = None
    value: float | None = None
    text: str | None = None
    tenant: str = "default"
    session_id: str | None = None
    context: dict[str, str] | None = None

    @property
    def key(self) -> str:
        """The Kafka key and user identity: ``tenant/user_id``."""
        return user_key(self.tenant, self.user_id)


class ItemRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An item of the catalog topic."""

    item_id: Id256
    text: Text | None = None
    attributes: Annotated[dict[Annotated[str, Meta(max_length=64)], AttrValue], Meta(max_length=64)] = msgspec.field(
        default_factory=dict
    )
    tenant: Tenant = "default"
    deleted: bool = False


def user_key(tenant: str, user_id: str) -> str:
    """``tenant/user_id`` — the partitioning key (tenants cannot contain ``/``).

    >>> user_key("shop", "u/1")
    'shop/u/1'
    """
    return f"{tenant}/{user_id}"


_event_decoder = msgspec.json.Decoder(_RawEvent)
_item_decoder = msgspec.json.Decoder(ItemRecord)


def _classify(message: str) -> str:
    if message.startswith("Object missing required field"):
        return "missing_field"
    if message.startswith("Invalid enum value") and "`$.type`" in message:
        return "unknown_type"
    if " of length <= " in message or "of length >= " in message or "with length <= " in message:
        return "too_long"
    if message.startswith("Expected `object`") and "- at" not in message:
        return "not_an_object"
    if message.startswith("Expected `str` matching regex"):
        return "invalid_value"
    if message.startswith("Expected"):
        return "wrong_type"
    return "invalid_value"


def _decode(decoder: msgspec.json.Decoder, data: bytes) -> object | Rejection:
    if not data or not data.strip():
        return Rejection("empty", "empty record")
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        message = str(exc)
        return Rejection(_classify(message), message)
    except msgspec.DecodeError as exc:
        return Rejection("invalid_json", str(exc))


def parse_timestamp(value: int | str) -> int | None:
    """Epoch milliseconds from an int (epoch ms) or an RFC 3339 string with offset; None if unparsable.

    >>> parse_timestamp("2026-01-01T01:00:00+01:00"), parse_timestamp(1767225600000)
    (1767225600000, 1767225600000)
    >>> parse_timestamp("2026-01-01T00:00:00") is None   # no offset: ambiguous
    True
    """
    if isinstance(value, int):
        return value
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return int(parsed.timestamp() * 1000)


def parse_event(data: bytes, *, now_ms: int, max_future_ms: int = 86_400_000) -> Event | Rejection:
    """Decode and validate one event; returns the :class:`Event` or a :class:`Rejection`."""
    raw = _decode(_event_decoder, data)
    if isinstance(raw, Rejection):
        return raw
    assert isinstance(raw, _RawEvent)
    ts_ms = parse_timestamp(raw.timestamp)
    if ts_ms is None:
        return Rejection("bad_timestamp", f"timestamp {raw.timestamp!r} is not epoch ms or RFC 3339 with offset")
    if ts_ms < 0:
        return Rejection("bad_timestamp", f"timestamp {ts_ms} is before 1970")
    if ts_ms > now_ms + max_future_ms:
        return Rejection("future_timestamp", f"timestamp {ts_ms} is more than {max_future_ms} ms in the future")
    if raw.type in ITEM_EVENT_TYPES and raw.item_id is None:
        return Rejection("missing_field", f"`item_id` is required for type {raw.type!r}")
    if raw.type in ("message", "preference") and not (raw.text and raw.text.strip()):
        return Rejection("missing_field", f"`text` is required for type {raw.type!r}")
    if raw.type == "rating" and raw.value is None:
        return Rejection("missing_field", "`value` is required for type 'rating'")
    if raw.value is not None and not math.isfinite(raw.value):
        return Rejection("invalid_value", "`value` must be finite")
    return Event(
        event_id=raw.event_id,
        user_id=raw.user_id,
        type=raw.type,
        ts_ms=ts_ms,
        item_id=raw.item_id,
        item_text=raw.item_text,
        value=raw.value,
        text=raw.text,
        tenant=raw.tenant,
        session_id=raw.session_id,
        context=raw.context,
    )


def parse_item(data: bytes) -> ItemRecord | Rejection:
    """Decode and validate one catalog record.

    >>> parse_item(b'{"item_id":"i1","text":"Red running shoes","attributes":{"category":"shoes"}}').attributes
    {'category': 'shoes'}
    >>> parse_item(b'{"text":"x"}').reason
    'missing_field'
    """
    item = _decode(_item_decoder, data)
    if isinstance(item, Rejection):
        return item
    assert isinstance(item, ItemRecord)
    return item
