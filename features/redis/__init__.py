"""The Redis adapter: key layout, Lua scripts, deferred pipeline replies and the store of user state,
item vectors and global signals.

Import from the modules (``features.redis.store``, ...); this package re-exports nothing. Inside it,
``import redis`` is the redis-py client (imports are absolute).
"""

__all__: list[str] = []
