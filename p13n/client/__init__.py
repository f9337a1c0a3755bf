"""A Python client of p13n's HTTP API, sync (:class:`P13nClient`) and asyncio (:class:`AsyncP13nClient`).

It speaks HTTP only (on ``httpx2``; install ``p13n[client]``) and imports nothing of the server::

    from p13n.client import P13nClient, NotFoundError

    with P13nClient("http://127.0.0.1:8000", api_key="p13n-dev-key") as p13n:
        ranked = p13n.score("u1", ["running-001", "running-002"], k=1, explain=True)
        ranked.items[0].item_id, ranked.items[0].features, ranked.degraded, ranked.timings_ms["total"]
        prompt = p13n.rewrite("u1", prompt="What should I buy next?").messages
        p13n.send_events([{"event_id": "e1", "user_id": "u1", "type": "click", "item_id": "running-001",
                           "timestamp": 1767225600000}])
        p13n.get_user("u1").history
        p13n.delete_user("u1")

Answers are typed (msgspec Structs mirroring the API: :class:`ScoreResult`, :class:`RewriteResult`,
:class:`EventsResult`, :class:`UserProfile`, :class:`Deleted`); failures are one exception class each (the
hierarchy: :mod:`p13n.client._errors`), carrying ``status``, ``message``, ``param`` and ``code``.
"""

from p13n.client._async import AsyncP13nClient
from p13n.client._core import Backoff
from p13n.client._errors import (APIConnectionError, APIStatusError, APITimeoutError, AuthenticationError,
                                 BadRequestError, InternalServerError, NotFoundError, P13nClientError,
                                 PermissionDeniedError, RateLimitError, ServiceUnavailableError)  # fmt: skip
from p13n.client._sync import P13nClient
from p13n.client._types import (Candidate, ContextItem, ContextMemory, Deleted, EventRejection, EventsResult,
                                HistoryEntry, Horizon, RewriteContext, RewriteResult, ScoredItem, ScoreResult,
                                StatedPreference, UserMemory, UserProfile)  # fmt: skip

__all__ = [
    # clients
    "P13nClient", "AsyncP13nClient", "Backoff",
    # answers
    "Candidate", "ScoredItem", "ScoreResult", "ContextItem", "ContextMemory", "RewriteContext", "RewriteResult",
    "EventRejection", "EventsResult", "StatedPreference", "HistoryEntry", "Horizon", "UserMemory", "UserProfile",
    "Deleted",
    # errors
    "P13nClientError", "APIStatusError", "BadRequestError", "AuthenticationError", "PermissionDeniedError",
    "NotFoundError", "RateLimitError", "ServiceUnavailableError", "InternalServerError", "APIConnectionError",
    "APITimeoutError",
]  # fmt: skip
