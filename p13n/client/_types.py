"""Typed answers of the HTTP API (README "HTTP API", DESIGN.md §7), decoded with msgspec.

Fields the server adds later are ignored, so an older client keeps working against a newer server.
Times are epoch milliseconds (``ts_ms``, ``timestamp``), durations milliseconds (``timings_ms``).

>>> import msgspec
>>> msgspec.json.decode(b'{"items": [{"item_id": "a", "score": 0.5}], "degraded": [], "timings_ms": {"total": 3.2}}',
...                     type=ScoreResult)
ScoreResult(items=[ScoredItem(item_id='a', score=0.5, features=None)], degraded=[], timings_ms={'total': 3.2})
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["Candidate", "ScoredItem", "ScoreResult", "ContextItem", "ContextMemory", "RewriteContext",
           "RewriteResult", "EventRejection", "EventsResult", "StatedPreference", "HistoryEntry", "Horizon",
           "UserMemory", "UserProfile", "Deleted"]  # fmt: skip


class Candidate(msgspec.Struct, frozen=True, omit_defaults=True):
    """One candidate of ``score``: an ``item_id`` and, for an item p13n has not seen, its ``text``."""

    item_id: str
    text: str | None = None


class ScoredItem(msgspec.Struct, frozen=True):
    """``score`` is the blend (higher first); ``features`` its parts, with ``explain=True`` only."""

    item_id: str
    score: float
    features: dict[str, float] | None = None


class ScoreResult(msgspec.Struct, frozen=True):
    """``items`` best first (the top ``k``); ``degraded`` names what was skipped to stay in budget (empty when
    the full path ran: ``unknown_user``, ``redis_timeout``, …); ``timings_ms`` per stage and ``total``."""

    items: list[ScoredItem]
    degraded: list[str]
    timings_ms: dict[str, float]


class ContextItem(msgspec.Struct, frozen=True):
    """A history item placed in the prompt, with its relevance ``score``."""

    item_id: str
    text: str
    score: float


class ContextMemory(msgspec.Struct, frozen=True):
    """A conversational memory placed in the prompt (``timestamp`` epoch ms; ``event_ids`` every mention)."""

    event_id: str
    text: str
    timestamp: int
    score: float
    event_ids: list[str] = []


class RewriteContext(msgspec.Struct, frozen=True):
    """What the rewrite put in the prompt: ``profile`` and ``preferences`` lines, ``memories`` (prompt order)
    and ``history`` items."""

    profile: list[str] = []
    preferences: list[str] = []
    memories: list[ContextMemory] = []
    history: list[ContextItem] = []


class RewriteResult(msgspec.Struct, frozen=True):
    """``messages``: the OpenAI chat messages as sent, with p13n's context message inserted."""

    messages: list[dict[str, Any]]
    context: RewriteContext
    degraded: list[str]
    timings_ms: dict[str, float]


class EventRejection(msgspec.Struct, frozen=True):
    """Event ``index`` of the request was not accepted: ``reason`` (``unknown_type``, ``forbidden``, …)."""

    index: int
    reason: str
    detail: str


class EventsResult(msgspec.Struct, frozen=True):
    """``accepted`` events were produced to Kafka (applied once each, by ``event_id``); ``rejected`` were not."""

    accepted: int
    rejected: list[EventRejection]


class StatedPreference(msgspec.Struct, frozen=True):
    text: str
    ts_ms: int


class HistoryEntry(msgspec.Struct, frozen=True):
    """An event of the user's recent history (``type`` ``view``, ``click``, …; ``text`` the item's, if known)."""

    item_id: str
    type: str
    ts_ms: int
    text: str | None = None


class Horizon(msgspec.Struct, frozen=True):
    active: bool


class UserMemory(msgspec.Struct, frozen=True):
    """A conversational memory (latest mention's ``event_id`` and ``session_id``; ``timestamp`` epoch ms)."""

    event_id: str
    text: str
    timestamp: int
    event_ids: list[str] = []
    role: str | None = None
    session_id: str | None = None


class UserProfile(msgspec.Struct, frozen=True):
    """What p13n believes about a user (``GET /v1/users/{user_id}``): decayed ``attributes`` and
    ``event_counts``, standing ``preferences``, recent ``history``, the 24-hour ``interest_clock_utc``, which
    embedding ``horizons`` are active, the Kafka offsets last applied and the 20 latest ``memories``."""

    user_id: str
    tenant: str
    events_applied: int
    attributes: dict[str, float] = {}
    event_counts: dict[str, float] = {}
    preferences: list[StatedPreference] = []
    history: list[HistoryEntry] = []
    interest_clock_utc: list[float] = []
    horizons: dict[str, Horizon] = {}
    last_applied_offsets: dict[str, int] = {}
    memories: list[UserMemory] = []


class Deleted(msgspec.Struct, frozen=True):
    """``DELETE /v1/users/{user_id}``: every key of the user is gone."""

    deleted: bool
    user_id: str
