"""A local stand-in for an OpenAI-compatible LLM (the one remote service we cannot run here).

Speaks the real wire protocol of POST /v1/chat/completions, with and without ``stream``
(server-sent events ending in ``data: [DONE]``), and GET /v1/models, and records what it was sent. Every
answer carries the headers OpenAI sends (``x-request-id``, ``x-ratelimit-*``, ``openai-processing-ms``).

Some model names answer as a troubled upstream would (no shared state between tests):

* ``rate-limited``: 429 with ``retry-after: 7`` and OpenAI's error body;
* ``rate-limited-plain``: the same 429 with a plain-text body (as a gateway in front of a model sends);
* ``bad-param``: 400 with OpenAI's error body (``param`` ``temperature``, ``code`` ``invalid_value``);
* ``plain-500``: 500 with a plain-text body;
* ``trickle``: a stream of ``TRICKLE_CHUNKS`` chunks, one every ``TRICKLE_S`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import threading

from aiohttp import web

from p13n.devstack import free_port


TRICKLE_CHUNKS, TRICKLE_S = 12, 0.5
RATE_LIMIT_HEADERS = {"retry-after": "7", "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0",
                      "x-ratelimit-reset-requests": "7s", "x-request-id": "req_limited"}  # fmt: skip


def _headers(request_id: str) -> dict[str, str]:
    return {"x-request-id": request_id, "x-ratelimit-remaining-requests": "59", "openai-processing-ms": "5",
            "server": "fake-llm"}  # fmt: skip


class FakeLLM:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.delay_s = 0.0  # how long it thinks before answering
        self.models_failure: tuple[int, bytes] | None = None  # GET /v1/models answers this (status, body)
        self.die_after_chunks: int | None = None  # a streamed answer's connection is cut after this many chunks
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def answer_text(self, body: dict) -> str:
        return f"echo: {len(body['messages'])} messages"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        await asyncio.sleep(self.delay_s)
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        text = self.answer_text(body)
        model = body.get("model")
        if model == "rate-limited":
            return web.json_response({"error": {"message": "Rate limit reached for requests", "type": "requests",
                                                "param": None, "code": "rate_limit_exceeded"}},
                                     status=429, headers=RATE_LIMIT_HEADERS)  # fmt: skip
        if model == "rate-limited-plain":  # a gateway in front of the model: no JSON body
            return web.Response(text="Too Many Requests", status=429, headers=RATE_LIMIT_HEADERS)
        if model == "bad-param":
            error = {"message": "temperature must be at most 2", "type": "invalid_request_error",
                     "param": "temperature", "code": "invalid_value"}  # fmt: skip
            return web.json_response({"error": error}, status=400, headers=_headers("req_bad"))
        if model == "plain-500":
            return web.Response(text="upstream exploded", status=500, headers=_headers("req_500"))
        if not body.get("stream"):
            return web.json_response({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body.get("model", "fake"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }, headers=_headers("req_ok"))  # fmt: skip
        response = web.StreamResponse(headers={"content-type": "text/event-stream", **_headers("req_stream")})
        await response.prepare(request)
        words = ["w"] * TRICKLE_CHUNKS if model == "trickle" else text.split(" ")
        for n, word in enumerate(words):
            if model == "trickle":
                await asyncio.sleep(TRICKLE_S)
            if self.die_after_chunks is not None and n >= self.die_after_chunks:
                request.transport.close()  # the upstream dies mid-stream: no last chunk, no [DONE]
                return response
            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "fake",
                     "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}]}  # fmt: skip
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _models(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        if self.models_failure is not None:
            status, body = self.models_failure
            return web.Response(body=body, status=status, headers=_headers("req_models_failed"))
        models = [{"id": f"fake-{n}", "object": "model", "created": n, "owned_by": "fake"} for n in (1, 2)]
        return web.json_response({"object": "list", "data": models}, headers=_headers("req_models"))

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> FakeLLM:
        self._thread.start()
        self._ready.wait(timeout=10)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
