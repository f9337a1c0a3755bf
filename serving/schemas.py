"""Request bodies of the HTTP API (DESIGN.md §7), decoded and validated in one step.

:func:`decode_body` returns the request struct, :func:`decode_json` any JSON value; both raise
:class:`~p13n.errors.BadRequest` naming the field (``param``) and the reason (``code``): a body that is
not JSON, not UTF-8 or nested too deep (400), a field that is invalid (422) or over a limit (413).

>>> decode_body(b'{"user_id": "u1", "candidates": [{"item_id": "a"}], "k": 0}', ScoreRequest, max_candidates=10)
Traceback (most recent call last):
p13n.errors.BadRequest: Expected `int` >= 1 - at `$.k`
>>> decode_body(b'{"user_id": "u1", "candidates": []}', ScoreRequest, max_candidates=10).user_id
'u1'
>>> try:
...     decode_json(b'{"messages": [{"role": "user", "content": "caf\\xe9"}]}')
... except BadRequest as exc:
...     print(exc.param, exc.code)
messages[0].content invalid_utf8
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from p13n.errors import BadRequest

__all__ = [
    "CandidateBody",
    "ScoreRequest",
    "RewriteRequest",
    "decode_body",
    "decode_json",
    "check_messages",
    "check_chat",
    "MAX_BODY_BYTES",
]

#: The most bytes of a request body the API reads, on every endpoint (Content-Length or chunked alike).
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_ROLE_CHARS = 32

UserId = Annotated[str, Meta(min_length=1, max_length=256)]
Tenant = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Budget = Annotated[float, Meta(gt=0, le=60_000)]


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


class RewriteRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``messages`` stay plain objects: every OpenAI message field (``tool_calls``, ``tool_call_id``,
    ``name``, ``refusal``, …) passes through the rewrite unchanged; :func:`check_messages` checks the
    fields p13n reads."""

    user_id: UserId
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    max_context_tokens: Annotated[int, Meta(ge=16, le=32_768)] | None = None
    budget_ms: Budget | None = None
    tenant: Tenant | None = None


_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_FIELD = re.compile(r"(?:missing required|unknown) field `(?P<field>[^`]+)`")


def _param(message: str) -> str | None:
    """The field a msgspec validation message is about, without the ``$.`` root.

    >>> _param("Expected `int` >= 1 - at `$.candidates[0].item_id`"), _param("Object missing required field `user_id`")
    ('candidates[0].item_id', 'user_id')
    >>> _param("Object contains unknown field `x` - at `$.candidates[1]`"), _param("Expected `object`, got `array`")
    ('candidates[1].x', None)
    """
    at = _AT.search(message)
    path = at.group("path") if at else ""
    field = _FIELD.search(message)
    if field:
        path = f"{path}.{field.group('field')}" if path else field.group("field")
    return path or None


def _locate(body: bytes, bad) -> str | None:
    """The path of the first value (or key) ``bad`` holds for, parsing ``body`` leniently (surrogate escapes for
    invalid UTF-8, ``inf`` for numbers out of range); None when there is none or the body does not parse."""
    try:
        parsed = json.loads(body.decode("utf-8", "surrogateescape"), parse_int=_int_or_inf)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[str, Any]] = [("$", parsed)]
    while stack:
        path, value = stack.pop()
        if bad(value):
            path = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")  # a key's bad bytes
            return path.removeprefix("$").removeprefix(".") or None
        if isinstance(value, dict):
            for key, item in reversed(value.items()):
                stack.append((f"{path}.{key}", item))
                stack.append((f"{path}.{key}", key))  # a key with bad bytes names itself
        elif isinstance(value, list):
            stack.extend((f"{path}[{n}]", item) for n, item in reversed(list(enumerate(value))))
    return None


def _int_or_inf(digits: str) -> int | float:
    """A JSON integer, or ``inf`` for one too long to convert (msgspec and Python both stop near 4300 digits)."""
    try:
        return int(digits)
    except ValueError:
        return math.inf


def _invalid_utf8(value: Any) -> bool:
    return isinstance(value, str) and any("\udc80" <= c <= "\udcff" for c in value)


