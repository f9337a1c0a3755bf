"""Publish JSONL events to Kafka (``p13n produce``): replays, demos, load.

Each line is validated with the same parser the consumer uses, so mistakes in
a file are reported with their line number before anything reaches the topic;
``validate=False`` sends lines untouched (to exercise the dead-letter path).
Records are keyed ``tenant/user_id`` so a user's events share a partition.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from features.events import Rejection, parse_event, user_key
from p13n.config import KafkaConfig
from p13n.errors import InputError, ServiceError

__all__ = ["ProduceReport", "produce_lines", "read_jsonl_lines", "make_producer"]


@dataclass
class ProduceReport:
    """What a produce run did."""

    sent: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason: detail)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def read_jsonl_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of the non-blank lines of ``path``."""
    try:
        fh = path.open("rb")
    except FileNotFoundError as exc:
        raise InputError(f"no such file: {path}") from exc
    with fh:
        for number, line in enumerate(fh, start=1):
            stripped = line.strip()
            if stripped:
                yield number, stripped


def make_producer(config: KafkaConfig, **options):
    """A kafka-python producer for ``config`` (acks=all, so a sent record is durable); ``options`` are more
    ``KafkaProducer`` settings (e.g. ``max_block_ms`` for a caller that must answer in time)."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        return KafkaProducer(
            bootstrap_servers=config.bootstrap.split(","),
            acks="all",
            linger_ms=5,
            retries=5,
            request_timeout_ms=10000,
            **options,
        )
    except KafkaError as exc:
        raise ServiceError(f"cannot reach Kafka at {config.bootstrap}: {exc}") from exc


def _key_of(raw: bytes) -> bytes | None:
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("user_id"), str):
        return user_key(str(obj.get("tenant") or "default"), obj["user_id"]).encode()
    return None


def produce_lines(
    producer,
    topic: str,
    lines: Iterable[tuple[int, bytes]],
    *,
    rate: float | None = None,
    validate: bool = True,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    on_sent: Callable[[int], None] = lambda n: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ProduceReport:
    """Send ``lines`` to ``topic``, at most ``rate`` records/s (None = as fast as possible)."""
    from kafka.errors import KafkaError

    report = ProduceReport()
    start = clock()
    futures = []
    for number, raw in lines:
        if validate:
            parsed = parse_event(raw, now_ms=now_ms())
            if isinstance(parsed, Rejection):
                report.rejected.append((number, f"{parsed.reason}: {parsed.detail}"))
                continue
            key = parsed.key.encode()
        else:
            key = _key_of(raw)
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
