"""A wire-level fake of OpenAI's API, for testing adapters over real HTTP.

It serves ``POST /v1/chat/completions`` and ``GET /v1/models`` the way OpenAI's
API reference documents them: a ``chat.completion`` object, or with
``"stream": true`` a ``text/event-stream`` of ``data: {chunk}`` events (the
first carrying the assistant role, one per word, one with the finish reason,
a usage chunk with empty ``choices`` when ``stream_options.include_usage``),
ended by ``data: [DONE]``; errors as ``{"error": {message, type, param, code}}``.

Tests script it one call at a time with :class:`Reply` (a status, headers, a
raw body, a delay before answering, a stream cut, stalled or broken after N
events) and read back what it received from :attr:`FakeOpenAI.requests`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.server import ThreadedServer

__all__ = ["DEFAULT_CONTENT", "FakeOpenAI", "RecordedRequest", "Reply", "error_body"]

DEFAULT_CONTENT = "Hello! How can I assist you today?"


def error_body(
    message: str, *, type: str = "invalid_request_error", code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


@dataclass
class Reply:
    """How the fake answers one chat completion call; the defaults answer normally.

    ``body`` is sent as-is (a dict as JSON) instead of the generated answer,
    streamed or not. The ``*_after`` fields act on a stream after that many
    ``data:`` events: ``cut_after`` drops the connection mid-body,
    ``stall_after`` goes silent for ``stall`` seconds, ``error_after`` sends
    ``error`` as an event and ends, ``garbage_after`` sends a non-JSON event.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | str | dict[str, Any] | None = None
    content: str | None = None
    delay: float = 0.0
    cut_after: int | None = None
    stall_after: int | None = None
    stall: float = 0.0
    error_after: int | None = None
    error: dict[str, Any] = field(
        default_factory=lambda: error_body("The server had an error.", type="server_error")
    )
    garbage_after: int | None = None
    omit_done: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it; header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [word if i == 0 else f" {word}" for i, word in enumerate(words)]


def _usage(body: dict[str, Any], completion_tokens: int) -> dict[str, Any]:
    messages = body.get("messages", [])
    prompt = sum(len(str(m.get("content", "")).split()) for m in messages)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def completion(body: dict[str, Any], content: str) -> dict[str, Any]:
    """The ``chat.completion`` answering ``body`` with ``content``."""
    return {
        "id": "chatcmpl-fake0001",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(body, len(_words(content))),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def stream_events(body: dict[str, Any], content: str) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects streaming ``content``, usage chunk included."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base = {
        "id": "chatcmpl-fake0001",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model"),
        "system_fingerprint": "fp_fake",
    }
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice], **extra}

    words = _words(content)
    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": word}) for word in words]
    events.append(chunk({}, "stop"))
    if include_usage:
        events.append({**base, "choices": [], "usage": _usage(body, len(words))})
    return events


class FakeOpenAI(ThreadedServer):
    """The fake server; use as a context manager, point adapters at :attr:`base_url`.

    With ``api_key`` set it answers 401 like OpenAI unless the request carries
    ``Authorization: Bearer <api_key>``.
    """

    def __init__(self, *, api_key: str | None = None, content: str = DEFAULT_CONTENT) -> None:
        super().__init__()
        self.api_key = api_key
        self.content = content
        self._replies: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``, like OpenAI's ``https://api.openai.com/v1``."""
        return f"{self.origin}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def script(self, *replies: Reply) -> None:
        """Queue how the next chat completion calls are answered, in order."""
        with self._lock:
            self._replies.extend(replies)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        return app

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        payload = json.loads(raw) if raw else None
        headers = {name.lower(): value for name, value in request.headers.items()}
        with self._lock:
            self._requests.append(RecordedRequest(request.method, request.path, headers, payload))
        return payload

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        given = request.headers.get("Authorization", "")
        if given == f"Bearer {self.api_key}":
            return None
        message = "Incorrect API key provided." if given else "You didn't provide an API key."
        return web.json_response(error_body(message, code="invalid_api_key"), status=401)

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        model = {
            "id": "gpt-4o-mini",
            "object": "model",
            "created": 1686935002,
            "owned_by": "openai",
        }
        return web.json_response({"object": "list", "data": [model]})

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        with self._lock:
            reply = self._replies.popleft() if self._replies else Reply()
        await asyncio.sleep(reply.delay)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        content = reply.content if reply.content is not None else self.content
        if reply.body is not None:
            return _raw_response(reply)
        if body.get("stream"):
            return await _stream(request, reply, stream_events(body, content))
        return web.json_response(
            completion(body, content), status=reply.status, headers=reply.headers
        )


def _raw_response(reply: Reply) -> web.Response:
    if isinstance(reply.body, dict):
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)
    headers = {"Content-Type": "application/json", **reply.headers}
    return web.Response(body=reply.body, status=reply.status, headers=headers)


async def _stream(
    request: web.Request, reply: Reply, events: list[dict[str, Any]]
) -> web.StreamResponse:
    """Send ``events`` as SSE, applying the reply's cut, stall, error and garbage."""
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **reply.headers}
    response = web.StreamResponse(status=reply.status, headers=headers)
    response.enable_chunked_encoding()
    await response.prepare(request)
    for sent, event in enumerate(events):
        if sent == reply.stall_after:
            await asyncio.sleep(reply.stall)
        if sent == reply.cut_after:
            assert request.transport is not None
            request.transport.close()  # flushes what was written, then hangs up mid-body
            return response
        if sent == reply.error_after:
            await response.write(f"data: {json.dumps(reply.error)}\n\n".encode())
            await response.write_eof()
            return response
        if sent == reply.garbage_after:
            await response.write(b"data: {this is not json\n\n")
        await response.write(f"data: {json.dumps(event)}\n\n".encode())
    if not reply.omit_done:
        await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response
