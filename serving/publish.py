"""Conversation turns that pass through the proxy, published as ``message`` events (``serving.publish_messages``).

OpenAI clients resend the whole conversation on every turn, so a request's *new* user turn is its **last user
message**; only that one is published (the earlier ones were published by the requests that carried them
last). Its ``event_id`` is derived from (tenant, user, SHA-256 of the conversation up to and including that
message): a retried request publishes the same event, which the consumer folds once. With
``serving.publish_assistant_messages`` the upstream's answer is published too (role ``assistant``, event id
from the same prefix), after the answer was read in full (a stream: after its last chunk).

Publishing is fire-and-forget and never delays or fails the chat answer: records go to Kafka on one thread
of their own, at most :data:`MAX_IN_FLIGHT` batches wait for it, and each outcome is counted in
``p13n_published_messages_total{role, outcome}`` (``produced``, ``failed`` — Kafka down or slow —, or
``dropped`` — too many waiting) and a failure logged. A lost turn is not a ``degraded`` reason: the answer's
headers are sent before Kafka acknowledges.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import msgspec

from features.core.events import Rejection, event_limits, parse_event
from features.core.prompt import query_text
from p13n.config import Config
from p13n.errors import P13nError

__all__ = ["turn_records", "TurnPublisher", "MAX_IN_FLIGHT"]

log = logging.getLogger("p13n.serving")
MAX_IN_FLIGHT = 64
MAX_TEXT = 8192  # characters of a message event's text


def _conversation_digest(tenant: str, user_id: str, messages: Sequence[Mapping]) -> str | None:
    """SHA-256 (hex) of tenant, user and the messages up to the last user message; None without one."""
    last = max((i for i, m in enumerate(messages) if isinstance(m, Mapping) and m.get("role") == "user"), default=None)
    if last is None:
        return None
    prefix = msgspec.json.encode([dict(m) for m in messages[: last + 1]], order="sorted")
    return hashlib.sha256(tenant.encode() + b"\0" + user_id.encode() + b"\0" + prefix).hexdigest()


def turn_records(config: Config, tenant: str, user_id: str, messages: Sequence[Mapping], now_ms: int,
                 answer: str | None = None) -> list[tuple[bytes, bytes]]:  # fmt: skip
    """Kafka (key, value) records of the request's last user message (``answer is None``) or of the
    assistant's ``answer`` to it; empty when there is no user message or no text (an event that would not
    validate is not produced).

    >>> from p13n.config import Config
    >>> msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
    ...         {"role": "user", "content": "I moved to Lyon"}]
    >>> [(k, msgspec.json.decode(v)["text"]) for k, v in turn_records(Config(), "shop", "u1", msgs, 1_800_000_000_000)]
    [(b'shop/u1', 'I moved to Lyon')]
    >>> retried = turn_records(Config(), "shop", "u1", msgs, 1_800_000_000_500)  # a retry: the same event id
    >>> msgspec.json.decode(retried[0][1])["event_id"] == msgspec.json.decode(
    ...     turn_records(Config(), "shop", "u1", msgs, 1_800_000_000_000)[0][1])["event_id"]
    True
    """
    digest = _conversation_digest(tenant, user_id, messages)
    if digest is None:
        return []
    role = "user" if answer is None else "assistant"
    text = (query_text(messages) if answer is None else answer).strip()[:MAX_TEXT]
    if not text:
        return []
    raw = {"event_id": f"chat-{role[0]}-{digest[:40]}", "tenant": tenant, "user_id": user_id, "type": "message",
           "text": text, "timestamp": now_ms, "context": {"role": role, "source": "chat_completions"}}  # fmt: skip
    data = msgspec.json.encode(raw)
    event = parse_event(data, now_ms=now_ms, **event_limits(config.state))
    if isinstance(event, Rejection):
        log.warning("conversation turn not published: %s: %s", event.reason, event.detail)
        return []
    return [(event.key.encode(), data)]


class TurnPublisher:
    """Fire-and-forget production of conversation turns; ``produce(records)`` sends and waits for Kafka
    (raising :class:`~p13n.errors.P13nError` when it cannot), ``count(role, outcome)`` records an outcome."""

    def __init__(self, produce: Callable[[list[tuple[bytes, bytes]]], None],
                 count: Callable[[str, str], None] | None = None) -> None:  # fmt: skip
        self._produce = produce
        self._count = count or (lambda role, outcome: None)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="p13n-publish")
        self._in_flight: set[asyncio.Future] = set()

    def publish(self, records: list[tuple[bytes, bytes]], role: str) -> None:
        """Schedule ``records`` on the publishing thread and return at once (call from the event loop)."""
        if not records:
            return
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            self._count(role, "dropped")
            log.warning("conversation turn dropped: %d batches already wait for Kafka", len(self._in_flight))
            return
        future = asyncio.get_running_loop().run_in_executor(self._pool, self._produce, records)
        self._in_flight.add(future)
        future.add_done_callback(lambda done: self._done(done, role))

    def _done(self, future: asyncio.Future, role: str) -> None:
        self._in_flight.discard(future)
        error = future.exception()
        if error is None:
            self._count(role, "produced")
        elif isinstance(error, P13nError):
            self._count(role, "failed")
            log.warning("conversation turn not published: %s", error)
        else:  # a bug: counted and logged with its traceback, never raised into the answer
            self._count(role, "failed")
            log.error("conversation turn not published", exc_info=error)

    async def drain(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the batches in flight (at shutdown)."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=timeout_s)