def _out_of_range(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _decode(body: bytes, kind: type | None) -> Any:
    if not body.strip():
        raise BadRequest("request body is empty; expected a JSON object", code="empty_body")
    try:
        return msgspec.json.decode(body, type=kind) if kind is not None else msgspec.json.decode(body)
    except msgspec.ValidationError as exc:
        message, param = str(exc), _param(str(exc))
        if param is not None and "[...]" in param:  # a path through a free-form object: msgspec cannot name it
            param = _locate(body, _out_of_range) if "out of range" in message else None
            message = f"`{param}`: number out of range" if param else message.split(" - at ")[0]
        raise BadRequest(message, param=param) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    except UnicodeDecodeError:
        param = _locate(body, _invalid_utf8)
        where = f"`{param}`" if param else "request body"
        raise BadRequest(f"{where} is not valid UTF-8", param=param, code="invalid_utf8") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply", code="too_deep") from None


def decode_json(body: bytes) -> Any:
    """Any JSON value (strict UTF-8, no lone surrogates); raises :class:`BadRequest`."""
    return _decode(body, None)


def decode_body(body: bytes, kind: type, *, max_candidates: int = 1000, max_prompt_bytes: int = 65536):
    """Decode ``body`` into ``kind``; raises :class:`BadRequest` (400 JSON, 413 too large, 422 invalid)."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"request body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}", code="body_too_large")
    request = _decode(body, kind)
    if isinstance(request, ScoreRequest):
        if len(request.candidates) > max_candidates:
            raise BadRequest(f"`candidates` has {len(request.candidates)} entries; the limit is {max_candidates}",
                             param="candidates", code="too_many_candidates")  # fmt: skip
        first: dict[str, int] = {}
        unique = len({c.item_id for c in request.candidates}) == len(request.candidates)  # the usual case, in C
        for n, candidate in enumerate(() if unique else request.candidates):
            if candidate.item_id in first:
                raise BadRequest(f"candidate {candidate.item_id!r} appears twice (candidates[{first[candidate.item_id]}] "
                                 f"and candidates[{n}]); send each item once", param=f"candidates[{n}].item_id",
                                 code="duplicate_candidate")  # fmt: skip
            first[candidate.item_id] = n
    if isinstance(request, RewriteRequest):
        if (request.prompt is None) == (request.messages is None):
            raise BadRequest("exactly one of `prompt` or `messages` is required", param="messages",
                             code="missing_field")  # fmt: skip
        if request.messages is not None:
            check_messages(request.messages)
        size = len(request.prompt.encode()) if request.prompt is not None else len(body)
        if size > max_prompt_bytes:
            field = "prompt" if request.prompt is not None else "messages"
            raise BadRequest(f"`{field}` is {size} bytes; the limit is {max_prompt_bytes}", param=field,
                             code="prompt_too_large")  # fmt: skip
    return request


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def check_messages(messages: Any, param: str = "messages") -> list[dict]:
    """Check the fields of OpenAI chat messages that p13n reads: ``role`` (a string) and ``content`` (a
    string, null, or a list of content parts — objects with a string ``type``; a ``text`` part's ``text`` is a
    string). Other fields are the caller's and pass through. Raises :class:`BadRequest` naming the field.

    >>> check_messages([{"role": "user", "content": [{"type": "text", "text": None}]}])
    Traceback (most recent call last):
    p13n.errors.BadRequest: `messages[0].content[0].text` must be a string, got null
    """
    if not isinstance(messages, list) or not messages:
        raise BadRequest(f"`{param}` must be a non-empty array of chat messages", param=param)
    for n, message in enumerate(messages):
        at = f"{param}[{n}]"
        if not isinstance(message, dict):
            raise BadRequest(f"`{at}` must be an object (a chat message), got {_kind(message)}", param=at)
        role = message.get("role")
        if not isinstance(role, str) or not 1 <= len(role) <= MAX_ROLE_CHARS:
            raise BadRequest(f"`{at}.role` must be a string of 1 to {MAX_ROLE_CHARS} characters, got {_kind(role)}",
                             param=f"{at}.role")  # fmt: skip
        content = message.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise BadRequest(f"`{at}.content` must be a string, an array of content parts or null, got "
                             f"{_kind(content)}", param=f"{at}.content")  # fmt: skip
        for m, part in enumerate(content):
            where = f"{at}.content[{m}]"
            if not isinstance(part, dict):
                raise BadRequest(f"`{where}` must be an object (a content part), got {_kind(part)}", param=where)
            if not isinstance(part.get("type"), str):
                raise BadRequest(f"`{where}.type` must be a string, got {_kind(part.get('type'))}", param=f"{where}.type")
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                raise BadRequest(f"`{where}.text` must be a string, got {_kind(part.get('text'))}", param=f"{where}.text")
    return messages


def check_chat(payload: Any, *, max_prompt_bytes: int) -> dict:
    """Check an OpenAI chat completion request as far as p13n reads it (``messages``, ``user``); the rest is
    the upstream's to judge. Raises :class:`BadRequest`."""
    if not isinstance(payload, dict):
        raise BadRequest(f"request body must be a JSON object, got {_kind(payload)}")
    check_messages(payload.get("messages"))
    user = payload.get("user")
    if user is not None and (not isinstance(user, str) or len(user) > 256):
        raise BadRequest("`user` must be a string of at most 256 characters", param="user")
    size = len(msgspec.json.encode(payload["messages"]))
    if size > max_prompt_bytes:
        raise BadRequest(f"`messages` is {size} bytes; the limit is {max_prompt_bytes}", param="messages",
                         code="prompt_too_large")  # fmt: skip
    return payload
