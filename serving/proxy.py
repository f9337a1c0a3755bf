"""The upstream side of the OpenAI-compatible proxy (``/v1/chat/completions``, ``/v1/models``).

:class:`Upstream` calls the OpenAI-compatible LLM at ``serving.upstream_url`` with p13n's upstream key and
relays its answer: the status, the body (streamed as it arrives), and the response headers clients act on
(:func:`relayed_headers`: ``retry-after``, ``x-ratelimit-*``, ``x-request-id``, ``openai-*``). Ray Serve
appends its own request id to ``x-request-id`` (``req_abc, 4f1e…``): the upstream's id comes first, and
alone in ``x-upstream-request-id``. An upstream
error whose body is not in OpenAI's error shape is wrapped into it (:func:`upstream_error_body`), so the SDK
raises its typed exception (``RateLimitError`` for a 429) with the upstream's reason.

Two timeouts bound a call (both answer 502 ``upstream_unavailable``, or end a begun stream with an SSE error
event): ``serving.upstream_timeout_s``, the longest *silence* (before the answer or between chunks), and
``serving.upstream_total_timeout_s``, the whole call from connect to the last byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping

import msgspec
from starlette.responses import Response, StreamingResponse

from p13n.config import ServingConfig
from p13n.errors import UpstreamUnavailable
from serving.errors import ApiError
from serving.responses import JSON

__all__ = ["Upstream", "relayed_headers", "relayed_status", "upstream_error_body", "upstream_user_id",
           "context_role_for", "assistant_text"]  # fmt: skip

log = logging.getLogger("p13n.serving")
RELAYED = ("retry-after", "retry-after-ms", "x-request-id")
RELAYED_PREFIXES = ("x-ratelimit-", "openai-")


def relayed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream response headers a client acts on (lower-cased names).

    >>> sorted(relayed_headers({"Retry-After": "7", "X-RateLimit-Remaining-Requests": "0", "Server": "x",
    ...                         "openai-processing-ms": "12", "Content-Length": "3", "x-request-id": "req_1"}).items())
    ... # doctest: +NORMALIZE_WHITESPACE
    [('openai-processing-ms', '12'), ('retry-after', '7'), ('x-ratelimit-remaining-requests', '0'),
     ('x-request-id', 'req_1'), ('x-upstream-request-id', 'req_1')]
    """
    out = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in RELAYED or lower.startswith(RELAYED_PREFIXES):
            out[lower] = value
    if "x-request-id" in out:  # Ray Serve appends its own request id to x-request-id: this one is the upstream's alone
        out["x-upstream-request-id"] = out["x-request-id"]
    return out


def relayed_status(status: int) -> int:
    """The status an upstream answer is relayed with: as is, but an upstream 5xx other than 502/503/504 is
    502 (p13n itself did not fail; it is a bad gateway).

    >>> relayed_status(429), relayed_status(500), relayed_status(503)
    (429, 502, 503)
    """
    return 502 if status >= 500 and status not in (502, 503, 504) else status


def upstream_error_body(status: int, data: bytes) -> bytes:
    """The body of an upstream error answer: relayed as is when it is OpenAI's error shape, else wrapped into
    it (``code`` ``upstream_error``, the upstream's text in ``message``).

    >>> msgspec.json.decode(upstream_error_body(429, b"slow down"))["error"]  # doctest: +NORMALIZE_WHITESPACE
    {'message': 'upstream LLM answered 429: slow down', 'type': 'rate_limit_error', 'param': None,
     'code': 'upstream_error'}
    >>> shaped = b'{"error":{"message":"bad","type":"invalid_request_error","param":"x","code":"c"}}'
    >>> upstream_error_body(400, shaped) == shaped
    True
    """
    try:
        parsed = msgspec.json.decode(data)
    except msgspec.DecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict) and "message" in parsed["error"]:
        return data
    text = data[:300].decode("utf-8", errors="replace").strip() or "(empty body)"
    return ApiError(status, f"upstream LLM answered {status}: {text}", code="upstream_error").body()


