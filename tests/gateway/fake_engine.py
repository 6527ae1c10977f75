"""A stand-in for a vLLM engine's OpenAI API (an outside system), for gateway unit tests and the
gateway benchmark: real HTTP on loopback, answers in vLLM's shapes, and switches for slow streams,
errors and clients that go away. The end-to-end tests use the real vLLM instead."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn

COMPACT = (",", ":")  # vLLM writes JSON without spaces


@dataclass
class FakeEngine:
    chunks: int = 3  # content chunks per stream
    delay: float = 0.0  # seconds before each chunk (and before a non-stream answer)
    status: int = 200  # answer this status with a vLLM-style error body instead
    hold: bool = False  # after the first chunk, wait until the client goes away
    prompt_tokens: int = 7
    content: str = ""  # a chat answer's text ("ok ok ok" when empty)
    embedder: Any = None  # text -> vector, for /v1/embeddings (a fixed vector when None)
    stream_error: bool = False  # a stream whose first event is an error (as vLLM sends them)
    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    _server: uvicorn.Server | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        document = json.loads(body) if body else {}
        self.requests.append(
            {
                "path": scope["path"],
                "authorization": headers.get("authorization"),
                "request_id": headers.get("x-request-id"),
                "body": document,
            }
        )
        if self.status != 200:
            error = {
                "error": {
                    "message": "engine says no",
                    "type": "BadRequestError",
                    "param": None,
                    "code": self.status,
                }
            }
            await _json(send, self.status, error)
            return
        if document.get("stream"):
            await self._stream(document, receive, send)
            return
        await asyncio.sleep(self.delay)
        await _json(send, 200, self._answer(document, scope["path"]))

    def _usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.chunks,
            "total_tokens": self.prompt_tokens + self.chunks,
        }

    def _answer(self, document: dict[str, Any], path: str) -> dict[str, Any]:
        model = document.get("model")
        if path.endswith("/embeddings"):
            inputs = document.get("input")
            texts = inputs if isinstance(inputs, list) else [inputs]
            vectors = (
                [self.embedder(text) for text in texts] if self.embedder else [[0.1, 0.2, 0.3]]
            )
            return {
                "object": "list",
                "model": model,
                "data": [
                    {"object": "embedding", "index": i, "embedding": vector}
                    for i, vector in enumerate(vectors)
                ],
                "usage": {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens},
            }
        if path.endswith("/chat/completions"):
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": self.content or "ok " * self.chunks},
                "finish_reason": "length",
            }
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": "ok " * self.chunks, "finish_reason": "length"}
            kind = "text_completion"
        return {
            "id": "cmpl-fake",
            "object": kind,
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "usage": self._usage(),
        }

    async def _stream(self, document: dict[str, Any], receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        chat = "messages" in document
        model = document.get("model")
        if self.stream_error:
            error = {
                "error": {"message": "engine failed", "type": "InternalServerError", "code": 500}
            }
            body = f"data: {json.dumps(error, separators=COMPACT)}\n\ndata: [DONE]\n\n"
            await send({"type": "http.response.body", "body": body.encode()})
            return
        for index in range(self.chunks):
            await asyncio.sleep(self.delay)
            delta = (
                {"index": 0, "delta": {"content": f"t{index} "}}
                if chat
                else {"index": 0, "text": f"t{index} "}
            )
            chunk = {
                "id": "cmpl-fake",
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": [delta],
            }
            await send(
                {
                    "type": "http.response.body",
                    "body": f"data: {json.dumps(chunk, separators=COMPACT)}\n\n".encode(),
                    "more_body": True,
                }
            )
            if self.hold:
                while (await receive())["type"] != "http.disconnect":
                    pass
                self.disconnected.set()
                return
        if (document.get("stream_options") or {}).get("include_usage"):
            last = {
                "id": "cmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [],
                "usage": self._usage(),
            }
            await send(
                {
                    "type": "http.response.body",
                    "body": f"data: {json.dumps(last, separators=COMPACT)}\n\n".encode(),
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    def start(self) -> FakeEngine:
        self.port = free_port()
        self._server = serve_in_thread(self, self.port)
        return self

    def stop(self) -> None:
        """Stop serving, and return only once the port refuses connections (uvicorn notices
        ``should_exit`` on its next tick; a test that stops an engine expects it gone)."""
        if self._server is None:
            return
        self._server.should_exit = True
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                return
            time.sleep(0.02)
        raise RuntimeError(f"fake engine on port {self.port} did not stop")


async def _json(send: Any, status: int, document: dict[str, Any]) -> None:
    body = json.dumps(document, separators=COMPACT).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_in_thread(app: Any, port: int) -> uvicorn.Server:
    """uvicorn on 127.0.0.1:port in a daemon thread; returns once it accepts connections."""
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    return server
