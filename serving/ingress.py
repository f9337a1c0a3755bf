"""The HTTP API (DESIGN.md §7): routing, auth, limits, budgets; the work is the Personalizer's.

Errors are JSON ``{"error": "..."}`` with 400 (not JSON), 401 (no or unknown key), 403 (another
tenant), 404, 413 (too large), 422 (invalid field, named). ``/v1/score`` and ``/v1/rewrite``
never answer 5xx because a dependency is slow or down: they answer in time, degraded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from features.events import Rejection, parse_event
from p13n.config import Config
from serving.metrics import ServingMetrics
from serving.personalizer import given_order
from serving.schemas import MAX_BODY_BYTES, ApiError, RewriteRequest, ScoreRequest, decode_body

__all__ = ["Api"]

log = logging.getLogger("p13n.serving")
JSON = "application/json"
DEADLINE_GRACE_MS = 3.0  # the personalizer answers within its budget; this covers the hop back


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(data), status_code=status, media_type=JSON, headers=headers)


def _error(error: ApiError) -> Response:
    return _json({"error": error.message}, error.status)


class Api:
    """Request handling shared by the Ingress deployment (``personalizer`` local or a handle adapter)."""

    def __init__(self, config: Config, personalizer, metrics: ServingMetrics | None = None) -> None:
        self.config = config
        self.personalizer = personalizer
        self.metrics = metrics
        self.keys = dict(config.serving.api_keys)
        self._producer = None
        self._http = None

    # --- auth ----------------------------------------------------------------------------------
    def _tenant(self, request: Request, asked: str | None) -> str | ApiError:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return ApiError(401, "missing API key: send `Authorization: Bearer <key>`")
        tenant = self.keys.get(key.strip())
        if tenant is None:
            return ApiError(401, "unknown API key")
        asked = asked or request.query_params.get("tenant")
        if asked is not None and asked != tenant:
            return ApiError(403, f"this API key acts for tenant {tenant!r}, not {asked!r}")
        return tenant

    # --- routing -------------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        path, method = request.url.path.rstrip("/") or "/", request.method
        try:
            if path == "/healthz":
                return _json({"status": "ok"})
            if path == "/readyz":
                ok = await self.personalizer.ping()
                return _json({"status": "ready" if ok else "redis unavailable"}, 200 if ok else 503)
            if path == "/v1/score" and method == "POST":
                return await self._score(request)
            if path == "/v1/rewrite" and method == "POST":
                return await self._rewrite(request)
            if path == "/v1/chat/completions" and method == "POST":
                return await self._chat(request)
            if path == "/v1/events" and method == "POST":
                return await self._events(request)
            if path.startswith("/v1/users/") and method in ("GET", "DELETE"):
                return await self._user(request, path[len("/v1/users/") :], method)
            if path in ("/v1/score", "/v1/rewrite", "/v1/chat/completions", "/v1/events"):
                return _error(ApiError(405, f"{path} accepts POST"))
            return _error(ApiError(404, f"no route {method} {path}"))
        except ClientDisconnect:
            return _error(ApiError(400, "client disconnected"))

    async def _body(self, request: Request) -> bytes | ApiError:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return ApiError(413, f"request body is {length} bytes; the limit is {MAX_BODY_BYTES}")
        return await request.body()

    # --- endpoints -----------------------------------------------------------------------------
    async def _score(self, request: Request) -> Response:
        serving = self.config.serving
        body = await self._body(request)
        req = body if isinstance(body, ApiError) else decode_body(body, ScoreRequest, max_candidates=serving.max_candidates,
                                                                    max_prompt_bytes=serving.max_prompt_bytes)  # fmt: skip
        if isinstance(req, ApiError):
            return _error(req)
        tenant = self._tenant(request, req.tenant)
        if isinstance(tenant, ApiError):
            return _error(tenant)
        budget = req.budget_ms or serving.score_budget_ms
        started = time.perf_counter()
        candidates = req.candidates  # CandidateBody has the item_id/text that CandidateIn has
        try:
            answer = await asyncio.wait_for(
                self.personalizer.score(tenant, req.user_id, candidates, k=req.k, explain=req.explain, budget_ms=budget),
                timeout=(budget + DEADLINE_GRACE_MS) / 1000,
            )
        except asyncio.TimeoutError:
            answer = given_order([c.item_id for c in req.candidates], req.k, ["deadline_exceeded"], {})
        answer["timings_ms"]["total"] = round((time.perf_counter() - started) * 1000, 3)
        self._observe("score", 200, answer, budget)
        return _json(answer)

    async def _rewrite(self, request: Request) -> Response:
        serving = self.config.serving
        body = await self._body(request)
        req = body if isinstance(body, ApiError) else decode_body(body, RewriteRequest,
                                                                    max_prompt_bytes=serving.max_prompt_bytes)  # fmt: skip
        if isinstance(req, ApiError):
            return _error(req)
        tenant = self._tenant(request, req.tenant)
        if isinstance(tenant, ApiError):
            return _error(tenant)
        if req.messages is not None:
            messages = [msgspec.to_builtins(m) for m in req.messages]
            messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
        else:
            messages = [{"role": "user", "content": req.prompt or ""}]
        budget = req.budget_ms or serving.rewrite_budget_ms
        answer = await self._rewrite_messages(tenant, req.user_id, messages, req.max_context_tokens, budget)
        self._observe("rewrite", 200, answer, budget)
        return _json(answer)

    async def _rewrite_messages(self, tenant: str, user_id: str, messages: list[dict], max_tokens: int | None,
                                budget: float) -> dict:  # fmt: skip
        started = time.perf_counter()
        try:
            answer = await asyncio.wait_for(
                self.personalizer.rewrite(tenant, user_id, messages,
                                          max_tokens=max_tokens or self.config.serving.max_context_tokens,
                                          budget_ms=budget),  # fmt: skip
                timeout=(budget + DEADLINE_GRACE_MS) / 1000,
            )
        except asyncio.TimeoutError:
            answer = {"messages": messages, "context": {"profile": [], "preferences": [], "history": []},
                      "degraded": ["deadline_exceeded"], "timings_ms": {}}  # fmt: skip
        answer["timings_ms"]["total"] = round((time.perf_counter() - started) * 1000, 3)
        return answer

    async def _user(self, request: Request, user_id: str, method: str) -> Response:
        if not user_id or len(user_id) > 256:
            return _error(ApiError(422, "user_id must be 1 to 256 characters"))
        tenant = self._tenant(request, None)
        if isinstance(tenant, ApiError):
            return _error(tenant)
        try:
            if method == "DELETE":
                existed = await self.personalizer.delete(tenant, user_id)
                return _json({"deleted": existed, "user_id": user_id}, 200 if existed else 404)
            profile = await self.personalizer.profile(tenant, user_id)
        except (OSError, ConnectionError) as exc:
            return _error(ApiError(503, f"Redis unavailable: {type(exc).__name__}"))
        if profile is None:
            return _error(ApiError(404, f"no user {user_id!r} in tenant {tenant!r}"))
        return _json(profile)

    async def _authorized_json(self, request: Request) -> tuple[str, Any] | ApiError:
        """(tenant, parsed JSON body) of a request whose body is free-form JSON."""
        body = await self._body(request)
        if isinstance(body, ApiError):
            return body
        tenant = self._tenant(request, None)
        if isinstance(tenant, ApiError):
            return tenant
        try:
            return tenant, json.loads(body)
        except ValueError as exc:
            return ApiError(400, f"request body is not valid JSON: {exc}")

    async def _events(self, request: Request) -> Response:
        got = await self._authorized_json(request)
        if isinstance(got, ApiError):
            return _error(got)
        tenant, parsed = got
        raw_events = parsed.get("events") if isinstance(parsed, dict) and "events" in parsed else parsed
        raw_events = raw_events if isinstance(raw_events, list) else [raw_events]
        now_ms = int(time.time() * 1000)
        accepted, rejected = [], []
        for index, raw in enumerate(raw_events):
            if isinstance(raw, dict):
                raw = {**raw, "tenant": raw.get("tenant", tenant)}
                if raw["tenant"] != tenant:
                    rejected.append({"index": index, "reason": "forbidden", "detail": f"tenant must be {tenant!r}"})
                    continue
            data = json.dumps(raw).encode()
            event = parse_event(data, now_ms=now_ms, max_future_ms=self.config.state.max_future_ms)
            if isinstance(event, Rejection):
                rejected.append({"index": index, "reason": event.reason, "detail": event.detail})
            else:
                accepted.append((event.key.encode(), data))
        if accepted:
            try:
                await asyncio.get_running_loop().run_in_executor(None, self._produce, accepted)
            except OSError as exc:
                return _error(ApiError(503, f"Kafka unavailable: {exc}"))
        status = 202 if accepted or not rejected else 422
        return _json({"accepted": len(accepted), "rejected": rejected}, status)

    def _produce(self, records: list[tuple[bytes, bytes]]) -> None:
        from kafka.errors import KafkaError

        try:
            if self._producer is None:
                from stream.producer import make_producer

                self._producer = make_producer(self.config.kafka)
            futures = [self._producer.send(self.config.kafka.events_topic, key=k, value=v) for k, v in records]
            self._producer.flush(timeout=10)
            for future in futures:
                future.get(timeout=10)
        except KafkaError as exc:
            raise OSError(str(exc)) from exc

    # --- OpenAI-compatible proxy ---------------------------------------------------------------
    async def _chat(self, request: Request) -> Response:
        serving = self.config.serving
        if not serving.upstream_url:
            return _error(ApiError(503, "no upstream LLM configured (serving.upstream_url)"))
        got = await self._authorized_json(request)
        if isinstance(got, ApiError):
            return _error(got)
        tenant, payload = got
        if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list) or not payload["messages"]:
            return _error(ApiError(422, "`messages` must be a non-empty list"))
        degraded: list[str] = []
        user_id = payload.get("user")
        if isinstance(user_id, str) and user_id:
            answer = await self._rewrite_messages(tenant, user_id, payload["messages"], None, serving.rewrite_budget_ms)
            payload["messages"] = answer["messages"]
            degraded = answer["degraded"]
            self._observe("chat", 200, answer, serving.rewrite_budget_ms)
        else:
            degraded = ["no_user"]
        headers = {"x-p13n-degraded": ",".join(degraded)}
        return await self._forward(payload, headers)

    async def _forward(self, payload: dict, headers: dict[str, str]) -> Response:
        import aiohttp

        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300))
        upstream_headers = {"content-type": JSON}
        if self.config.serving.upstream_api_key:
            upstream_headers["authorization"] = f"Bearer {self.config.serving.upstream_api_key}"
        url = self.config.serving.upstream_url.rstrip("/") + "/chat/completions"
        try:
            upstream = await self._http.post(url, data=json.dumps(payload), headers=upstream_headers)
        except (aiohttp.ClientError, OSError) as exc:
            return _json({"error": f"upstream LLM unreachable: {type(exc).__name__}"}, 502, headers)
        content_type = upstream.headers.get("content-type", JSON)
        if payload.get("stream") and upstream.status == 200:

            async def relay():
                try:
                    async for chunk in upstream.content.iter_any():
                        yield chunk
                finally:
                    upstream.release()

            return StreamingResponse(relay(), status_code=upstream.status, media_type=content_type, headers=headers)
        data = await upstream.read()
        upstream.release()
        return Response(data, status_code=upstream.status, media_type=content_type, headers=headers)

    def _observe(self, endpoint: str, status: int, answer: dict, budget: float | None) -> None:
        if self.metrics is not None:
            self.metrics.observe(endpoint, status, answer, budget)


try:  # starlette raises this when the client goes away mid-body
    from starlette.requests import ClientDisconnect
except ImportError:  # pragma: no cover - older starlette
    ClientDisconnect = ConnectionError  # type: ignore[misc,assignment]
