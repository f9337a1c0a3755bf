"""Answers of the HTTP API (DESIGN.md §7) as msgspec structs, and the one place they become JSON.

Every JSON body the API sends is one of these structs, encoded by :func:`json_response` (request bodies
are in ``serving/schemas.py``; ``p13n/client/_types.py`` mirrors these for decoding). A struct's field
order is the order of the keys on the wire; a field that is ``UNSET`` is left out (``features`` of a
scored item without ``explain``), ``None`` is sent as ``null``. Times are epoch milliseconds (``ts_ms``,
``timestamp``, ``as_of_ms``), durations milliseconds (``timings_ms``: per stage and ``total``).

>>> encode(ScoreAnswer.in_given_order(["a", "b"], 1, ["redis_timeout"], {"total": 1.5}))
b'{"items":[{"item_id":"a","score":0.0}],"degraded":["redis_timeout"],"timings_ms":{"total":1.5}}'
>>> encode(ErrorAnswer(ErrorDetail("unknown API key", "authentication_error", None, "invalid_api_key")))
b'{"error":{"message":"unknown API key","type":"authentication_error","param":null,"code":"invalid_api_key"}}'
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType
from starlette.responses import Response

__all__ = [
    "ScoredItem", "ScoreAnswer", "ContextItem", "ContextMemory", "RewriteContext", "RewriteAnswer",
    "StatedPreference", "HistoryEntry", "Horizon", "HorizonRef", "AttributeStrength", "AttributeHorizons",
    "UserMemory", "UserProfile", "Deleted", "EventRejection", "EventsAnswer", "Status", "ErrorDetail",
    "ErrorAnswer", "encode", "json_response", "JSON",
]  # fmt: skip

JSON = "application/json"


# --- POST /v1/score --------------------------------------------------------------------------------
class ScoredItem(msgspec.Struct):
    """``score`` is the blend (higher first); ``features`` its parts, with ``explain`` only."""

    item_id: str
    score: float
    features: dict[str, float] | UnsetType = UNSET


class ScoreAnswer(msgspec.Struct):
    """``items`` best first (the top ``k``); ``degraded`` names the stages skipped (empty on the full path)."""

    items: list[ScoredItem]
    degraded: list[str]
    timings_ms: dict[str, float]

    @classmethod
    def in_given_order(cls, ids: list[str], k: int | None, degraded: list[str],
                       timings_ms: dict[str, float]) -> ScoreAnswer:  # fmt: skip
        """The non-personalized answer of the last rung: the first ``k`` candidates in the order given, score 0."""
        return cls([ScoredItem(i, 0.0) for i in (ids[:k] if k else ids)], degraded, timings_ms)


# --- POST /v1/rewrite ------------------------------------------------------------------------------
class ContextItem(msgspec.Struct):
    """A history item placed in the prompt, with its relevance ``score``."""

    item_id: str
    text: str
    score: float


class ContextMemory(msgspec.Struct):
    """A memory placed in the prompt: its latest mention's ``event_id``, every mention's ``event_ids``."""

    event_id: str
    event_ids: list[str]
    text: str
    timestamp: int
    score: float


class RewriteContext(msgspec.Struct):
    """What the rewrite put in the prompt: ``profile`` and ``preferences`` lines, ``memories`` (prompt order)
    and ``history`` items; all empty when nothing was added."""

    profile: list[str] = []
    preferences: list[str] = []
    memories: list[ContextMemory] = []
    history: list[ContextItem] = []

    @classmethod
    def of(cls, context) -> RewriteContext:
        """From a :class:`features.core.prompt.PromptContext` (whose entries are plain dicts of these fields)."""
        return cls(context.profile, context.preferences, [ContextMemory(**m) for m in context.memories],
                   [ContextItem(**h) for h in context.history])  # fmt: skip


class RewriteAnswer(msgspec.Struct):
    """``messages``: the chat messages as sent, with the context message added (unchanged when degraded)."""

    messages: list[dict[str, Any]]
    context: RewriteContext
    degraded: list[str]
    timings_ms: dict[str, float]

    @classmethod
    def unchanged(cls, messages: list[dict[str, Any]], degraded: list[str],
                  timings_ms: dict[str, float]) -> RewriteAnswer:  # fmt: skip
        """The answer of the last rung: the messages as sent, no context."""
        return cls(messages, RewriteContext(), degraded, timings_ms)


# --- GET and DELETE /v1/users/{user_id} ----------------------------------------------------------
class StatedPreference(msgspec.Struct):
    text: str
    ts_ms: int


class HistoryEntry(msgspec.Struct):
    """An event of the recent history (``type`` ``view``, ``click``, …; ``text`` the item's, null if unknown)."""

    item_id: str
    type: str
    ts_ms: int
    text: str | None


class Horizon(msgspec.Struct):
    active: bool


class HorizonRef(msgspec.Struct):
    horizon: str
    tau_s: float


class AttributeStrength(msgspec.Struct):
    attribute: str
    long: float
    short: float


class AttributeHorizons(msgspec.Struct):
    """The top attributes' strengths at the shortest and the longest horizon
    (:func:`features.core.inspection.attribute_horizons`)."""

    short: HorizonRef
    long: HorizonRef
    top: list[AttributeStrength]

    @classmethod
    def of(cls, horizons: dict) -> AttributeHorizons:
        """From :func:`features.core.inspection.attribute_horizons`' plain dict of these fields."""
        return cls(HorizonRef(**horizons["short"]), HorizonRef(**horizons["long"]),
                   [AttributeStrength(**a) for a in horizons["top"]])  # fmt: skip


class UserMemory(msgspec.Struct):
    """A conversational memory: its latest mention's ``event_id``, ``role`` and ``session_id``."""

    event_id: str
    event_ids: list[str]
    text: str
    role: str | None
    timestamp: int
    session_id: str | None


class UserProfile(msgspec.Struct):
    """What p13n believes about a user, read out at ``as_of_ms``: decayed ``attributes`` and ``event_counts``,
    standing ``preferences``, recent ``history``, the 24-hour ``interest_clock_utc``, which embedding
    ``horizons`` are active, the Kafka offsets last applied (by partition) and the latest ``memories``."""

    user_id: str
    tenant: str
    as_of_ms: int
    events_applied: int
    attributes: dict[str, float]
    attribute_horizons: AttributeHorizons
    event_counts: dict[str, float]
    preferences: list[StatedPreference]
    history: list[HistoryEntry]
    interest_clock_utc: list[float]
    horizons: dict[str, Horizon]
    last_applied_offsets: dict[str, int]
    memories: list[UserMemory]


class Deleted(msgspec.Struct):
    """Every key of the user is gone."""

    deleted: bool
    user_id: str


# --- POST /v1/events -------------------------------------------------------------------------------
class EventRejection(msgspec.Struct):
    """Event ``index`` of the request was not accepted, for ``reason`` (``unknown_type``, ``forbidden``, …)."""

    index: int
    reason: str
    detail: str


class EventsAnswer(msgspec.Struct):
    """``accepted`` events were produced to Kafka; ``rejected`` were not (202 when at least one was accepted)."""

    accepted: int
    rejected: list[EventRejection]


# --- health and errors -----------------------------------------------------------------------------
class Status(msgspec.Struct):
    """``GET /healthz`` (``ok``) and ``GET /readyz`` (``ready``)."""

    status: str


class ErrorDetail(msgspec.Struct):
    """OpenAI's error fields: ``type`` the class of the status, ``param`` the field at fault (null for the
    whole request), ``code`` p13n's reason."""

    message: str
    type: str
    param: str | None
    code: str


class ErrorAnswer(msgspec.Struct):
    """Every error answer. ``/v1/events`` adds ``accepted`` (0) and the ``rejected`` events when none was
    accepted; other errors leave both out."""

    error: ErrorDetail
    accepted: int | UnsetType = UNSET
    rejected: list[EventRejection] | UnsetType = UNSET


_encoder = msgspec.json.Encoder()


def encode(answer: msgspec.Struct) -> bytes:
    """The JSON bytes of an answer."""
    return _encoder.encode(answer)


def json_response(answer: msgspec.Struct, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """The HTTP response carrying ``answer``."""
    return Response(_encoder.encode(answer), status_code=status, media_type=JSON, headers=headers)
