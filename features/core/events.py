"""The event and item contracts (DESIGN.md §2), parsed and validated from bytes in one step.

:func:`parse_event` and :func:`parse_item` never raise, whatever the bytes: they return
either the validated record or a :class:`Rejection` with a machine-readable
``reason`` (one of :data:`REJECTION_REASONS`) and a human ``detail``. Any exception
while decoding or validating one record, expected or not, becomes a rejection of
that record (``decode_error`` for the unexpected ones), so one bad record can never
stop a consumer. The consumer sends rejections, with the original bytes, to the
dead-letter topic.

>>> ev = parse_event(b'{"event_id":"e1","user_id":"u1","type":"click","item_id":"i9",'
...                  b'"timestamp":"2026-01-01T00:00:00Z"}', now_ms=1_800_000_000_000, key=b"default/u1")
>>> ev.ts_ms, ev.tenant, ev.key
(1767225600000, 'default', 'default/u1')
>>> parse_event(b'{"event_id":"e1","user_id":"u1","type":"teleport","timestamp":1}', now_ms=10)
Rejection(reason='unknown_type', detail="Invalid enum value 'teleport' - at `$.type`")
>>> parse_event(b'\\xff\\x00', now_ms=0).reason
'invalid_json'
>>> parse_event(b'{"event_id":"e1","user_id":"u\\xff","type":"view","timestamp":1}', now_ms=0).reason
'invalid_utf8'

Numbers and times are bounded (see :data:`DEFAULT_MAX_ABS_VALUE`, :data:`DEFAULT_MIN_TIMESTAMP_MS`;
the consumer takes both from ``[state]`` of the configuration, :func:`event_limits`). The Kafka key
of an event must be ``tenant/user_id`` of its payload (:func:`check_key`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any

import msgspec
from msgspec import Meta

# user_key is re-exported: callers import it from here
from p13n.vocabulary import ITEM_EVENT_TYPES, TEXT_EVENT_TYPES, EventType, user_key

__all__ = [
    "DEFAULT_MAX_ABS_VALUE",
    "DEFAULT_MIN_TIMESTAMP_MS",
    "Event",
    "ItemRecord",
    "Rejection",
    "REJECTION_REASONS",
    "check_key",
    "event_limits",
    "parse_event",
    "parse_item",
    "parse_timestamp",
    "user_key",
]

#: Every reason a record can be rejected for.
REJECTION_REASONS = (
    "empty",
    "invalid_json",
    "invalid_utf8",  # a JSON string holds bytes that are not UTF-8
    "not_an_object",
    "missing_field",
    "wrong_type",
    "too_long",
    "unknown_type",
    "bad_timestamp",
    "future_timestamp",
    "timestamp_too_old",  # before ``min_timestamp_ms`` (1990 by default): epoch seconds sent as milliseconds
    "invalid_value",
    "out_of_range",  # a number beyond its bound (``value``: ``max_abs_value``; attributes: 64-bit integers)
    "key_mismatch",  # the Kafka key is not the payload's ``tenant/user_id``
    "decode_error",  # any other exception while decoding or validating the record (detail: its type and message)
)

#: Default bound of ``|value|``. Ratings and scores live on scales like 0.5-5, 1-10 or 0-100; a
#: million leaves room for any of them while one event's weight (about ``|value|·weight/scale``)
#: stays many orders of magnitude below float32's 3.4e38, the type of the stored vector sums, even
#: summed over millions of events.
DEFAULT_MAX_ABS_VALUE = 1e6
#: Default lower bound of event times: 1990-01-01T00:00:00Z in epoch ms. Real logs start later
#: (MovieLens in 1996); epoch *seconds* of any date since 1970 (< 1e10) are below it.
DEFAULT_MIN_TIMESTAMP_MS = 631_152_000_000
DEFAULT_MAX_FUTURE_MS = 86_400_000

Tenant = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Id128 = Annotated[str, Meta(min_length=1, max_length=128)]
Id256 = Annotated[str, Meta(min_length=1, max_length=256)]
Text = Annotated[str, Meta(max_length=8192)]
# Integers bounded to 64 bits: the item store packs attributes as msgpack, which has no larger ints.
# Floats from JSON are finite already (msgspec rejects 1e400 as out of range).
AttrInt = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
# Categorical values become per-user preference keys (``name=value``) and are matched against every candidate
# on the request path: bounded like ids, so one catalog record cannot weigh megabytes on every score.
AttrStr = Annotated[str, Meta(max_length=256)]
AttrValue = AttrStr | AttrInt | float | bool | Annotated[list[AttrStr], Meta(max_length=64)]


class Rejection(msgspec.Struct, frozen=True):
    """Why a record was not accepted: ``reason`` is one of :data:`REJECTION_REASONS`."""

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

    @property
    def key(self) -> str:
        """The Kafka key p13n's producer gives a catalog record: ``tenant/item_id`` (one item, one partition)."""
        return user_key(self.tenant, self.item_id)


