"""The HTTP API (DESIGN.md §7): routing, auth, limits, budgets; the work is the Personalizer's.

Handlers raise; :meth:`Api.handle` renders every error in OpenAI's shape (``serving/errors.py``):
400 (not JSON, not UTF-8, nested too deep), 401 (no or unknown key), 403 (another tenant), 404, 405,
413 (over a limit, counted on the bytes read), 422 (invalid field, named in ``param``), 502 (upstream LLM
unreachable, silent or too slow), the upstream's own 4xx (relayed, ``serving/proxy.py``) and 503 (Redis
or Kafka unavailable, with the reason in ``code``). ``/v1/score`` and ``/v1/rewrite`` never answer 5xx because a dependency is slow or down: they answer in time, degraded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from features.core.events import Rejection, event_limits, parse_event
from p13n.clock import now_ms as wall_ms
from p13n.config import Config
from p13n.errors import BrokerUnavailable, P13nError, ServiceError, StoreUnavailable, UpstreamUnavailable
from serving.errors import ApiError, error_response
from serving.inspector import UI, UI_USERS, Inspector
from serving.metrics import ServingMetrics
from serving.personalizer import given_order
from serving.proxy import Upstream, assistant_text, context_role_for, upstream_user_id
from serving.publish import TurnPublisher, turn_records
from serving.schemas import MAX_BODY_BYTES, RewriteRequest, ScoreRequest, check_chat, decode_body, decode_json
from serving.wire import raw_path, read_body, user_id_from_path

__all__ = ["Api"]

log = logging.getLogger("p13n.serving")
JSON = "application/json"
DEADLINE_GRACE_MS = 3.0  # the personalizer answers within its budget; this covers the hop back
PRODUCE_TIMEOUT_S = 5.0  # /v1/events answers 503 rather than hold a client longer for Kafka
USERS = "/v1/users/"
ENDPOINTS = {"/v1/score": "score", "/v1/rewrite": "rewrite", "/v1/chat/completions": "chat", "/v1/events": "events"}
MODELS = "/v1/models"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(data), status_code=status, media_type=JSON, headers=headers)


def _endpoint(path: str) -> str:
    """The metrics label of a path (a bounded set: unknown paths are ``other``)."""
    if path in ENDPOINTS:
        return ENDPOINTS[path]
    if path.startswith(USERS):
        return "users"
    if path == MODELS:
        return "models"
    if path.startswith(UI):
        return "ui"
    return path.strip("/") if path in ("/healthz", "/readyz") else "other"


class Api:
    """Request handling shared by the Ingress deployment (``personalizer`` local or a handle adapter)."""

    def __init__(self, config: Config, personalizer, metrics: ServingMetrics | None = None) -> None:
        self.config = config
        self.personalizer = personalizer
        self.metrics = metrics
        self.keys = dict(config.serving.api_keys)
        self._producer = None
        self._upstream = Upstream(config.serving)
        self._publisher = TurnPublisher(self._produce, metrics.count_published if metrics is not None else None)
        self._inspector = Inspector()

    # --- auth ----------------------------------------------------------------------------------
    def _tenant(self, request: Request) -> str:
        """The tenant the request's API key acts for; raises 401 (checked before the body is read)."""
        headers = request.headers.getlist("authorization")
        if len(headers) > 1:
            raise ApiError(400, f"{len(headers)} Authorization headers: send exactly one", param="authorization",
                           code="duplicate_authorization")  # fmt: skip
        parts = headers[0].split(None, 1) if headers else []
        if not parts:
            raise ApiError(401, "missing API key: send `Authorization: Bearer <key>`", code="missing_api_key")
        if parts[0].lower() != "bearer" or len(parts) < 2 or not parts[1].strip():
            raise ApiError(401, "malformed Authorization header: expected `Bearer <key>`", param="authorization",
                           code="malformed_authorization")  # fmt: skip
        tenant = self.keys.get(parts[1].strip())
        if tenant is None:
            raise ApiError(401, "unknown API key", code="invalid_api_key")
        return tenant

    @staticmethod
    def _same_tenant(request: Request, tenant: str, asked: str | None) -> str:
        """``tenant`` when the request asks for no other one (body ``tenant`` or ``?tenant=``); raises 403."""
        asked = asked or request.query_params.get("tenant")
        if asked is not None and asked != tenant:
            raise ApiError(403, f"this API key acts for tenant {tenant!r}, not {asked!r}", param="tenant",
                           code="wrong_tenant")  # fmt: skip
        return tenant

    # --- routing -------------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        """Answer one request; every error is rendered here, and every answer is timed here."""
        started = time.perf_counter()
        path = raw_path(request.scope)
        path = path if path.startswith((USERS, UI_USERS)) else (request.url.path.rstrip("/") or "/")
        try:
            response = await self._route(request, path, request.method)
        except (ApiError, P13nError) as exc:
            response = error_response(exc)
        except ClientDisconnect:
            response = error_response(ApiError(400, "client disconnected before the body was read",
                                               code="client_disconnected"))  # fmt: skip
        except Exception as exc:  # a bug: answered in the error shape, logged with its traceback
            log.exception("unhandled error on %s %s", request.method, path)
            response = error_response(exc)
        if self.metrics is not None:
            self.metrics.observe_request(_endpoint(path), response.status_code, time.perf_counter() - started)
        return response

    async def _route(self, request: Request, path: str, method: str) -> Response:
        if path == "/healthz":
            return _json({"status": "ok"})
        if path == "/readyz":
            if await self.personalizer.ping():
                return _json({"status": "ready"})
            raise StoreUnavailable("not ready: Redis does not answer")
        if path.startswith(USERS):
            if method not in ("GET", "DELETE"):
                raise ApiError(405, f"{USERS}{{user_id}} accepts GET and DELETE", code="method_not_allowed")
            return await self._user(request, user_id_from_path(request.scope, USERS), method)
        if path.startswith(UI):  # the profile inspector: a static page, public (it holds no user data)
            return self._inspector.handle(request.scope, path, method)
        if path == MODELS:
            if method != "GET":
                raise ApiError(405, f"{MODELS} accepts GET", code="method_not_allowed")
            return await self._models(request)
        if path in ENDPOINTS:
            if method != "POST":
                raise ApiError(405, f"{path} accepts POST", code="method_not_allowed")
            handler = {"score": self._score, "rewrite": self._rewrite, "chat": self._chat, "events": self._events}
            return await handler[ENDPOINTS[path]](request)
        raise ApiError(404, f"no route {method} {path}", code="not_found")

    # --- endpoints -----------------------------------------------------------------------------
    async def _score(self, request: Request) -> Response:
        serving = self.config.serving
        tenant = self._tenant(request)
        body = await read_body(request, MAX_BODY_BYTES, serving.body_timeout_s)
        req = decode_body(body, ScoreRequest, max_candidates=serving.max_candidates,
                          max_prompt_bytes=serving.max_prompt_bytes)  # fmt: skip
        self._same_tenant(request, tenant, req.tenant)
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
        self._observe("score", answer, budget)
        return _json(answer)

    async def _rewrite(self, request: Request) -> Response:
        serving = self.config.serving
        tenant = self._tenant(request)
        body = await read_body(request, MAX_BODY_BYTES, serving.body_timeout_s)
        req = decode_body(body, RewriteRequest, max_prompt_bytes=serving.max_prompt_bytes)
        self._same_tenant(request, tenant, req.tenant)
        # messages pass through as sent (tool_calls, tool_call_id, name, …): only the context is added
        messages = req.messages if req.messages is not None else [{"role": "user", "content": req.prompt or ""}]
        budget = req.budget_ms or serving.rewrite_budget_ms
        answer = await self._rewrite_messages(tenant, req.user_id, messages, req.max_context_tokens, budget)
        self._observe("rewrite", answer, budget)
        return _json(answer)

    async def _rewrite_messages(self, tenant: str, user_id: str, messages: list[dict], max_tokens: int | None,
                                budget: float, context_role: str | None = None) -> dict:  # fmt: skip
        started = time.perf_counter()
        try:
            answer = await asyncio.wait_for(
                self.personalizer.rewrite(tenant, user_id, messages,
                                          max_tokens=max_tokens or self.config.serving.max_context_tokens,
                                          budget_ms=budget, context_role=context_role),  # fmt: skip
                timeout=(budget + DEADLINE_GRACE_MS) / 1000,
            )
        except asyncio.TimeoutError:
            answer = {"messages": messages, "context": {"profile": [], "preferences": [], "memories": [], "history": []},
                      "degraded": ["deadline_exceeded"], "timings_ms": {}}  # fmt: skip
        answer["timings_ms"]["total"] = round((time.perf_counter() - started) * 1000, 3)
        return answer

    async def _user(self, request: Request, user_id: str, method: str) -> Response:
        tenant = self._same_tenant(request, self._tenant(request), None)
        if method == "DELETE":
            existed = await self.personalizer.delete(tenant, user_id)
            if not existed:
                raise ApiError(404, f"no user {user_id!r} in tenant {tenant!r}", param="user_id", code="user_not_found")
            return _json({"deleted": True, "user_id": user_id})
        profile = await self.personalizer.profile(tenant, user_id)
        if profile is None:
            raise ApiError(404, f"no user {user_id!r} in tenant {tenant!r}", param="user_id", code="user_not_found")
        return _json(profile)

    async def _authorized_json(self, request: Request) -> tuple[str, Any]:
        """(tenant, parsed JSON body) of a request whose body is free-form JSON."""
        tenant = self._same_tenant(request, self._tenant(request), None)
        return tenant, decode_json(await read_body(request, MAX_BODY_BYTES, self.config.serving.body_timeout_s))

    async def _events(self, request: Request) -> Response:
        tenant, parsed = await self._authorized_json(request)
        raw_events = parsed.get("events") if isinstance(parsed, dict) and "events" in parsed else parsed
        raw_events = raw_events if isinstance(raw_events, list) else [raw_events]
        now_ms = wall_ms()
        accepted, rejected = [], []
        for index, raw in enumerate(raw_events):
            if isinstance(raw, dict):
                raw = {**raw, "tenant": raw.get("tenant", tenant)}
                if raw["tenant"] != tenant:
                    rejected.append({"index": index, "reason": "forbidden", "detail": f"tenant must be {tenant!r}"})
                    continue
            data = msgspec.json.encode(raw)
            event = parse_event(data, now_ms=now_ms, **event_limits(self.config.state))
            if isinstance(event, Rejection):
                rejected.append({"index": index, "reason": event.reason, "detail": event.detail})
            else:
                accepted.append((event.key.encode(), data))
        if accepted:
            produce = asyncio.get_running_loop().run_in_executor(None, self._produce, accepted)
            try:
                await asyncio.wait_for(produce, timeout=PRODUCE_TIMEOUT_S)
            except asyncio.TimeoutError:
                raise BrokerUnavailable(f"Kafka did not acknowledge within {PRODUCE_TIMEOUT_S:g} s") from None
        if rejected and not accepted:
            first = rejected[0]
            raise ApiError(422, f"no event accepted: {len(rejected)} rejected, the first (events[{first['index']}]) for "
                                f"{first['reason']}: {first['detail']}", param=f"events[{first['index']}]",
                           code=first["reason"], extra={"accepted": 0, "rejected": rejected})  # fmt: skip
        return _json({"accepted": len(accepted), "rejected": rejected}, 202)

    def _produce(self, records: list[tuple[bytes, bytes]]) -> None:
        """Send and wait for Kafka's acknowledgement; the boundary where Kafka's errors become
        :class:`BrokerUnavailable`."""
        from kafka.errors import KafkaError

        try:
            if self._producer is None:
                from p13n.kafka_client import make_producer

                # kafka-python waits 30 s to bootstrap and 60 s for metadata by default: bound both by our answer
                self._producer = make_producer(self.config.kafka, max_block_ms=int(PRODUCE_TIMEOUT_S * 800),
                                               bootstrap_timeout_ms=int(PRODUCE_TIMEOUT_S * 800))  # fmt: skip
            futures = [self._producer.send(self.config.kafka.events_topic, key=k, value=v) for k, v in records]
            self._producer.flush(timeout=PRODUCE_TIMEOUT_S)
            for future in futures:
                future.get(timeout=PRODUCE_TIMEOUT_S)
        except (KafkaError, ServiceError) as exc:
            raise BrokerUnavailable(f"Kafka unavailable at {self.config.kafka.bootstrap}: {exc}") from exc

    # --- OpenAI-compatible proxy (the upstream side: serving/proxy.py) -------------------------
    async def _models(self, request: Request) -> Response:
        self._same_tenant(request, self._tenant(request), None)
        return await self._upstream.models()

    async def _chat(self, request: Request) -> Response:
        serving = self.config.serving
        if not serving.upstream_url:
            raise UpstreamUnavailable("no upstream LLM configured (serving.upstream_url)")
        tenant, payload = await self._authorized_json(request)
        payload = check_chat(payload, max_prompt_bytes=serving.max_prompt_bytes)
        user_id = payload.get("user")
        sent = payload["messages"]
        if user_id:
            answer = await self._rewrite_messages(tenant, user_id, sent, None, serving.rewrite_budget_ms,
                                                  context_role_for(serving, payload.get("model")))  # fmt: skip
            payload["messages"] = answer["messages"]
            degraded = answer["degraded"]
            self._observe("chat", answer, serving.rewrite_budget_ms)
            upstream_user = upstream_user_id(serving, tenant, user_id)
            if upstream_user is None:
                del payload["user"]
            else:
                payload["user"] = upstream_user
        else:
            degraded = ["no_user"]
        on_answer = None
        if user_id and serving.publish_messages:
            self._publisher.publish(turn_records(self.config, tenant, user_id, sent, wall_ms()), "user")
            if serving.publish_assistant_messages:
                def on_answer(data: bytes, streamed: bool) -> None:
                    text = assistant_text(data, streamed)
                    self._publisher.publish(turn_records(self.config, tenant, user_id, sent, wall_ms(), text),
                                            "assistant")  # fmt: skip
        headers = {"x-p13n-degraded": ",".join(degraded)}
        try:
            return await self._upstream.chat(payload, headers, on_answer)
        except UpstreamUnavailable as exc:
            return error_response(exc, headers)

    def _observe(self, endpoint: str, answer: dict, budget: float | None) -> None:
        if self.metrics is not None:
            self.metrics.observe_answer(endpoint, answer, budget)
