"""Commands written to Redis now, their replies read later.

redis-py's pipeline sends and then waits, in one call. The consumer wants to hand
one partition's writes to Redis and fold the next partition while Redis executes
them, so :class:`DeferredPipeline` writes each group of commands to the socket as
soon as it is ready and reads every reply at the end. All commands travel on one
connection, so Redis applies them in the order they were sent — the order the
exactly-once protocol relies on (a partition's global deltas before its users).

With a Redis Cluster client, whose commands go to several nodes over several
connections, there is no such order between nodes: each group of commands is
executed when it is sent (a cluster pipeline, split by node) and its replies are
kept until they are asked for. The same results, without the overlap; a group
is acknowledged before the next one is sent, so a partition's global deltas are
applied before its users' writes go out, as on one node. A group that meets an
unavailable node raises at once (the commands after it are never sent).

>>> import redis
>>> pipe = DeferredPipeline(redis.Redis(port=1))  # nothing is sent before the first command
>>> pipe.replies()
[]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

try:  # hiredis packs a command in C; redis-py's own packer is the fallback
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    _pack_command = None

__all__ = ["DeferredPipeline", "is_cluster_client"]


def is_cluster_client(client) -> bool:
    """True for a Redis Cluster client (its commands go to several nodes; it has no single connection pool).

    >>> import redis
    >>> is_cluster_client(redis.Redis(port=1))
    False
    """
    return not hasattr(client, "connection_pool")


class DeferredPipeline:
    """Send now, read later. Use as a context manager, or call :meth:`replies` exactly once."""

    def __init__(self, client) -> None:
        self._client = client
        self._cluster = is_cluster_client(client)
        self._done: list = []  # a cluster client's replies, executed but not yet read
        self._conn = None
        self._count = 0

    def send(self, commands: Iterable[Sequence]) -> None:
        """Write ``commands`` (tuples of arguments: bytes, str or int) to Redis without waiting (a cluster
        client: executed now, replies kept)."""
        if self._cluster:
            self._execute_on_cluster(commands)
            return
        first = self._conn is None
        if first:
            self._conn = self._client.connection_pool.get_connection()
        commands = [c if type(c) is tuple else tuple(c) for c in commands]  # hiredis packs tuples
        if not commands:
            return
        try:
            if _pack_command is not None:
                # one buffer per command, written one after the other: joining them would copy every
                # user state once more (a command of user writes is a few hundred KB)
                packed = [_pack_command(c) for c in commands]
            else:
                packed = self._conn.pack_commands(commands)
            self._conn.send_packed_command(packed, check_health=first)
        except BaseException:
            self._release(broken=True)
            raise
        self._count += len(commands)

    def replies(self, count: int | None = None) -> list:
        """The replies of the next ``count`` sent commands (all outstanding ones by default), in order;
        a command that failed gives its ``ResponseError``. Several senders may share the pipeline, each
        reading its own replies in the order they sent; the connection goes back to the pool once no
        reply is outstanding.

        Connection errors and timeouts are raised (the connection is dropped, never reused
        with replies still unread)."""
        import redis

        if self._cluster:
            count = len(self._done) if count is None else count
            if count > len(self._done):
                raise ValueError(f"{count} replies asked for, {len(self._done)} outstanding")
            out, self._done = self._done[:count], self._done[count:]
            self._count = len(self._done)
            return out
        count = self._count if count is None else count
        if count > self._count:
            raise ValueError(f"{count} replies asked for, {self._count} outstanding")
        if self._conn is None or count == 0:
            return []
        out: list = []
        try:
            for _ in range(count):
                try:
                    out.append(self._conn.read_response())
                except redis.ResponseError as exc:
                    out.append(exc)
                self._count -= 1
        except BaseException:
            self._release(broken=True)
            raise
        if self._count == 0:
            self._release(broken=False)
        return out

    def abandon(self) -> None:
        """Drop the connection and every unread reply (after an error; the commands' effects are unknown)."""
        self._done = []
        self._release(broken=True)

    def _execute_on_cluster(self, commands: Iterable[Sequence]) -> None:
        """Run ``commands`` as one non-transactional cluster pipeline (one round trip per node, redis-py
        retries redirections and broken connections); command errors are kept as replies, an unavailable
        node or cluster is raised."""
        from p13n.connections import REDIS_UNAVAILABLE

        pipe = self._client.pipeline(transaction=False)
        queued = 0
        for command in commands:
            pipe.execute_command(*command)
            queued += 1
        if not queued:
            return
        try:
            replies = pipe.execute(raise_on_error=False)
        finally:
            pipe.reset()
        for reply in replies:
            if isinstance(reply, REDIS_UNAVAILABLE):
                raise reply
        self._done.extend(replies)
        self._count = len(self._done)

    def _release(self, *, broken: bool) -> None:
        conn, self._conn, self._count, self._done = self._conn, None, 0, []
        if conn is None:
            return
        if broken:
            conn.disconnect()
        self._client.connection_pool.release(conn)

    def __enter__(self) -> DeferredPipeline:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Leaving early (an exception, or replies never read) must not hand a connection with
        # unread replies back to the pool.
        self._release(broken=self._count > 0)
