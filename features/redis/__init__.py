"""The Redis adapter, one layer: sans-I/O modules (key layout ``keys``, Lua ``scripts``, ``commands`` as values,
and per concern the commands to send and their replies parsed: ``users``, ``items``, ``global_signals``,
``request``) under thin executors (the sync ``store``, on a redis-py pipeline or the ``deferred`` one; the
Serve app's on a ``redis.asyncio`` pipeline runs the same functions).

Import from the modules (``features.redis.store``, ...); this package re-exports nothing. Inside it,
``import redis`` is the redis-py client (imports are absolute).
"""

__all__: list[str] = []
