"""The pure core: events, decay math, user state and its fold, global signals, memories, the scorer,
the prompt builder and the request path's pure steps. No I/O client (contract `core` in pyproject.toml).

Import from the modules (``features.core.state``, ...); this package re-exports nothing.
"""

__all__: list[str] = []
