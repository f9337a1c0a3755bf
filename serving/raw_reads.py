"""The request path's Redis round trips as raw commands on connections of its own: no redis-py pipeline.

redis-py's asyncio ``Pipeline.execute`` spent ~0.4 ms of CPU per ``/v1/score`` on this 2-core machine (py-spy,
MovieLens bodies at 100 req/s): its retry wrapper, the pool's lock and connection-count metrics and the
``can_read`` check on every checkout, a task per write (``asyncio.wait_for`` under the socket timeout), a
timeout scope per reply, and a response callback per command. Here a request's commands are packed by hiredis
into one write and their replies read in order, on a connection taken from a plain list.

Replies are Redis's own, undecoded (RESP2): ``HGET`` bytes or None, ``HMGET`` and ``ZMSCORE`` lists of bytes
or None (``float(b"1.5")`` parses them as redis-py's callback does), ``ZRANGE … WITHSCORES`` a flat list.
A command that fails gives its ``redis.ResponseError`` in its place.

Timeouts: the connections have no socket timeout of their own; every call on the request path runs inside the
request's deadline (:func:`serving.budget.within`), which cancels it, and a cancelled or failed connection is
closed, never reused (the object is: it opens a new socket when next used). A connection broken while idle (Redis
restarted) fails its next write or read with a ``ConnectionError``: the call is tried once more on a new socket,
as redis-py's retry did, and the other idle sockets are closed. A cluster client has no single connection pool: use its own pipeline there
(:func:`raw_reader` returns None).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
from hiredis import pack_command

__all__ = ["RawReader", "raw_reader"]


class RawReader:
    """Raw commands in one round trip on a small pool of connections made like ``pool``'s (address, auth, TLS,
    database), without a socket timeout; at most ``max_connections`` at once (more raise
    :class:`redis.exceptions.MaxConnectionsError`, as the client's pool does)."""

    def __init__(self, pool, max_connections: int) -> None:
        kwargs = dict(pool.connection_kwargs)
        kwargs["socket_timeout"] = None  # the request's deadline bounds every call (see the module's docstring)
        self._make = lambda: pool.connection_class(**kwargs)
        self._idle: list = []
        self._busy = 0
        self.max_connections = max_connections

    async def execute(self, commands: Sequence[tuple]) -> list:
        """The replies of ``commands`` (tuples of str, bytes, int or float), in order."""
        packed = [pack_command(c) for c in commands]
        reused = bool(self._idle) and self._idle[-1].is_connected
        try:
            return await self._round_trip(packed)
        except redis.ConnectionError:
            if not reused:
                raise
            await self.close()  # idle connections opened before a Redis restart are broken too
            return await self._round_trip(packed)

    async def _round_trip(self, packed: list[bytes]) -> list:
        if self._idle:
            conn = self._idle.pop()
        elif self._busy >= self.max_connections:
            raise redis.exceptions.MaxConnectionsError("Too many connections")
        else:
            conn = self._make()
        self._busy += 1
        ok = False
        try:
            await conn.send_packed_command(packed, check_health=False)
            replies: list = []
            for _ in packed:
                try:
                    replies.append(await conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
            ok = True
            return replies
        finally:
            self._busy -= 1
            if not ok:  # cancelled or failed: replies may still be on the way, so the socket is never reused
                await conn.disconnect(nowait=True)
            # kept even when closed (it connects again when next used): making one costs ~0.3 ms (redis-py
            # reads its package metadata), which a deadline that cancels many reads under load paid per read
            self._idle.append(conn)

    async def close(self) -> None:
        """Close the idle connections' sockets (they open again when used)."""
        for conn in self._idle:
            await conn.disconnect(nowait=True)


def raw_reader(client, max_connections: int) -> RawReader | None:
    """A :class:`RawReader` beside ``client``'s pool; None for a cluster client (no single pool)."""
    pool = getattr(client, "connection_pool", None)
    return RawReader(pool, max_connections) if pool is not None else None
