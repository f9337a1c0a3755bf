"""``p13n produce`` as a user runs it (a subprocess) against the session's Kafka: every line that cannot
be sent is reported with its line number and no traceback, and each topic's lines are validated by
that topic's schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from features.core.events import parse_item
from tests.conftest import clean_env
from tests.test_cli_and_devstack import run

GOOD = {"event_id": "e1", "user_id": "u1", "type": "click", "item_id": "i1", "timestamp": 1_767_225_600_000}
ITEM = {"item_id": "sku-1", "text": "Red running shoes", "attributes": {"category": "shoes"}}


def env_for(config) -> dict[str, str]:
    k = config.kafka
    return clean_env(P13N_KAFKA_BOOTSTRAP=k.bootstrap, P13N_KAFKA_EVENTS_TOPIC=k.events_topic,
                     P13N_KAFKA_ITEMS_TOPIC=k.items_topic, P13N_REDIS_URL=config.redis.url)  # fmt: skip


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def read_topic(config, topic: str, count: int) -> list[tuple[bytes | None, bytes]]:
    """The first ``count`` records of ``topic`` as (key, value), polled with a deadline."""
    from kafka import KafkaConsumer, TopicPartition

    from p13n.devstack import wait_until

    consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap, group_id=None)  # no group: no join to wait for
    received: list = []
    try:
        wait_until(lambda: bool(consumer.partitions_for_topic(topic)), timeout=30, what=f"metadata of {topic}")
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)

        def enough() -> bool:
            for records in consumer.poll(timeout_ms=200).values():
                received.extend(records)
            return len(received) >= count

        wait_until(enough, timeout=30, what=f"{count} records on {topic}")
    finally:
        consumer.close()
    return sorted(((r.key, r.value) for r in received), key=lambda kv: (kv[0] or b"", kv[1]))


def test_undecodable_lines_are_rejected_with_their_line_number(tmp_path, config):
    """Invalid UTF-8 inside a string (the hardening case) raised a traceback out of `p13n produce`."""
    bad_utf8 = b'{"event_id":"bad-utf8-1","user_id":"u\xff\xfe","type":"click","item_id":"i1","timestamp":1795000000000}'
    path = write(tmp_path / "events.jsonl", [
        json.dumps(GOOD).encode(),
        bad_utf8,
        b"\xff\xfe\x00 binary",
        json.dumps({**GOOD, "event_id": "e2", "timestamp": 1_767_225_600}).encode(),  # epoch seconds
        json.dumps({**GOOD, "event_id": "e3", "type": "rating", "value": 1e300}).encode(),
        json.dumps({**GOOD, "event_id": "e4", "user_id": "u2"}).encode(),
    ])  # fmt: skip
    result = run(["produce", str(path)], env_for(config), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[:4] == [
        f"{path}:2: rejected: invalid_utf8: a JSON string is not valid UTF-8: 'utf-8' codec can't decode byte 0xff "
        "in position 1: invalid start byte",
        f"{path}:3: rejected: invalid_json: JSON is malformed: invalid character (byte 0)",
        f"{path}:4: rejected: timestamp_too_old: timestamp 1767225600 (1970-01-21T10:53:45Z) is before "
        "1990-01-01T00:00:00Z; it looks like epoch seconds (2026-01-01T00:00:00Z): send epoch milliseconds",
        f"{path}:5: rejected: out_of_range: `value` 1e+300 is beyond ±1e+06 (state.max_abs_value) - at `$.value`",
    ]
    assert f"sent 2 records to {config.kafka.events_topic} (events)" in result.stdout
    assert [key for key, _ in read_topic(config, config.kafka.events_topic, 2)] == [b"default/u1", b"default/u2"]


def test_without_validation_every_line_is_sent_and_unreadable_ones_go_without_a_key(tmp_path, config):
    bad_utf8 = b'{"event_id":"bad-utf8-1","user_id":"u\xff\xfe","type":"click","item_id":"i1","timestamp":1795000000000}'
    path = write(tmp_path / "events.jsonl", [json.dumps(GOOD).encode(), bad_utf8, b"{not json"])
    result = run(["produce", str(path), "--no-validate"], env_for(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{path}:{n}: sent without a key (no user_id could be read; the consumer dead-letters it if it is invalid)"
        for n in (2, 3)
    ]
    assert f"sent 3 records to {config.kafka.events_topic} (events)" in result.stdout
    assert read_topic(config, config.kafka.events_topic, 3) == [
        (None, bad_utf8), (None, b"{not json"), (b"default/u1", json.dumps(GOOD).encode())
    ]


@pytest.mark.parametrize("explicit", [False, True])
def test_catalog_lines_are_validated_as_items(tmp_path, config, explicit):
    """`p13n produce items.jsonl --topic <items topic>` rejected every catalog record (missing_field: event_id)."""
    items = [ITEM, {**ITEM, "item_id": "sku-2", "tenant": "shop"}, {"text": "no id"},
             {"item_id": "sku-3", "attributes": {"year": 2**64}}]  # fmt: skip
    path = write(tmp_path / "items.jsonl", [json.dumps(i).encode() for i in items] + [b'{"item_id":"i\xff"}'])
    args = ["produce", str(path), "--topic", config.kafka.items_topic] if not explicit else \
        ["produce", str(path), "--topic", f"{config.kafka.items_topic}-copy", "--schema", "items"]  # fmt: skip
    result = run(args, env_for(config), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    reasons = [line.split(": ")[2] for line in result.stderr.splitlines()]
    assert reasons == ["missing_field", "out_of_range", "invalid_utf8"]
    assert [line.split(":")[1] for line in result.stderr.splitlines()] == ["3", "4", "5"]
    assert f"sent 2 records to {args[3]} (items)" in result.stdout
    received = read_topic(config, args[3], 2)
    assert [key for key, _ in received] == [b"default/sku-1", b"shop/sku-2"]
    assert [parse_item(value).item_id for _, value in received] == ["sku-1", "sku-2"]
