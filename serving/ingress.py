"""The HTTP API (DESIGN.md §7): routing, auth, limits, budgets; the work is the Personalizer's.

Every route but the public ones (``/healthz``, ``/readyz``, the inspector's static pages) is authenticated
by the router, before its handler reads or decodes anything of the request (path, query, body). A handler
gets the tenant, returns an answer struct (``serving/responses.py``) and raises on failure;
:meth:`Api.handle` renders every error, once, in OpenAI's shape (``serving/errors.py``):
400 (not JSON, not UTF-8, nested too deep), 401 (no or unknown key), 403 (another tenant), 404, 405,
413 (over a limit, counted on the bytes read), 422 (invalid field, named in ``param``), 502 (upstream LLM
unreachable, silent or too slow), the upstream's own 4xx (relayed, ``serving/proxy.py``) and 503 (Redis
or Kafka unavailable, with the reason in ``code``). ``/v1/score`` and ``/v1/rewrite`` never answer 5xx because a dependency is slow or down: they answer in time, degraded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, NamedTuple

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from features.core.events import Rejection, event_limits, parse_event
from p13n.clock import now_ms as wall_ms
from p13n.config import Config
from p13n.errors import BrokerUnavailable, ServiceError, StoreUnavailable, UpstreamUnavailable
from serving.errors import INTERNAL_ERROR, ApiError
from serving.inspector import UI, UI_USERS, Inspector
from serving.metrics import ServingMetrics
from serving.proxy import Upstream, assistant_text, context_role_for, upstream_user_id
from serving.publish import TurnPublisher, turn_records
from serving.responses import (Deleted, EventRejection, EventsAnswer, RewriteAnswer, ScoreAnswer, Status,
                               json_response)  # fmt: skip
from serving.schemas import MAX_BODY_BYTES, RewriteRequest, ScoreRequest, check_chat, decode_body, decode_json
from serving.wire import raw_path, read_body, user_id_from_path

__all__ = ["Api", "Route", "ROUTES"]

log = logging.getLogger("p13n.serving")
DEADLINE_GRACE_MS = 3.0  # the personalizer answers within its budget; this covers the hop back
PRODUCE_TIMEOUT_S = 5.0  # /v1/events answers 503 rather than hold a client longer for Kafka
USERS = "/v1/users/"
PUBLIC = ("/healthz", "/readyz")


class Route(NamedTuple):
    label: str  # the metrics label
    methods: tuple[str, ...]
    handler: str  # the Api method answering it: (request, tenant) -> Response, called once authenticated


#: The authenticated routes by path (``USERS``: a prefix, ``/v1/users/{user_id}``). An endpoint is a row here
#: and its handler; its request struct is in ``serving/schemas.py``, its answer struct in ``serving/responses.py``.
ROUTES = {
    "/v1/score": Route("score", ("POST",), "_score"),
    "/v1/rewrite": Route("rewrite", ("POST",), "_rewrite"),
    "/v1/chat/completions": Route("chat", ("POST",), "_chat"),
    "/v1/events": Route("events", ("POST",), "_events"),
    "/v1/models": Route("models", ("GET",), "_models"),
    USERS: Route("users", ("GET", "DELETE"), "_user"),
}


def _route_of(path: str) -> Route | None:
    return ROUTES.get(USERS if path.startswith(USERS) else path)


def _endpoint(path: str) -> str:
    """The metrics label of a path (a bounded set: unknown paths are ``other``)."""
    route = _route_of(path)
    if route is not None:
        return route.label
    if path.startswith(UI):
        return "ui"
    return path.strip("/") if path in PUBLIC else "other"


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
        """The tenant the request's API key acts for; raises 400 (two keys) or 401."""
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
        except Exception as exc:  # every error is answered, in the error shape, here
            error = ApiError.of(exc)
            if error.code == INTERNAL_ERROR:  # a bug: logged with its traceback
                log.exception("unhandled error on %s %s", request.method, path)
            response = error.response()
        if self.metrics is not None:
            self.metrics.observe_request(_endpoint(path), response.status_code, time.perf_counter() - started)
        return response

    async def _route(self, request: Request, path: str, method: str) -> Response:
        if path == "/healthz":
            return json_response(Status("ok"))
        if path == "/readyz":
            if await self.personalizer.ping():
                return json_response(Status("ready"))
            raise StoreUnavailable("not ready: Redis does not answer")
        if path.startswith(UI):  # the profile inspector: a static page, public (it holds no user data)
            return self._inspector.handle(request.scope, path, method)
        route = _route_of(path)
        if route is None:
            raise ApiError(404, f"no route {method} {path}", code="not_found")
        if method not in route.methods:
            where = f"{USERS}{{user_id}}" if route is ROUTES[USERS] else path
            raise ApiError(405, f"{where} accepts {' and '.join(route.methods)}", code="method_not_allowed")
        tenant = self._tenant(request)  # authentication first: nothing of the request is decoded before it
        return await getattr(self, route.handler)(request, tenant)

    # --- endpoints -----------------------------------------------------------------------------
    async def _score(self, request: Request, tenant: str) -> Response:
        serving = self.config.serving
        body = await read_body(request, MAX_BODY_BYTES, serving.body_timeout_s)
        req = decode_body(body, ScoreRequest, max_candidates=serving.max_candidates,
                          max_prompt_bytes=serving.max_prompt_bytes)  # fmt: skip
        self._same_tenant(request, tenant, req.tenant)
        budget = req.budget_ms or serving.score_budget_ms
        started = time.perf_counter()
        candidates = req.candidates  # CandidateBody has the item_id/text that CandidateIn has
        try:
            async with asyncio.timeout((budget + DEADLINE_GRACE_MS) / 1000):  # a scope: no task, unlike wait_for
                answer = await self.personalizer.score(tenant, req.user_id, candidates, k=req.k, explain=req.explain,
                                                       budget_ms=budget)  # fmt: skip
        except TimeoutError:
            answer = ScoreAnswer.in_given_order([c.item_id for c in req.candidates], req.k, ["deadline_exceeded"], {})
        answer.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 3)
        self._observe("score", answer, budget)
        return json_response(answer)

    async def _rewrite(self, request: Request, tenant: str) -> Response:
        serving = self.config.serving
        body = await read_body(request, MAX_BODY_BYTES, serving.body_timeout_s)
        req = decode_body(body, RewriteRequest, max_prompt_bytes=serving.max_prompt_bytes)
        self._same_tenant(request, tenant, req.tenant)
        # messages pass through as sent (tool_calls, tool_call_id, name, …): only the context is added
        messages = req.messages if req.messages is not None else [{"role": "user", "content": req.prompt or ""}]
        budget = req.budget_ms or serving.rewrite_budget_ms
        answer = await self._rewrite_messages(tenant, req.user_id, messages, req.max_context_tokens, budget)
        self._observe("rewrite", answer, budget)
        return json_response(answer)

    async def _rewrite_messages(self, tenant: str, user_id: str, messages: list[dict], max_tokens: int | None,
                                budget: float, context_role: str | None = None) -> RewriteAnswer:  # fmt: skip
        started = time.perf_counter()
        try:
            async with asyncio.timeout((budget + DEADLINE_GRACE_MS) / 1000):
                answer = await self.personalizer.rewrite(tenant, user_id, messages,
                                                         max_tokens=max_tokens or self.config.serving.max_context_tokens,
                                                         budget_ms=budget, context_role=context_role)  # fmt: skip
        except TimeoutError:
            answer = RewriteAnswer.unchanged(messages, ["deadline_exceeded"], {})
        answer.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 3)
        return answer

    async def _user(self, request: Request, tenant: str) -> Response:
        self._same_tenant(request, tenant, None)
        user_id = user_id_from_path(request.scope, USERS)
        if request.method == "DELETE":
            if not await self.personalizer.delete(tenant, user_id):
                raise ApiError(404, f"no user {user_id!r} in tenant {tenant!r}", param="user_id", code="user_not_found")
            return json_response(Deleted(True, user_id))
        profile = await self.personalizer.profile(tenant, user_id)
        if profile is None:
            raise ApiError(404, f"no user {user_id!r} in tenant {tenant!r}", param="user_id", code="user_not_found")
        return json_response(profile)

    async def _json_body(self, request: Request, tenant: str) -> Any:
        """The parsed JSON body of a request whose body is free-form JSON (after the tenant check)."""
        self._same_tenant(request, tenant, None)
        return decode_json(await read_body(request, MAX_BODY_BYTES, self.config.serving.body_timeout_s))

    async def _events(self, request: Request, tenant: str) -> Response:
        parsed = await self._json_body(request, tenant)
        raw_events = parsed.get("events") if isinstance(parsed, dict) and "events" in parsed else parsed
        raw_events = raw_events if isinstance(raw_events, list) else [raw_events]
        now_ms = wall_ms()
        accepted, rejected = [], []
        for index, raw in enumerate(raw_events):
            if isinstance(raw, dict):
                raw = {**raw, "tenant": raw.get("tenant", tenant)}
                if raw["tenant"] != tenant:
                    rejected.append(EventRejection(index, "forbidden", f"tenant must be {tenant!r}"))
                    continue
            data = msgspec.json.encode(raw)
            event = parse_event(data, now_ms=now_ms, **event_limits(self.config.state))
            if isinstance(event, Rejection):
                rejected.append(EventRejection(index, event.reason, event.detail))
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
            raise ApiError(422, f"no event accepted: {len(rejected)} rejected, the first (events[{first.index}]) for "
                                f"{first.reason}: {first.detail}", param=f"events[{first.index}]", code=first.reason,
                           rejected=rejected)  # fmt: skip
        return json_response(EventsAnswer(len(accepted), rejected), 202)

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
    async def _models(self, request: Request, tenant: str) -> Response:
        self._same_tenant(request, tenant, None)
        return await self._upstream.models()

    async def _chat(self, request: Request, tenant: str) -> Response:
        serving = self.config.serving
        if not serving.upstream_url:
            raise UpstreamUnavailable("no upstream LLM configured (serving.upstream_url)")
        payload = check_chat(await self._json_body(request, tenant), max_prompt_bytes=serving.max_prompt_bytes)
        user_id = payload.get("user")
        sent = payload["messages"]
        if user_id:
            answer = await self._rewrite_messages(tenant, user_id, sent, None, serving.rewrite_budget_ms,
                                                  context_role_for(serving, payload.get("model")))  # fmt: skip
            payload["messages"] = answer.messages
            degraded = answer.degraded
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
        except UpstreamUnavailable as exc:  # answered with the degraded header too
            raise ApiError.of(exc, headers) from exc

    def _observe(self, endpoint: str, answer: ScoreAnswer | RewriteAnswer, budget: float | None) -> None:
        if self.metrics is not None:
            self.metrics.observe_answer(endpoint, answer, budget)
