"""Publish JSONL events or catalog records to Kafka (``p13n produce``): replays, demos, load.

Each line is validated with the same parser the consumer uses for that topic's
schema (:func:`~features.core.events.parse_event` for events, :func:`~features.core.events.parse_item`
for the catalog), so mistakes in a file — invalid JSON or UTF-8 included — are
reported with their line number before anything reaches the topic;
``validate=False`` sends lines untouched (to exercise the dead-letter path).

Events are keyed ``tenant/user_id`` so a user's events share a partition (the key
rule the consumer checks, :func:`~features.core.events.check_key`); catalog records are keyed
``tenant/item_id``, so an item's updates stay in order. A line whose key cannot be read
(``validate=False`` only) is sent without a key. Partitions are chosen by kafka-python's
default partitioner: murmur2 of the key, as the Java client does (README, "Producing events").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec

from features.core.events import Rejection, parse_event, parse_item, user_key
from p13n.clock import now_ms as wall_ms
from p13n.errors import ServiceError, open_input
from p13n.kafka_client import make_producer  # re-exported: the constructor lives with the other clients

__all__ = ["ProduceReport", "Schema", "produce_lines", "read_jsonl_lines", "make_producer"]

#: The record schema of a topic: user events or catalog items.
Schema = Literal["events", "items"]


@dataclass
class ProduceReport:
    """What a produce run did."""

    sent: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason: detail)
    unkeyed: list[int] = field(default_factory=list)  # line numbers sent without a key (validate=False only)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def read_jsonl_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of the non-blank lines of ``path``."""
    with open_input(path) as fh:
        for number, line in enumerate(fh, start=1):
            stripped = line.strip()
            if stripped:
                yield number, stripped


def _key_of(raw: bytes, schema: Schema) -> bytes | None:
    """The key of an unvalidated line, or None when it has none to read (never raises)."""
    id_field = "user_id" if schema == "events" else "item_id"
    try:
        obj = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):  # not JSON, or a string that is not UTF-8
        return None
    if isinstance(obj, dict) and isinstance(obj.get(id_field), str):
        tenant = obj.get("tenant", "default")
        return user_key(tenant if isinstance(tenant, str) else str(tenant), obj[id_field]).encode()
    return None


def _validated_key(raw: bytes, schema: Schema, now_ms: int, limits: Mapping[str, int | float]) -> bytes | Rejection:
    parsed = parse_event(raw, now_ms=now_ms, **limits) if schema == "events" else parse_item(raw)
    return parsed if isinstance(parsed, Rejection) else parsed.key.encode()


def produce_lines(
    producer,
    topic: str,
    lines: Iterable[tuple[int, bytes]],
    *,
    schema: Schema = "events",
    limits: Mapping[str, int | float] | None = None,
    rate: float | None = None,
    validate: bool = True,
    now_ms: Callable[[], int] = wall_ms,
    on_sent: Callable[[int], None] = lambda n: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ProduceReport:
    """Send ``lines`` to ``topic``, at most ``rate`` records/s (None = as fast as possible).

    ``schema`` names what the topic holds; with ``validate`` each line is parsed by it (``limits``:
    :func:`~features.core.events.event_limits` of the configuration) and an invalid one is not sent but
    reported with its line number. Without ``validate`` every line is sent as it is."""
    from kafka.errors import KafkaError

    report = ProduceReport()
    start = clock()
    futures = []
    for number, raw in lines:
        if validate:
            key = _validated_key(raw, schema, now_ms(), limits or {})
            if isinstance(key, Rejection):
                report.rejected.append((number, f"{key.reason}: {key.detail}"))
                continue
        else:
            key = _key_of(raw, schema)
            if key is None:
                report.unkeyed.append(number)
        if rate:
            due = start + report.sent / rate
            delay = due - clock()
            if delay > 0:
                sleep(delay)
        futures.append(producer.send(topic, key=key, value=raw))
        report.sent += 1
        on_sent(report.sent)
    try:
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=30)
    except KafkaError as exc:
        raise ServiceError(f"Kafka did not acknowledge the records: {exc}") from exc
    report.seconds = clock() - start
    return report