def check_key(key: bytes | None, event: Event) -> Rejection | None:
    """The key rule of the events topic: a record's Kafka key, when it has one, must be the UTF-8 bytes of
    its payload's ``tenant/user_id`` (tenant ``default`` when the payload names none); otherwise the
    record is rejected (``key_mismatch``), since the key and the payload would name two different users.

    A record without a key (``None``) is accepted: the payload alone names the user, and the
    consumer's state stays exact whatever partition a user's events arrive on — only the per-user
    ordering and locality a keyed producer gives are lost. An empty key is a key, and must match too.

    >>> ev = Event(event_id="e", user_id="u1", type="view", ts_ms=0)
    >>> check_key(b"default/u1", ev) is None, check_key(None, ev) is None
    (True, True)
    >>> check_key(b"demo/u1", ev).reason
    'key_mismatch'
    """
    if key is None:
        return None
    expected = event.key.encode()
    if key == expected:
        return None
    return Rejection("key_mismatch", f"record key {_shown(key)} is not the payload's tenant/user_id {event.key!r}")


def _shown(key: bytes, limit: int = 80) -> str:
    text = repr(key[:limit])
    return text + "…" if len(key) > limit else text


def event_limits(state: Any) -> dict[str, int | float]:
    """The keyword bounds of :func:`parse_event` taken from a ``[state]`` configuration section
    (:class:`p13n.config.StateConfig`): ``parse_event(data, now_ms=…, **event_limits(config.state))``."""
    return {
        "max_future_ms": state.max_future_ms,
        "min_timestamp_ms": state.min_timestamp_ms,
        "max_abs_value": state.max_abs_value,
    }


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
    if message.startswith(("Number out of range", "Expected `int` >=", "Expected `int` <=")):
        return "out_of_range"
    if message.startswith("Expected"):
        return "wrong_type"
    return "invalid_value"


def _decode(decode: Callable[[bytes], Any], data: bytes) -> Any:
    """``decode(data)``, or the :class:`Rejection` for the error it raised. Never raises (but for
    ``BaseException`` such as ``KeyboardInterrupt``)."""
    try:
        if not data or not data.strip():
            return Rejection("empty", "empty record")
        return decode(data)
    except msgspec.ValidationError as exc:
        message = str(exc)
        return Rejection(_classify(message), message)
    except msgspec.DecodeError as exc:
        return Rejection("invalid_json", str(exc))
    except UnicodeDecodeError as exc:  # msgspec checks strings' UTF-8 itself and raises this as is
        return Rejection("invalid_utf8", f"a JSON string is not valid UTF-8: {exc}")
    except Exception as exc:  # the kind: nothing in one record may escape and stop a consumer
        return _unexpected(exc)


def _unexpected(exc: Exception) -> Rejection:
    return Rejection("decode_error", f"{type(exc).__name__}: {exc}")


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