def upstream_user_id(serving: ServingConfig, tenant: str, user_id: str) -> str | None:
    """The ``user`` sent upstream for ``serving.upstream_user``: ``pass`` → ``user_id``; ``pseudonymous`` →
    the first 32 hex digits of HMAC-SHA256(``upstream_user_secret``, ``tenant`` NUL ``user_id``), stable per
    user and tenant, not reversible without the secret; ``drop`` → None (the field is removed).

    >>> cfg = ServingConfig(upstream_user="pseudonymous", upstream_user_secret="k")
    >>> upstream_user_id(cfg, "shop", "u1"), len(upstream_user_id(cfg, "shop", "u1"))
    ('1b9d7be7aa1265bec02f39327ec71d04', 32)
    >>> upstream_user_id(ServingConfig(upstream_user="drop"), "shop", "u1") is None
    True
    """
    if serving.upstream_user == "pass":
        return user_id
    if serving.upstream_user == "drop":
        return None
    digest = hmac.new(serving.upstream_user_secret.encode(), f"{tenant}\0{user_id}".encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def context_role_for(serving: ServingConfig, model: object) -> str:
    """``serving.context_role``, or the role of the longest prefix of ``model`` in ``context_role_by_model``.

    >>> cfg = ServingConfig(context_role_by_model={"o1": "merge", "o1-mini": "developer"})
    >>> context_role_for(cfg, "o1-mini-2024"), context_role_for(cfg, "o1"), context_role_for(cfg, "gpt-4o")
    ('developer', 'merge', 'system')
    """
    if isinstance(model, str):
        matches = [prefix for prefix in serving.context_role_by_model if model.startswith(prefix)]
        if matches:
            return serving.context_role_by_model[max(matches, key=len)]
    return serving.context_role


def assistant_text(data: bytes, streamed: bool) -> str:
    """The text of the first choice of an upstream answer: ``message.content`` of a JSON answer, or the
    concatenated ``delta.content`` of a server-sent-event stream; ``""`` when there is none.

    >>> assistant_text(b'data: {"choices":[{"delta":{"content":"Hi "}}]}\\n\\ndata: {"choices":[{"delta":'
    ...                b'{"content":"there"}}]}\\n\\ndata: [DONE]\\n\\n', streamed=True)
    'Hi there'
    """
    if not streamed:
        try:
            content = msgspec.json.decode(data)["choices"][0]["message"]["content"]
        except (msgspec.DecodeError, KeyError, IndexError, TypeError):
            return ""
        return content if isinstance(content, str) else ""
    parts = []
    for line in data.split(b"\n"):
        if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
            continue
        try:
            delta = msgspec.json.decode(line[5:])["choices"][0]["delta"]
        except (msgspec.DecodeError, KeyError, IndexError, TypeError):
            continue
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            parts.append(delta["content"])
    return "".join(parts)


class Upstream:
    """Calls to the upstream LLM; one aiohttp session per replica, opened on first use."""

    def __init__(self, serving: ServingConfig) -> None:
        self.serving = serving
        self._http = None

    def _session(self):
        import aiohttp

        if self._http is None:
            timeout = aiohttp.ClientTimeout(total=self.serving.upstream_total_timeout_s, sock_connect=10,
                                            sock_read=self.serving.upstream_timeout_s)  # fmt: skip
            self._http = aiohttp.ClientSession(timeout=timeout)
        return self._http

    def _url(self, path: str) -> str:
        if not self.serving.upstream_url:
            raise UpstreamUnavailable("no upstream LLM configured (serving.upstream_url)")
        return self.serving.upstream_url.rstrip("/") + path

    def _timeout_error(self, started: float) -> UpstreamUnavailable:
        total = self.serving.upstream_total_timeout_s
        if time.monotonic() - started >= total - 0.05:
            return UpstreamUnavailable(f"upstream LLM did not finish within {total:g} s "
                                       "(serving.upstream_total_timeout_s)")  # fmt: skip
        silence = self.serving.upstream_timeout_s
        return UpstreamUnavailable(f"upstream LLM did not answer within {silence:g} s (serving.upstream_timeout_s)")

    async def _request(self, method: str, path: str, payload: dict | None):
        import aiohttp

        headers = {"content-type": JSON} if payload is not None else {}
        if self.serving.upstream_api_key:
            headers["authorization"] = f"Bearer {self.serving.upstream_api_key}"
        data = msgspec.json.encode(payload) if payload is not None else None
        started = time.monotonic()
        try:
            return await self._session().request(method, self._url(path), data=data, headers=headers), started
        except asyncio.TimeoutError as exc:  # aiohttp's ServerTimeoutError too
            raise self._timeout_error(started) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(f"upstream LLM unreachable: {type(exc).__name__}: {exc}") from exc

    async def _read(self, upstream, started: float) -> bytes:
        import aiohttp

        try:
            return await upstream.read()
        except asyncio.TimeoutError as exc:
            raise self._timeout_error(started) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(f"upstream LLM failed mid-answer: {type(exc).__name__}: {exc}") from exc
        finally:
            upstream.release()

    async def models(self) -> Response:
        """``GET /models`` of the upstream, relayed (errors in the error shape)."""
        upstream, started = await self._request("GET", "/models", None)
        data = await self._read(upstream, started)
        headers = relayed_headers(upstream.headers)
        if upstream.status >= 400:
            data = upstream_error_body(upstream.status, data)
        return Response(data, status_code=relayed_status(upstream.status), media_type=JSON, headers=headers)

    async def chat(self, payload: dict, headers: dict[str, str],
                   on_answer: Callable[[bytes, bool], None] | None = None) -> Response:  # fmt: skip
        """POST ``payload`` to ``/chat/completions`` and relay the answer with ``headers`` added;
        ``on_answer(body, streamed)`` is called once a successful answer has been read in full (a stream:
        after its last chunk was relayed). Raises :class:`UpstreamUnavailable` before the status line."""
        import aiohttp

        upstream, started = await self._request("POST", "/chat/completions", payload)
        headers = {**relayed_headers(upstream.headers), **headers}
        content_type = upstream.headers.get("content-type", JSON)
        if payload.get("stream") and upstream.status == 200:

            async def relay() -> AsyncIterator[bytes]:
                seen = [] if on_answer is not None else None
                try:
                    async for chunk in upstream.content.iter_any():
                        if seen is not None:
                            seen.append(chunk)
                        yield chunk
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                    # the status line is sent: the failure ends the stream as an SSE error event (no traceback)
                    error = (self._timeout_error(started) if isinstance(exc, asyncio.TimeoutError) else
                             UpstreamUnavailable(f"upstream LLM failed mid-stream: {type(exc).__name__}"))  # fmt: skip
                    log.warning("upstream LLM failed mid-stream: %s", error)
                    yield b"\n\ndata: " + ApiError.of(error).body() + b"\n\ndata: [DONE]\n\n"
                    seen = None
                finally:
                    upstream.release()
                if seen is not None:
                    on_answer(b"".join(seen), True)

            return StreamingResponse(relay(), status_code=upstream.status, media_type=content_type, headers=headers)
        data = await self._read(upstream, started)
        if upstream.status >= 400:
            return Response(upstream_error_body(upstream.status, data), status_code=relayed_status(upstream.status),
                            media_type=JSON, headers=headers)  # fmt: skip
        if on_answer is not None and upstream.status == 200:
            on_answer(data, False)
        return Response(data, status_code=upstream.status, media_type=content_type, headers=headers)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
