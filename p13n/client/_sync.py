"""The blocking client."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx2 as httpx

from p13n.client import _core
from p13n.client._core import Backoff, Call
from p13n.client._errors import P13nClientError
from p13n.client._types import Candidate, Deleted, EventsResult, RewriteResult, ScoreResult, UserProfile

__all__ = ["P13nClient"]


class P13nClient:
    """p13n's HTTP API (``p13n serve``), blocking.

    ``base_url`` defaults to ``P13N_BASE_URL`` or ``http://127.0.0.1:8000``, ``api_key`` to ``P13N_API_KEY``
    (each key acts for one tenant). ``timeout`` bounds each request in seconds (a float or an
    ``httpx2.Timeout``). A 503 (a dependency down for a moment) and a refused connection are retried up to
    ``retries`` times with exponential backoff and jitter (:class:`~p13n.client.Backoff`), honouring
    ``Retry-After``; a 4xx never is. ``http_client`` is an ``httpx2.Client`` of your own (proxies,
    transports, event hooks); the client closes only the one it made. Every method raises a
    :class:`~p13n.client.P13nClientError` subclass on failure. Use it as a context manager or call
    :meth:`close`.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float | httpx.Timeout = 10.0, retries: int = 2, backoff: Backoff = Backoff(),
                 http_client: httpx.Client | None = None, seed: int | None = None) -> None:  # fmt: skip
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.base_url = (base_url or os.environ.get("P13N_BASE_URL") or _core.DEFAULT_BASE_URL).rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self._headers = _core.headers(api_key)
        self._own = http_client is None
        self._http = http_client if http_client is not None else httpx.Client(timeout=timeout)
        self._timeout = timeout
        self._rng = random.Random(seed)

    def score(self, user_id: str, candidates: Iterable[str | Candidate | Mapping[str, Any]], *,
              k: int | None = None, budget_ms: float | None = None, explain: bool = False,
              tenant: str | None = None) -> ScoreResult:  # fmt: skip
        """Rank ``candidates`` (item ids, :class:`Candidate`, or ``{"item_id", "text"?}`` mappings) for the user;
        the top ``k`` (all by default). ``explain`` adds each score's ``features``; ``tenant`` asserts which
        tenant the key acts for (403 otherwise). Candidates are sent as given: the server judges them (a
        repeated ``item_id`` is a :class:`BadRequestError` with ``param`` ``candidates[n].item_id``)."""
        return self._send(_core.score_call(user_id, candidates, k, budget_ms, explain, tenant))

    def rewrite(self, user_id: str, prompt: str | None = None,
                messages: Sequence[Mapping[str, Any]] | None = None, *, max_context_tokens: int | None = None,
                budget_ms: float | None = None, tenant: str | None = None) -> RewriteResult:  # fmt: skip
        """The chat ``messages`` (OpenAI format; or one user ``prompt``: exactly one of the two) with this user's
        context inserted, and the context as data."""
        return self._send(_core.rewrite_call(user_id, prompt, messages, max_context_tokens, budget_ms, tenant))

    def send_events(self, events: Iterable[Mapping[str, Any]]) -> EventsResult:
        """Produce events (DESIGN.md §2: ``{event_id, user_id, type, timestamp, item_id?, value?, …}``) to Kafka.
        Bad events beside good ones come back in ``rejected``; when none is accepted the call raises
        :class:`BadRequestError` (``param`` ``events[n]``, ``body["rejected"]`` lists all)."""
        return self._send(_core.events_call(events))

    def get_user(self, user_id: str, *, tenant: str | None = None) -> UserProfile:
        """The user's profile; :class:`NotFoundError` for an unknown user (any id: it is percent-encoded)."""
        return self._send(_core.get_user_call(user_id, tenant))

    def delete_user(self, user_id: str, *, tenant: str | None = None) -> Deleted:
        """Remove every key of the user (state, history, memories); :class:`NotFoundError` when there was none."""
        return self._send(_core.delete_user_call(user_id, tenant))

    def _send(self, call: Call) -> Any:
        content = _core.encode(call)
        headers = {**self._headers, "content-type": "application/json"} if content is not None else self._headers
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(call.method, self.base_url + call.path, content=content,
                                              params=call.params, headers=headers, timeout=self._timeout)  # fmt: skip
            except httpx.TransportError as exc:
                error, safe = _core.transport_error(call, exc)
                error.__cause__ = exc
            else:
                try:
                    return _core.outcome(call, response)
                except P13nClientError as exc:
                    error, safe = exc, _core.retryable(exc)
            error.attempts = attempt + 1
            last = not safe or attempt == self.retries
            wait = None if last else self.backoff.delay(attempt, error.retry_after, self._rng)
            if wait is None:
                raise error
            time.sleep(wait)
        raise AssertionError("unreachable")  # the last attempt raises

    def close(self) -> None:
        if self._own:
            self._http.close()

    def __enter__(self) -> P13nClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
