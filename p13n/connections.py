"""Redis clients built from configuration, where they are used (never at import); Kafka's are in
:mod:`p13n.kafka_client`.

>>> from p13n.config import RedisConfig
>>> client = redis_client(RedisConfig(url="redis://127.0.0.1:1/0"))   # no connection is made yet
>>> type(client).__module__, type(redis_client(RedisConfig(url="redis://127.0.0.1:1/0"), asyncio=True)).__module__
('redis.client', 'redis.asyncio.client')
>>> check_redis(RedisConfig(url="redis://127.0.0.1:1/0", timeout_ms=200))
Traceback (most recent call last):
...
p13n.errors.ConfigError: redis.url: cannot connect to redis://127.0.0.1:1/0 (Error 111 connecting to 127.0.0.1:1. Connection refused.)
>>> check_redis(RedisConfig(url="redis://127.0.0.1:1/0", cluster=True, timeout_ms=200))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
p13n.errors.ConfigError: redis.url: cannot connect to the cluster at redis://127.0.0.1:1/0 (Redis Cluster cannot be connected...)
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import redis.exceptions as _redis_errors

from p13n.config import RedisConfig
from p13n.errors import ConfigError

__all__ = ["redis_client", "async_redis_client", "REDIS_UNAVAILABLE", "check_redis", "redacted_url",
           "zset_listpack_entries", "covisit_rows_warning"]

#: redis-py's errors that mean "Redis cannot serve this right now; retry later or answer degraded", a
#: Redis Cluster's included: refused or reset connections, timeouts, LOADING while a restarted server reads
#: its append-only file, READONLY after a failover, CLUSTERDOWN / TRYAGAIN / MOVED-ASK left after the
#: client's own retries, and slots no reachable master serves while one is down.
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (
    _redis_errors.ConnectionError,  # includes BusyLoadingError, MaxConnectionsError
    _redis_errors.TimeoutError,
    _redis_errors.ReadOnlyError,
    _redis_errors.ClusterError,  # ClusterDownError, MasterDownError
    _redis_errors.TryAgainError,
    _redis_errors.AskError,  # MovedError
    _redis_errors.SlotNotCoveredError,
)


def _timeouts(config: RedisConfig, timeout_ms: float | None) -> tuple[float, float]:
    """(socket timeout, connect timeout) in seconds; connecting waits at most 1 s (a dead host should fail
    fast, a slow command may take the whole timeout)."""
    timeout = (timeout_ms if timeout_ms is not None else config.timeout_ms) / 1000
    return timeout, min(1.0, timeout)


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


def redis_client(config: RedisConfig, *, timeout_ms: float | None = None, asyncio: bool = False):
    """The one Redis client factory: a redis-py client with its own connections, sync or (``asyncio``, the Serve
    app's request path) ``redis.asyncio``, a single node or, with ``redis.cluster``, a Redis Cluster — the same
    timeouts (``timeout_ms`` overrides ``redis.timeout_ms``; connecting waits at most 1 s) and
    ``max_connections`` (per node on a cluster) either way.

    - sync, single node: ``redis.Redis`` over a blocking pool (a caller waits up to the timeout for a free
      connection); it connects on its first command.
    - sync, cluster: ``redis.cluster.RedisCluster``, which learns the slot map from the node in ``redis.url``
      at once (it raises ``RedisClusterException`` when no node answers).
    - asyncio: ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``, whose pool does not block:
      with every connection busy a command fails at once (``MaxConnectionsError``, one of
      :data:`REDIS_UNAVAILABLE`) instead of queueing past a request's latency budget. Connections broken by a
      Redis restart are dropped and re-opened by redis-py's retry on the next command.
    """
    timeout, connect_timeout = _timeouts(config, timeout_ms)
    options = {"socket_timeout": timeout, "socket_connect_timeout": connect_timeout,
               "max_connections": config.max_connections}  # fmt: skip
    if asyncio:
        return _async_client(config, options)
    import redis
    from redis.cluster import RedisCluster

    if config.cluster:
        return RedisCluster.from_url(config.url, **options)
    return redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(config.url, timeout=timeout, **options))


def async_redis_client(config: RedisConfig, *, timeout_ms: float | None = None):
    """:func:`redis_client` with ``asyncio=True``."""
    return redis_client(config, timeout_ms=timeout_ms, asyncio=True)


def _async_client(config: RedisConfig, options: dict):
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    if config.cluster:
        # No cluster-level retries: redis-py's closes every connection of the client and sleeps 250 ms per
        # attempt (a request waited ~2.5 s on a dead master, past any latency budget, and disturbed the
        # requests sharing the client). A failed read degrades this request; the next one tries again.
        # MOVED and ASK redirections are still followed.
        return RedisCluster.from_url(config.url, retry=Retry(NoBackoff(), 0), **options)
    return aioredis.Redis.from_url(config.url, **options)


def check_redis(config: RedisConfig) -> None:
    """Raise :class:`ConfigError` naming ``redis.url`` unless Redis (every node of a cluster) answers PING."""
    import redis

    try:
        client = redis_client(config)
    except _redis_errors.RedisClusterException as exc:  # the cluster client reads the slot map at once
        raise ConfigError(f"redis.url: cannot connect to the cluster at {redacted_url(config.url)} ({exc})") from exc
    try:
        client.ping()
    except REDIS_UNAVAILABLE as exc:
        raise ConfigError(f"redis.url: cannot connect to {redacted_url(config.url)} ({exc})") from exc
    except redis.ResponseError as exc:
        raise ConfigError(f"redis.url: {redacted_url(config.url)} answered with an error ({exc})") from exc
    finally:
        client.close()


def zset_listpack_entries(client) -> int | None:
    """The server's ``zset-max-listpack-entries`` (``zset-max-ziplist-entries`` before Redis 7): sorted sets of
    at most this many members are kept as a compact listpack. The smallest over every node of a Redis
    Cluster client; None when the server does not say (CONFIG refused or renamed, as some managed services
    do, or Redis unreachable: the consumer's loop deals with that)."""
    import redis
    from redis.cluster import RedisCluster

    values: list[str] = []
    for name in ("zset-max-listpack-entries", "zset-max-ziplist-entries"):
        try:
            if isinstance(client, RedisCluster):  # node -> reply, or the reply alone when there is one node
                reply = client.config_get(name, target_nodes=RedisCluster.ALL_NODES)
            else:
                reply = client.config_get(name)
        except (redis.ResponseError, *REDIS_UNAVAILABLE):
            return None
        keys = (name, name.encode())
        replies = [reply] if any(k in reply for k in keys) else list(reply.values())
        values = [v for r in replies if isinstance(r, dict) for k, v in r.items() if k in keys]
        if values:
            break
    try:
        return min(int(v) for v in values) if values else None
    except ValueError:
        return None


def covisit_rows_warning(client, top_m: int) -> str | None:
    """What to tell an operator whose Redis keeps co-visitation rows of ``top_m`` members
    (``state.covisit_top_m``) as skiplists: ~11x the bytes of a listpack at 500 members (33 KB against
    3 KB per MovieLens row, benchmarks/QUALITY-EXPERIMENTS.md). None when the setting covers ``top_m`` or
    the server does not say (:func:`zset_listpack_entries`)."""
    entries = zset_listpack_entries(client)
    if entries is None or entries >= top_m:
        return None
    return (f"Redis zset-max-listpack-entries is {entries}, below state.covisit_top_m = {top_m}: co-visitation rows "
            f"past {entries} neighbours become skiplists (~65-105 B per neighbour instead of ~6-14 B); set "
            f"zset-max-listpack-entries to at least {top_m} in the Redis configuration (README: Redis settings)")
