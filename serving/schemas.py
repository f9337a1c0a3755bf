"""Request bodies of the HTTP API (DESIGN.md §7), decoded and validated in one step.

:func:`decode_body` returns the request struct or an :class:`ApiError` naming the field.

>>> decode_body(b'{"user_id": "u1", "candidates": [{"item_id": "a"}], "k": 0}', ScoreRequest, max_candidates=10)
ApiError(status=422, message='Expected `int` >= 1 - at `$.k`')
>>> decode_body(b'{"user_id": "u1", "candidates": []}', ScoreRequest, max_candidates=10).user_id
'u1'
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

__all__ = [
    "ApiError",
    "CandidateBody",
    "ScoreRequest",
    "ChatMessage",
    "RewriteRequest",
    "decode_body",
    "MAX_BODY_BYTES",
]

MAX_BODY_BYTES = 4 * 1024 * 1024

UserId = Annotated[str, Meta(min_length=1, max_length=256)]
Tenant = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Budget = Annotated[float, Meta(gt=0, le=60_000)]


class ApiError(msgspec.Struct, frozen=True):
    """An error answer: HTTP status and a one-line message."""

    status: int
    message: str


class CandidateBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    item_id: Annotated[str, Meta(min_length=1, max_length=256)]
    text: Annotated[str, Meta(max_length=8192)] | None = None


class ScoreRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user_id: UserId
    candidates: list[CandidateBody]
    k: Annotated[int, Meta(ge=1)] | None = None
    budget_ms: Budget | None = None
    explain: bool = False
    tenant: Tenant | None = None


class ChatMessage(msgspec.Struct, frozen=True):
    """An OpenAI chat message; content may be a string or a list of content parts."""

    role: Annotated[str, Meta(min_length=1, max_length=32)]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class RewriteRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user_id: UserId
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    max_context_tokens: Annotated[int, Meta(ge=16, le=32_768)] | None = None
    budget_ms: Budget | None = None
    tenant: Tenant | None = None


def decode_body(body: bytes, kind: type, *, max_candidates: int = 1000, max_prompt_bytes: int = 65536):
    """Decode ``body`` into ``kind`` or return an :class:`ApiError` (400 JSON, 413 too large, 422 invalid)."""
    if len(body) > MAX_BODY_BYTES:
        return ApiError(413, f"request body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    if not body.strip():
        return ApiError(400, "request body is empty; expected a JSON object")
    try:
        request = msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        return ApiError(422, str(exc))
    except msgspec.DecodeError as exc:
        return ApiError(400, f"request body is not valid JSON: {exc}")
    if isinstance(request, ScoreRequest) and len(request.candidates) > max_candidates:
        return ApiError(413, f"`candidates` has {len(request.candidates)} entries; the limit is {max_candidates}")
    if isinstance(request, RewriteRequest):
        if (request.prompt is None) == (request.messages is None):
            return ApiError(422, "exactly one of `prompt` or `messages` is required")
        size = len(request.prompt.encode()) if request.prompt is not None else len(body)
        if size > max_prompt_bytes:
            field = "prompt" if request.prompt is not None else "messages"
            return ApiError(413, f"`{field}` is {size} bytes; the limit is {max_prompt_bytes}")
        if request.messages is not None and not request.messages:
            return ApiError(422, "`messages` must not be empty")
    return request
