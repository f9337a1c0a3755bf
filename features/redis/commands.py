"""Redis commands as values: what the sans-I/O modules of :mod:`features.redis` produce, and the one way an
executor puts them on a pipeline.

A :data:`Command` is a tuple of a command's arguments, its name first (``("HMGET", key, "v", "s")``). The
modules that know the layout (:mod:`~features.redis.users`, :mod:`~features.redis.items`,
:mod:`~features.redis.global_signals`, :mod:`~features.redis.request`) each give a pair of pure functions:
one returns the commands to send, the other turns the replies, in the same order, into values. No function
there touches a client; the executors do, and only through :func:`queue`, which puts commands on any redis-py
pipeline — ``redis.Redis``'s or ``RedisCluster``'s, and their ``redis.asyncio`` twins alike (queueing
is synchronous on both; only ``execute`` differs, awaited on the asyncio ones) — so the sync store
(:class:`~features.redis.store.RedisStore`) and the Serve app's asyncio reads send the very same commands.

redis-py applies its reply callback by command name, as its named methods do (``ZMSCORE`` scores
become floats, ``HEXISTS`` a bool); a reply shape that differs between RESP2 and RESP3 is parsed here for
both (:func:`score_pairs`).

>>> class Pipe(list):
...     def execute_command(self, *args):
...         self.append(args)
>>> pipe = Pipe()
>>> queue(pipe, [("HGET", "k", "s"), ("EXISTS", "k")])
>>> pipe
[('HGET', 'k', 's'), ('EXISTS', 'k')]
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Command", "queue", "run", "score_pairs"]

Command = tuple  #: (name, *arguments): bytes, str, int or float each


def queue(pipe, commands: Iterable[Command]) -> None:
    """Put ``commands`` on a redis-py pipeline (sync or asyncio, single node or cluster), in order."""
    send = pipe.execute_command
    for command in commands:
        send(*command)


def run(client, commands: Iterable[Command]) -> list:
    """The sync executor: ``commands`` in one non-transactional pipeline (one round trip per node), their
    replies in order; the first command error is raised, as redis-py's ``execute`` does."""
    pipe = client.pipeline(transaction=False)
    queue(pipe, commands)
    return pipe.execute()


def score_pairs(reply: list) -> tuple[list[str], list[float]]:
    """(members, scores) of a raw ``ZRANGE … WITHSCORES`` reply: RESP3's pairs or RESP2's flat list.

    >>> score_pairs([[b"a", 2.0], [b"b", 1.0]]), score_pairs([b"a", b"2", b"b", b"1"]), score_pairs([])
    ((['a', 'b'], [2.0, 1.0]), (['a', 'b'], [2.0, 1.0]), ([], []))
    """
    if reply and isinstance(reply[0], list):
        return [m.decode() for m, _ in reply], [float(score) for _, score in reply]
    return [m.decode() for m in reply[0::2]], [float(score) for score in reply[1::2]]
