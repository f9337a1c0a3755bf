"""What the sync and async clients share: requests as data, the retry policy, answers decoded.

A call is a :class:`Call` (method, path, JSON body, answer type, whether a retry after a broken answer is
safe); :func:`outcome` turns an HTTP answer into the typed result or the exception, and
:class:`Backoff` says how long to wait before the next attempt.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx2 as httpx
import msgspec

from p13n.client._errors import (APIConnectionError, APITimeoutError, P13nClientError, ServiceUnavailableError,
                                 error_from_response)  # fmt: skip
from p13n.client._types import Candidate, Deleted, EventsResult, RewriteResult, ScoreResult, UserProfile

__all__ = ["Backoff", "Call", "outcome", "transport_error", "headers", "score_call", "rewrite_call", "events_call",
           "get_user_call", "delete_user_call", "DEFAULT_BASE_URL"]  # fmt: skip

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = frozenset({503})  # a dependency is down for a moment; 4xx are the request's fault: never retried
USER_AGENT = "p13n-client/0.1"
_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: before retry ``n`` (0-based) wait a uniform draw from
    ``[0, min(max_s, base_s · 2ⁿ)]`` — or the server's ``Retry-After`` when it sent one. A ``Retry-After`` over
    ``max_s`` ends the retries (the error carries it, so the caller can schedule the call later).

    >>> b = Backoff(base_s=0.5, max_s=4.0)
    >>> all(0 <= b.delay(n, None, random.Random(n)) <= min(4.0, 0.5 * 2**n) for n in range(8))
    True
    >>> b.delay(0, 2.5, random.Random(0)), b.delay(0, 10.0, random.Random(0))
    (2.5, None)
    """

    base_s: float = 0.5
    max_s: float = 8.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float | None:
        """Seconds before retry ``attempt``, or None when the server asked for longer than ``max_s``."""
        if retry_after is not None:
            return retry_after if retry_after <= self.max_s else None
        return rng.uniform(0.0, min(self.max_s, self.base_s * 2**attempt))


@dataclass(frozen=True)
class Call:
    """One API call: ``idempotent`` calls are retried after a broken or timed-out answer too (the request may
    have been applied); every call is retried after a refused connection and on 503."""

    method: str
    path: str
    body: Any
    answer: type
    idempotent: bool = True
    params: Mapping[str, str] | None = None


def headers(api_key: str | None) -> dict[str, str]:
    """The headers of every request; the key from ``P13N_API_KEY`` when none is given."""
    key = api_key if api_key is not None else os.environ.get("P13N_API_KEY")
    if not key:
        raise ValueError("no API key: pass api_key= or set P13N_API_KEY")
    return {"authorization": f"Bearer {key}", "accept": "application/json", "user-agent": USER_AGENT}


def _candidate(c: str | Candidate | Mapping[str, Any]) -> Any:
    """A candidate as sent: a string is an item id; a mapping is sent as it is (the server validates)."""
    return {"item_id": c} if isinstance(c, str) else c


def _present(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def score_call(user_id: str, candidates: Iterable[str | Candidate | Mapping[str, Any]], k: int | None,
               budget_ms: float | None, explain: bool, tenant: str | None) -> Call:  # fmt: skip
    body = _present(user_id=user_id, candidates=[_candidate(c) for c in candidates], k=k, budget_ms=budget_ms,
                    tenant=tenant)  # fmt: skip
    if explain:
        body["explain"] = True
    return Call("POST", "/v1/score", body, ScoreResult)


def rewrite_call(user_id: str, prompt: str | None, messages: Sequence[Mapping[str, Any]] | None,
                 max_context_tokens: int | None, budget_ms: float | None, tenant: str | None) -> Call:  # fmt: skip
    body = _present(user_id=user_id, prompt=prompt, messages=list(messages) if messages is not None else None,
                    max_context_tokens=max_context_tokens, budget_ms=budget_ms, tenant=tenant)  # fmt: skip
    return Call("POST", "/v1/rewrite", body, RewriteResult)


def events_call(events: Iterable[Mapping[str, Any]]) -> Call:
    # a retried event is applied once (the consumer drops a repeated event_id), so retries are safe
    return Call("POST", "/v1/events", {"events": list(events)}, EventsResult)


def _user_path(user_id: str) -> str:
    """The user's URL path: the id percent-encoded as one segment (ids may hold ``/``, ``?``, ``#``).

    >>> _user_path("a/b?c#d é")
    '/v1/users/a%2Fb%3Fc%23d%20%C3%A9'
    """
    return "/v1/users/" + quote(user_id, safe="")


def get_user_call(user_id: str, tenant: str | None) -> Call:
    return Call("GET", _user_path(user_id), None, UserProfile, params=_present(tenant=tenant) or None)


def delete_user_call(user_id: str, tenant: str | None) -> Call:
    # not retried after a broken answer: the first DELETE may have removed the user, and a retry would say 404
    return Call("DELETE", _user_path(user_id), None, Deleted, idempotent=False, params=_present(tenant=tenant) or None)


def encode(call: Call) -> bytes | None:
    return _ENCODER.encode(call.body) if call.body is not None else None


def outcome(call: Call, response: httpx.Response) -> Any:
    """The typed answer of a 2xx response; raises the :mod:`~p13n.client._errors` class of any other."""
    if response.status_code >= 400:
        raise error_from_response(response.status_code, response.content, response.headers.get("retry-after"))
    try:
        return msgspec.json.decode(response.content, type=call.answer)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise P13nClientError(f"{call.method} {call.path} answered {response.status_code} with an unexpected body: "
                              f"{exc}", status=response.status_code) from exc  # fmt: skip


def transport_error(call: Call, exc: httpx.TransportError) -> tuple[APIConnectionError, bool]:
    """The client's exception for an HTTP-level failure, and whether retrying is safe: always when the
    request never left (refused, connect timeout), for idempotent calls otherwise."""
    unsent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    kind = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
    error = kind(f"{call.method} {call.path}: {type(exc).__name__}: {exc}".rstrip(": "))
    return error, unsent or call.idempotent


def retryable(error: P13nClientError) -> bool:
    return isinstance(error, ServiceUnavailableError) and error.status in RETRY_STATUSES
