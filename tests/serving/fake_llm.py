"""A local stand-in for an OpenAI-compatible LLM (the one remote service we cannot run here).

Speaks the real wire protocol of POST /v1/chat/completions, with and without ``stream``
(server-sent events ending in ``data: [DONE]``), and records what it was sent.
"""

from __future__ import annotations

import asyncio
import json
import threading

from aiohttp import web

from p13n.devstack import free_port


class FakeLLM:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.delay_s = 0.0  # how long it thinks before answering
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
        if not body.get("stream"):
            return web.json_response({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body.get("model", "fake"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            })  # fmt: skip
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for n, word in enumerate(text.split(" ")):
            if self.die_after_chunks is not None and n >= self.die_after_chunks:
                request.transport.close()  # the upstream dies mid-stream: no last chunk, no [DONE]
                return response
            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "fake",
                     "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}]}  # fmt: skip
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
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
