"""The client's exceptions: one class per failure class, each carrying what the API said.

::

    P13nClientError                 status, message, param, code, body, retry_after, attempts
    ├── APIStatusError              the server answered with an error status
    │   ├── BadRequestError         400, 405, 408, 413, 415, 422 (and any other 4xx): ``param`` names the field
    │   ├── AuthenticationError     401: no, malformed or unknown API key
    │   ├── PermissionDeniedError   403: the key acts for another tenant
    │   ├── NotFoundError           404: no such user (``code`` ``user_not_found``) or route
    │   ├── RateLimitError          429
    │   ├── ServiceUnavailableError 502, 503 (after the retries), 504: ``code`` names the dependency
    │   └── InternalServerError     500 and any other 5xx: a server bug
    └── APIConnectionError          no answer: connection refused or reset (``status`` None)
        └── APITimeoutError         no answer within the client's timeout

The API's errors are OpenAI-shaped, ``{"error": {"message", "type", "param", "code"}}``
(DESIGN.md §7); a body in another shape (a proxy's plain-text page) becomes the ``message``.

>>> error = error_from_response(422, b'{"error": {"message": "m", "type": "invalid_request_error", '
...                                  b'"param": "candidates[1].item_id", "code": "duplicate_candidate"}}', None)
>>> type(error).__name__, error.status, error.param, error.code
('BadRequestError', 422, 'candidates[1].item_id', 'duplicate_candidate')
>>> str(error_from_response(503, b"<html>no server</html>", "2"))
'503: <html>no server</html>'
>>> error_from_response(503, b"", "2").retry_after
2.0
"""

from __future__ import annotations

import json
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = ["P13nClientError", "APIStatusError", "BadRequestError", "AuthenticationError", "PermissionDeniedError",
           "NotFoundError", "RateLimitError", "ServiceUnavailableError", "InternalServerError", "APIConnectionError",
           "APITimeoutError", "error_from_response", "parse_retry_after"]  # fmt: skip


class P13nClientError(Exception):
    """A call that did not succeed. ``status`` is the HTTP status (None when no answer came), ``message``
    the server's one-line reason, ``param`` the request field at fault (``candidates[2].item_id``; None when
    the whole request is), ``code`` p13n's reason (``invalid_api_key``, ``store_unavailable``, …), ``body``
    the whole parsed error answer (``/v1/events`` adds ``rejected`` beside ``error``), ``retry_after`` the
    server's ``Retry-After`` in seconds (or None) and ``attempts`` how many requests were sent."""

    def __init__(self, message: str, *, status: int | None = None, param: str | None = None, code: str | None = None,
                 body: Any = None, retry_after: float | None = None) -> None:  # fmt: skip
        super().__init__(f"{status}: {message}" if status is not None else message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.body = body
        self.retry_after = retry_after
        self.attempts = 1


class APIStatusError(P13nClientError):
    """The server answered with an error status (``status`` is set)."""


class BadRequestError(APIStatusError):
    """The request is at fault (400 not JSON, 413 too large, 415, 422 an invalid field named in ``param``)."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing, malformed or unknown."""


class PermissionDeniedError(APIStatusError):
    """403: the key acts for another tenant than the one asked for (``code`` ``wrong_tenant``)."""


class NotFoundError(APIStatusError):
    """404: no such user in the key's tenant (``code`` ``user_not_found``), or no such route."""


class RateLimitError(APIStatusError):
    """429: too many requests (never retried by the client; ``retry_after`` says when to try again)."""


class ServiceUnavailableError(APIStatusError):
    """502/503/504: a dependency is down (``code``: ``store_unavailable``, ``broker_unavailable``,
    ``upstream_unavailable``); a 503 is raised only after the client's retries."""


class InternalServerError(APIStatusError):
    """500 (or another 5xx): a bug on the server; its log has the details."""


class APIConnectionError(P13nClientError):
    """No answer: the connection was refused, reset or broken (``status`` None)."""


class APITimeoutError(APIConnectionError):
    """No answer within the client's ``timeout``."""


_BY_STATUS: dict[int, type[APIStatusError]] = {401: AuthenticationError, 403: PermissionDeniedError,
                                               404: NotFoundError, 429: RateLimitError, 500: InternalServerError,
                                               502: ServiceUnavailableError, 503: ServiceUnavailableError,
                                               504: ServiceUnavailableError}  # fmt: skip


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (relative to ``now_s``,
    epoch seconds; default now); None when absent or unreadable, never negative.

    >>> parse_retry_after("3"), parse_retry_after("0.5"), parse_retry_after("soon"), parse_retry_after(None)
    (3.0, 0.5, None, None)
    >>> parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now_s=784111767.0)
    20.0
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        import time

        seconds = when.timestamp() - (time.time() if now_s is None else now_s)
    return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None


def error_from_response(status: int, content: bytes, retry_after: str | None) -> APIStatusError:
    """The exception for an error answer: its class from ``status``, its fields from the OpenAI-shaped body."""
    body: Any = None
    message, param, code = content[:500].decode("utf-8", "replace").strip() or f"HTTP {status}", None, None
    try:
        body = json.loads(content)
    except ValueError:
        pass
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or message)
        param = error.get("param") if isinstance(error.get("param"), str) else None
        code = error.get("code") if isinstance(error.get("code"), str) else None
    kind = _BY_STATUS.get(status) or (BadRequestError if status < 500 else InternalServerError)
    return kind(message, status=status, param=param, code=code, body=body, retry_after=parse_retry_after(retry_after))
