"""Clients built from configuration, where they are used (never at import).

>>> from p13n.config import RedisConfig
>>> client = redis_client(RedisConfig(url="redis://127.0.0.1:1/0"))   # no connection is made yet
>>> check_redis(RedisConfig(url="redis://127.0.0.1:1/0", timeout_ms=200))
Traceback (most recent call last):
...
p13n.errors.ConfigError: redis.url: cannot connect to redis://127.0.0.1:1/0 (Error 111 connecting to 127.0.0.1:1. Connection refused.)
"""

from __future__ import annotations

import re
import socket
from urllib.parse import urlsplit

from p13n.config import KafkaConfig, RedisConfig
from p13n.errors import ConfigError

__all__ = ["redis_client", "check_redis", "check_kafka", "redacted_url"]


def redacted_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs.

    >>> redacted_url("redis://:s3cret@10.0.0.5:6379/0"), redacted_url("redis://app:s3cret@h/1")
    ('redis://:***@10.0.0.5:6379/0', 'redis://app:***@h/1')
    >>> redacted_url("redis://127.0.0.1:6379/0"), redacted_url("unix:///run/redis.sock?db=0&password=s3cret")
    ('redis://127.0.0.1:6379/0', 'unix:///run/redis.sock?db=0&password=***')
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    if parts.password is not None:
        url = url.replace(parts.netloc, f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}", 1)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


def redis_client(config: RedisConfig, *, timeout_ms: float | None = None):
    """A redis-py client (or cluster client) with its own connection pool."""
    import redis
    from redis.cluster import RedisCluster

    timeout = (timeout_ms if timeout_ms is not None else config.timeout_ms) / 1000
    if config.cluster:
        return RedisCluster.from_url(config.url, socket_timeout=timeout, socket_connect_timeout=timeout)
    pool = redis.BlockingConnectionPool.from_url(
        config.url,
        max_connections=config.max_connections,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        timeout=timeout,
    )
    return redis.Redis(connection_pool=pool)


def check_redis(config: RedisConfig) -> None:
    """Raise :class:`ConfigError` naming ``redis.url`` unless Redis answers PING."""
    import redis

    client = redis_client(config)
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise ConfigError(f"redis.url: cannot connect to {redacted_url(config.url)} ({exc})") from exc
    except redis.ResponseError as exc:
        raise ConfigError(f"redis.url: {redacted_url(config.url)} answered with an error ({exc})") from exc
    finally:
        client.close()


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