def _iso(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return f"{ms} ms"


def _check_time(ts_ms: int, raw: int | str, now_ms: int, max_future_ms: int, min_timestamp_ms: int) -> Rejection | None:
    if ts_ms < 0:
        return Rejection("bad_timestamp", f"timestamp {ts_ms} is before 1970")
    if ts_ms < min_timestamp_ms:
        hint = ""
        if isinstance(raw, int) and min_timestamp_ms <= ts_ms * 1000 <= now_ms + max_future_ms:
            hint = f"; it looks like epoch seconds ({_iso(ts_ms * 1000)}): send epoch milliseconds"
        detail = f"timestamp {ts_ms} ({_iso(ts_ms)}) is before {_iso(min_timestamp_ms)}{hint}"
        return Rejection("timestamp_too_old", detail)
    if ts_ms > now_ms + max_future_ms:
        hint = ""
        if isinstance(raw, int) and min_timestamp_ms <= ts_ms // 1000 <= now_ms + max_future_ms:
            hint = f"; it looks like epoch microseconds ({_iso(ts_ms // 1000)}): send epoch milliseconds"
        return Rejection("future_timestamp", f"timestamp {ts_ms} is more than {max_future_ms} ms in the future{hint}")
    return None


def parse_event(
    data: bytes,
    *,
    now_ms: int,
    key: bytes | None = None,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
    min_timestamp_ms: int = DEFAULT_MIN_TIMESTAMP_MS,
    max_abs_value: float = DEFAULT_MAX_ABS_VALUE,
    decode: Callable[[bytes], Any] = _event_decoder.decode,
) -> Event | Rejection:
    """Decode and validate one event; returns the :class:`Event` or a :class:`Rejection`, never raises.

    ``data`` is the record's value (UTF-8 JSON), ``key`` its Kafka key (``None``: none, see
    :func:`check_key`), ``now_ms`` the wall clock (epoch ms). Event times must lie in
    ``[min_timestamp_ms, now_ms + max_future_ms]``, ``|value| <= max_abs_value``. ``decode`` turns the
    bytes into the raw record (a seam: tests inject a failing decoder; whatever it raises becomes a
    ``decode_error``).

    >>> parse_event(b'{"event_id":"e","user_id":"u","type":"view","item_id":"i","timestamp":1795000000}',
    ...             now_ms=1_800_000_000_000).reason
    'timestamp_too_old'
    """
    try:
        raw = _decode(decode, data)
        if isinstance(raw, Rejection):
            return raw
        return _validate(raw, key, now_ms, max_future_ms, min_timestamp_ms, max_abs_value)
    except Exception as exc:  # the kind: nothing in one record may escape and stop a consumer
        return _unexpected(exc)


def _validate(raw: _RawEvent, key: bytes | None, now_ms: int, max_future_ms: int, min_timestamp_ms: int,
              max_abs_value: float) -> Event | Rejection:  # fmt: skip
    ts_ms = parse_timestamp(raw.timestamp)
    if ts_ms is None:
        return Rejection("bad_timestamp", f"timestamp {raw.timestamp!r} is not epoch ms or RFC 3339 with offset")
    late = _check_time(ts_ms, raw.timestamp, now_ms, max_future_ms, min_timestamp_ms)
    if late is not None:
        return late
    if raw.type in ITEM_EVENT_TYPES and raw.item_id is None:
        return Rejection("missing_field", f"`item_id` is required for type {raw.type!r}")
    if raw.type in TEXT_EVENT_TYPES and not (raw.text and raw.text.strip()):
        return Rejection("missing_field", f"`text` is required for type {raw.type!r}")
    if raw.type == "rating" and raw.value is None:
        return Rejection("missing_field", "`value` is required for type 'rating'")
    if raw.value is not None and not math.isfinite(raw.value):
        return Rejection("out_of_range", f"`value` must be finite, got {raw.value!r} - at `$.value`")
    if raw.value is not None and abs(raw.value) > max_abs_value:
        detail = f"`value` {raw.value!r} is beyond ±{max_abs_value:g} (state.max_abs_value) - at `$.value`"
        return Rejection("out_of_range", detail)
    event = Event(
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
    return check_key(key, event) or event


def parse_item(data: bytes, *, decode: Callable[[bytes], Any] = _item_decoder.decode) -> ItemRecord | Rejection:
    """Decode and validate one catalog record; returns the :class:`ItemRecord` or a :class:`Rejection`,
    never raises (``decode`` as in :func:`parse_event`). Catalog keys are not checked: the payload
    names the item.

    >>> parse_item(b'{"item_id":"i1","text":"Red running shoes","attributes":{"category":"shoes"}}').attributes
    {'category': 'shoes'}
    >>> parse_item(b'{"text":"x"}').reason
    'missing_field'
    >>> parse_item(b'{"item_id":"i\\xff","text":"an item"}').reason
    'invalid_utf8'
    """
    try:
        item = _decode(decode, data)
        if isinstance(item, Rejection):
            return _name_attribute(item, data)
        if not isinstance(item, ItemRecord):
            return Rejection("decode_error", f"the decoder returned {type(item).__name__}, not an ItemRecord")
        return item
    except Exception as exc:  # the kind: nothing in one record may escape and stop a consumer
        return _unexpected(exc)


def _name_attribute(rejection: Rejection, data: bytes) -> Rejection:
    """``rejection`` with msgspec's ``$.attributes[...]`` (it cannot name a map's key) replaced by the attribute's
    name, found by checking each attribute on its own.

    >>> _name_attribute(Rejection("too_long", "Expected `str` of length <= 256 - at `$.attributes[...]`"),
    ...                 b'{"item_id": "i", "attributes": {"ok": "x", "brand": "%s"}}' % (b"y" * 300)).detail
    "Expected `str` of length <= 256 - at `$.attributes['brand']`"
    """
    if "`$.attributes[...]" not in rejection.detail:
        return rejection
    try:
        attributes = msgspec.json.decode(data).get("attributes")
        for name, value in attributes.items():
            try:
                msgspec.convert(value, AttrValue)
            except msgspec.ValidationError:
                return Rejection(rejection.reason, rejection.detail.replace("[...]", f"[{name!r}]", 1))
    except (msgspec.DecodeError, AttributeError, UnicodeDecodeError, RecursionError):
        pass  # the rejection as msgspec worded it is still right, only less precise
    return rejection
