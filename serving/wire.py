"""Reading a request off the wire: the body under a byte limit, and a user id from the raw path.

Limits are enforced on the bytes read, not on what the client declares: a ``Content-Length`` over the
limit is refused before reading, and a body sent with ``Transfer-Encoding: chunked`` is read only up
to the limit — the first chunk past it ends the request with 413, and nothing of it is parsed or
forwarded.

User ids travel in the path percent-encoded (``urllib.parse.quote(user_id, safe="")``). The ASGI
``path`` is already decoded (``a%2F`` and ``a/`` look alike there, and Starlette re-escapes it when it
rebuilds the URL), so the id is decoded here from ``raw_path`` — the bytes the client sent, which
HAProxy and Serve's replica server (uvicorn) pass through unchanged.

>>> user_id_from_path({"raw_path": b"/v1/users/a%2F", "path": "/v1/users/a/"}, "/v1/users/")
'a/'
>>> user_id_from_path({"raw_path": b"/v1/users/caf%C3%A9%20%3F%23%5C%25", "path": ""}, "/v1/users/")
'café ?#\\\\%'
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote, unquote_to_bytes

from starlette.requests import Request

from p13n.errors import BadRequest

__all__ = ["read_body", "user_id_from_path", "raw_path", "DEFAULT_BODY_TIMEOUT_S"]

#: Longest wait for the next bytes of a request body (seconds) before answering 408.
DEFAULT_BODY_TIMEOUT_S = 10.0


async def read_body(request: Request, limit: int, idle_timeout_s: float = DEFAULT_BODY_TIMEOUT_S) -> bytes:
    """The request body, at most ``limit`` bytes. Raises :class:`BadRequest`:

    * ``unsupported_content_encoding`` (415) for a ``Content-Encoding`` other than ``identity`` (bodies are
      never decompressed: no zip bombs, and the client learns why its gzip body is not JSON);
    * ``body_too_large`` (413) as soon as the declared length or the bytes received pass the limit;
    * ``body_timeout`` (408) when no bytes arrive for ``idle_timeout_s`` seconds (a client that stalls
      mid-body, slowloris-style, is answered instead of holding the request forever).
    """
    encoding = ",".join(request.headers.getlist("content-encoding")).strip().lower()
    if encoding not in ("", "identity"):
        raise BadRequest(f"Content-Encoding {encoding!r} is not supported: send the JSON body uncompressed",
                         code="unsupported_content_encoding")  # fmt: skip
    declared = request.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(f"request body is {declared} bytes; the limit is {limit}", code="body_too_large")
    chunks: list[bytes] = []
    size = 0
    stream = request.stream()
    while True:
        try:
            async with asyncio.timeout(idle_timeout_s):  # no task per chunk, unlike wait_for
                chunk = await anext(stream)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise BadRequest(f"no request body bytes for {idle_timeout_s:g} s (received {size} so far)",
                             code="body_timeout") from None  # fmt: skip
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"request body is over the limit of {limit} bytes (stopped reading at {size})",
                             code="body_too_large")  # fmt: skip
        chunks.append(chunk)
    return b"".join(chunks)


def raw_path(scope: dict) -> str:
    """The path as the client sent it (still percent-encoded), without the query string."""
    raw = scope.get("raw_path")
    if raw is None:  # an ASGI server without raw_path: the best we can do is re-encode the decoded path
        return quote(scope.get("path", ""), safe="/")
    return raw.partition(b"?")[0].decode("latin-1")


def user_id_from_path(scope: dict, prefix: str) -> str:
    """The percent-decoded user id after ``prefix`` in the raw path. Raises :class:`BadRequest` for an empty id,
    a ``/`` that was not encoded, or bytes that are not UTF-8.

    >>> user_id_from_path({"raw_path": b"/v1/users/a/b"}, "/v1/users/")
    Traceback (most recent call last):
    p13n.errors.BadRequest: a user id in a path is one segment: encode `/` as %2F (urllib.parse.quote(user_id, safe=''))
    """
    segment = raw_path(scope)[len(prefix) :]
    if "/" in segment:
        raise BadRequest("a user id in a path is one segment: encode `/` as %2F (urllib.parse.quote(user_id, safe=''))",
                         param="user_id")  # fmt: skip
    try:
        user_id = unquote_to_bytes(segment.encode("latin-1")).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the user id in the path is not percent-encoded UTF-8 (byte {exc.start})", param="user_id",
                         code="invalid_utf8") from None  # fmt: skip
    if not 1 <= len(user_id) <= 256:
        raise BadRequest(f"user_id must be 1 to 256 characters, got {len(user_id)}", param="user_id")
    return user_id
