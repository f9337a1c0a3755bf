"""Intake: a poll's records become events grouped by user, each event with the Kafka offset it came with.

The first step of the processing stage (:mod:`stream.processing`), pure: no Redis, no Kafka client.
A record that does not decode becomes a :class:`~stream.records.DeadLetter` value, never an
exception; its good neighbours are kept.

>>> from stream.records import records_from_lines
>>> event = b'{"event_id": "e1", "user_id": "a", "type": "view", "timestamp": 1767225600000, "item_id": "i"}'
>>> intake = take_in(records_from_lines([event, b"{nope"], "events"), now_ms=1767225600000)
>>> [(key, [(offset, e.event_id) for offset, e in events]) for key, events in intake.groups.items()]
[(('default', 'a', 2), [(0, 'e1')])]
>>> [d.reason for d in intake.dead_letters]
['invalid_json']
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from features.core.events import Event, Rejection, parse_event
from features.core.memory import clean_text
from p13n.vocabulary import TEXT_EVENT_TYPES
from stream.records import DeadLetter, Record, decode_error

__all__ = ["UserKey", "AtOffset", "Intake", "take_in", "texts_to_embed"]

#: Whose events: (tenant, user_id, partition). A user's events live in one partition (the Kafka key).
UserKey = tuple[str, str, int]
#: An event with the offset of the record it came in.
AtOffset = tuple[int, Event]


@dataclass
class Intake:
    """A poll's events per user (in the order they were fetched) and its dead letters."""

    groups: dict[UserKey, list[AtOffset]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def events(self) -> list[Event]:
        return [e for group in self.groups.values() for _, e in group]


def take_in(records: Iterable[Record], *, now_ms: int, parse: Callable[..., Event | Rejection] = parse_event,
            limits: dict | None = None) -> Intake:  # fmt: skip
    """Decode ``records`` with ``parse`` (``now_ms`` bounds future timestamps, ``limits`` are
    :func:`features.core.events.event_limits`); any exception out of ``parse`` dead-letters its record
    (``decode_error``)."""
    groups: dict[UserKey, list[AtOffset]] = defaultdict(list)
    letters: list[DeadLetter] = []
    kwargs = limits or {}
    for record in records:
        try:
            parsed = parse(record.value or b"", now_ms=now_ms, key=record.key, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the safety net: no record's decoding may stop the loop
            parsed = decode_error(exc)
        if isinstance(parsed, Rejection):
            letters.append(DeadLetter(record, parsed.reason, parsed.detail))
        else:
            groups[(parsed.tenant, parsed.user_id, record.partition)].append((record.offset, parsed))
    return Intake(dict(groups), letters)


def texts_to_embed(events: Sequence[Event], memory_chars: int | None) -> list[str]:
    """The distinct texts a batch needs vectors for, sorted: of text-carrying events (their topic
    embedding) and, when memories are on (``memory_chars``, their length cap), the cleaned text of
    messages (usually the same).

    >>> said = Event(event_id="m", user_id="u", type="message", ts_ms=0, text="  hi  ")
    >>> texts_to_embed([said], None), texts_to_embed([said], 100)
    (['  hi  '], ['  hi  ', 'hi'])
    """
    phrases = {e.text for e in events if e.text and e.type in TEXT_EVENT_TYPES}
    if memory_chars is not None:
        phrases |= {clean_text(e.text, memory_chars) for e in events if e.text and e.type == "message"}
    return sorted(phrases - {""})
