"""Kafka clients built from configuration, where they are used (never at import): the reachability check,
the one producer constructor (``p13n produce``, the consumer's tests, ``POST /v1/events``) and topic creation
(``p13n topics``, the dev stack, seeding, benchmarks).

>>> from p13n.config import KafkaConfig
>>> check_kafka(KafkaConfig(bootstrap="127.0.0.1:1"), timeout_ms=200)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
p13n.errors.ConfigError: kafka.bootstrap: cannot connect to 127.0.0.1:1 (...)
"""

from __future__ import annotations

import socket
import time

from p13n.config import KafkaConfig
from p13n.errors import ConfigError, ServiceError

__all__ = ["check_kafka", "make_producer", "producer_settings", "ensure_topics"]


def check_kafka(config: KafkaConfig, timeout_ms: int = 5000) -> None:
    """Raise :class:`ConfigError` naming ``kafka.bootstrap`` unless a broker answers."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    reachable = []
    for server in config.bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=min(timeout_ms, 2000) / 1000).close()
            reachable.append(server.strip())
        except OSError as exc:
            last_error = exc
    if not reachable:
        raise ConfigError(f"kafka.bootstrap: cannot connect to {config.bootstrap} ({last_error})")
    try:
        admin = KafkaAdminClient(bootstrap_servers=config.bootstrap.split(","), request_timeout_ms=timeout_ms)
    except (KafkaError, OSError) as exc:
        raise ConfigError(f"kafka.bootstrap: cannot connect to {config.bootstrap} ({type(exc).__name__})") from exc
    admin.close()


def producer_settings(config: KafkaConfig) -> dict[str, object]:
    """Every p13n producer's ``KafkaProducer`` settings: acks=all (a sent record is durable), 5 retries.

    >>> from p13n.config import KafkaConfig
    >>> producer_settings(KafkaConfig(bootstrap="a:9092,b:9092"))["bootstrap_servers"]
    ['a:9092', 'b:9092']
    """
    return {"bootstrap_servers": config.bootstrap.split(","), "acks": "all", "linger_ms": 5, "retries": 5,
            "request_timeout_ms": 10000}


def make_producer(config: KafkaConfig, **options):
    """A kafka-python producer for ``config`` (acks=all, so a sent record is durable); ``options`` are more
    ``KafkaProducer`` settings (e.g. ``max_block_ms`` for a caller that must answer in time).

    Its partitioner is kafka-python's default: ``(murmur2(key) & 0x7fffffff) % partitions``, the Java
    client's; librdkafka-based producers must set ``partitioner=murmur2_random`` to agree."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        return KafkaProducer(**producer_settings(config), **options)
    except KafkaError as exc:
        raise ServiceError(f"cannot reach Kafka at {config.bootstrap}: {exc}") from exc


def ensure_topics(bootstrap: str, topics: dict[str, int], timeout_s: float = 30.0) -> None:
    """Create the topics of ``topics`` (name -> partitions, replication factor 1) that do not exist yet on the
    brokers ``bootstrap`` (``host:port``), waiting up to ``timeout_s`` for a broker to answer; raises
    :class:`ServiceError` if none does. A topic another process creates meanwhile counts as created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise ServiceError(f"Kafka at {bootstrap} did not answer: {exc}") from exc
            time.sleep(0.1)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, n, 1) for name, n in topics.items() if name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # created concurrently by another process: what we wanted
    finally:
        admin.close()
