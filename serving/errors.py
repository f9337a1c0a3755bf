"""Error answers of the HTTP API, in OpenAI's shape (DESIGN.md §7), rendered in one place.

Every error on every endpoint is ``{"error": {"message", "type", "param", "code"}}``: ``message`` says
what is wrong in one line, ``param`` names the field (``candidates[2].item_id``; null when the whole
request is at fault), ``code`` is p13n's reason (``invalid_field``, ``body_too_large``,
``store_unavailable``, …) and ``type`` is OpenAI's class of the status.

The request path raises; :func:`error_response` renders:

* :class:`ApiError` — an HTTP answer decided in the ingress (auth, routing, limits);
* :class:`~p13n.errors.BadRequest` — a field is invalid: 422 (400 for a body that is not JSON, 413 for
  one over a limit);
* :class:`~p13n.errors.ServiceError` — a dependency is down: 503 ``service_unavailable`` with the
  reason (502 for the upstream LLM, a bad gateway).

>>> import json
>>> json.loads(error_response(BadRequest("expected a string", param="messages[0].content")).body)
{'error': {'message': 'expected a string', 'type': 'invalid_request_error', 'param': 'messages[0].content', 'code': 'invalid_field'}}
>>> from p13n.errors import StoreUnavailable
>>> error_response(StoreUnavailable("Redis unavailable: ConnectionError")).status_code
503
"""

from __future__ import annotations

import msgspec
from starlette.responses import Response

from p13n.errors import BadRequest, ServiceError, UpstreamUnavailable

__all__ = ["ApiError", "error_body", "error_response", "status_of", "ERROR_TYPES"]

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "service_unavailable",
    503: "service_unavailable",
}
#: BadRequest codes that are not 422: the body as a whole is unusable (400) or too large (413)
BAD_REQUEST_STATUS = {"invalid_json": 400, "invalid_utf8": 400, "empty_body": 400, "too_deep": 400,
                      "body_too_large": 413, "prompt_too_large": 413, "too_many_candidates": 413,
                      "body_timeout": 408, "unsupported_content_encoding": 415}  # fmt: skip


class ApiError(Exception):
    """An error answer decided by the API itself: HTTP ``status``, a one-line ``message``, the ``param`` at
    fault (or None) and p13n's ``code``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str,
                 headers: dict[str, str] | None = None, extra: dict | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers
        self.extra = extra or {}  # more top-level fields beside "error" (e.g. /v1/events' per-event rejections)


def status_of(exc: BaseException) -> int:
    """The HTTP status an error is answered with (500 for anything not raised on purpose)."""
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, BadRequest):
        return BAD_REQUEST_STATUS.get(exc.code, 422)
    if isinstance(exc, UpstreamUnavailable):
        return 502
    if isinstance(exc, ServiceError):
        return 503
    return 500


def error_body(exc: BaseException) -> dict:
    """``{"error": {...}}`` for ``exc``; a bug (not raised on purpose) gets a generic message."""
    status = status_of(exc)
    if isinstance(exc, (ApiError, BadRequest)):
        param, code, message = exc.param, exc.code, str(exc)
    elif isinstance(exc, ServiceError):
        param, code, message = None, exc.reason, str(exc)
    else:
        param, code, message = None, "internal_error", "internal error; the server log has the details"
    extra = exc.extra if isinstance(exc, ApiError) else {}
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}, **extra}  # fmt: skip


def error_response(exc: BaseException, headers: dict[str, str] | None = None) -> Response:
    """The JSON response for ``exc`` (see :func:`error_body`)."""
    extra = {**(headers or {}), **(exc.headers or {} if isinstance(exc, ApiError) else {})}
    return Response(msgspec.json.encode(error_body(exc)), status_code=status_of(exc), media_type="application/json",
                    headers=extra or None)  # fmt: skip
