"""Error answers of the HTTP API, in OpenAI's shape (DESIGN.md §7), rendered in one place.

Every error on every endpoint is ``{"error": {"message", "type", "param", "code"}}``: ``message`` says
what is wrong in one line, ``param`` names the field (``candidates[2].item_id``; null when the whole
request is at fault), ``code`` is p13n's reason (``invalid_field``, ``body_too_large``,
``store_unavailable``, …) and ``type`` is OpenAI's class of the status.

The request path raises; :meth:`ApiError.of` turns any exception into the one error answer class, once:

* :class:`ApiError` — an HTTP answer decided in the ingress (auth, routing, limits): itself;
* Starlette's ``ClientDisconnect`` — the client left before its body was read: 400 ``client_disconnected``;
* :class:`~p13n.errors.BadRequest` — a field is invalid: 422 (400 for a body that is not JSON, 413 for
  one over a limit);
* :class:`~p13n.errors.ServiceError` — a dependency is down: 503 ``service_unavailable`` with the
  reason (502 for the upstream LLM, a bad gateway);
* anything else is a bug: 500 ``internal_error``, without its message (the server log has it).

:meth:`ApiError.response` renders it (the structs are in ``serving/responses.py``).

>>> import json
>>> json.loads(ApiError.of(BadRequest("expected a string", param="messages[0].content")).response().body)
{'error': {'message': 'expected a string', 'type': 'invalid_request_error', 'param': 'messages[0].content', 'code': 'invalid_field'}}
>>> from p13n.errors import StoreUnavailable
>>> ApiError.of(StoreUnavailable("Redis unavailable: ConnectionError")).response().status_code
503
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.responses import Response

from p13n.errors import BadRequest, ServiceError, UpstreamUnavailable
from serving.responses import ErrorAnswer, ErrorDetail, EventRejection, encode, json_response

__all__ = ["ApiError", "error_type", "ERROR_TYPES", "INTERNAL_ERROR"]

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
#: The ``code`` of an error nobody raised on purpose (a bug).
INTERNAL_ERROR = "internal_error"


def error_type(status: int) -> str:
    """OpenAI's error ``type`` of an HTTP status.

    >>> error_type(401), error_type(504), error_type(418)
    ('authentication_error', 'api_error', 'invalid_request_error')
    """
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


class ApiError(Exception):
    """An error answer: HTTP ``status``, a one-line ``message``, the ``param`` at fault (or None), p13n's
    ``code``; ``headers`` to send with it; ``rejected`` the events of a ``/v1/events`` request when none was
    accepted (its answer then carries ``accepted: 0`` and them)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str,
                 headers: dict[str, str] | None = None,
                 rejected: list[EventRejection] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers
        self.rejected = rejected

    @classmethod
    def of(cls, exc: BaseException, headers: dict[str, str] | None = None) -> ApiError:
        """``exc`` as an API error (see the module docstring), with ``headers`` added to its own."""
        if isinstance(exc, ApiError):
            error = exc
        elif isinstance(exc, BadRequest):
            error = cls(BAD_REQUEST_STATUS.get(exc.code, 422), str(exc), param=exc.param, code=exc.code)
        elif isinstance(exc, ServiceError):
            error = cls(502 if isinstance(exc, UpstreamUnavailable) else 503, str(exc), code=exc.reason)
        elif isinstance(exc, ClientDisconnect):
            error = cls(400, "client disconnected before the body was read", code="client_disconnected")
        else:
            error = cls(500, "internal error; the server log has the details", code=INTERNAL_ERROR)
        if headers:
            error.headers = {**headers, **(error.headers or {})}
        return error

    def answer(self) -> ErrorAnswer:
        """The body: ``{"error": {"message", "type", "param", "code"}}`` (and the rejected events)."""
        detail = ErrorDetail(self.message, error_type(self.status), self.param, self.code)
        if self.rejected is None:
            return ErrorAnswer(detail)
        return ErrorAnswer(detail, accepted=0, rejected=self.rejected)

    def body(self) -> bytes:
        """:meth:`answer` as JSON bytes (for an error sent inside a stream that has begun)."""
        return encode(self.answer())

    def response(self) -> Response:
        return json_response(self.answer(), self.status, self.headers)
