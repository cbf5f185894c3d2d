"""A wire-level fake of Cohere's Chat API v2, for testing the cohere adapter over real HTTP.

It serves ``POST /v2/chat``, ``POST /v2/embed`` and ``GET /v1/models`` the
way Cohere's API reference documents them (see ``tests/fixtures/cohere/``): a chat response
``{id, message: {role, content: [{type: text, text}]}, finish_reason, usage:
{billed_units, tokens}}``, or with ``"stream": true`` ``event:``/``data:``
pairs ``message-start``, ``content-start``, one ``content-delta`` per word,
``content-end``, ``message-end`` (finish reason and usage), then
``data: [DONE]``; tool calls with a ``tool_plan`` and ``TOOL_CALL``, streamed
as ``tool-plan-delta`` and ``tool-call-start/-delta/-end``; errors as
``{"id", "message"}``; embeddings as ``{id, embeddings: {float: [...]},
texts, meta: {api_version, billed_units: {input_tokens}}, response_type}``
(:func:`tests.fakes.vectors.fake_vector`, ``output_dimension`` long), with
400 for a missing ``input_type`` or more than 96 texts. Like Cohere, it
answers a bad bearer key with 401 ``invalid api token`` and rejects a
malformed message list with 400.

Tests script it one call at a time with :class:`Reply` and read back what it
received from :attr:`FakeCohere.requests`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.server import ScriptedServer
from tests.fakes.vectors import DEFAULT_DIMENSIONS, fake_vector, word_tokens

__all__ = [
    "DEFAULT_CONTENT",
    "FakeCohere",
    "RecordedRequest",
    "Reply",
    "ToolCallScript",
    "error_body",
]

DEFAULT_CONTENT = "Hello! How can I help you today?"
CHAT_ID = "c14c80c3-18eb-4519-9460-6c92edd8cfb4"
PREAMBLE_TOKENS = 66
"""Tokens Cohere adds to every prompt (its system preamble): ``tokens`` minus ``billed_units``."""


def error_body(message: str, *, id: str = "7b3a9f0e-5c1d-4e2a-8f6b-9d0c1e2f3a4b") -> dict[str, Any]:
    """Cohere's error object."""
    return {"id": id, "message": message}


@dataclass
class ToolCallScript:
    """One tool call the fake answers with."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reply:
    """How the fake answers one chat call; the defaults answer normally.

    ``body`` is sent as-is (a dict as JSON) instead of the generated answer.
    ``tool_calls`` answers with those calls (after ``tool_plan``) when the
    request carries tools. The ``*_after`` fields act on a stream after that
    many events: ``cut_after`` drops the connection, ``stall_after`` goes
    silent for ``stall`` seconds, ``error_after`` ends with a ``message-end``
    reporting ``error`` and finish reason ``ERROR``, ``garbage_after`` sends a
    non-JSON event. ``omit_end`` leaves out ``message-end``.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | str | dict[str, Any] | None = None
    content: str | None = None
    delay: float = 0.0
    tool_calls: list[ToolCallScript] | None = None
    tool_plan: str = "I will look up the weather."
    finish_reason: str = "COMPLETE"
    cut_after: int | None = None
    stall_after: int | None = None
    stall: float = 0.0
    error_after: int | None = None
    error: str = "internal server error, this has been reported to our developers."
    garbage_after: int | None = None
    omit_end: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it; header names are lower-case."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [word if i == 0 else f" {word}" for i, word in enumerate(words)]


def _usage(body: dict[str, Any], output: int) -> dict[str, Any]:
    texts = [m.get("content") for m in body.get("messages", [])]
    prompt = sum(len(text.split()) for text in texts if isinstance(text, str))
    return {
        "billed_units": {"input_tokens": prompt, "output_tokens": output},
        "tokens": {"input_tokens": prompt + PREAMBLE_TOKENS, "output_tokens": output},
    }


def _calls(reply: Reply) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{call.name}_{index}k7xq2m9p",
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
        }
        for index, call in enumerate(reply.tool_calls or [])
    ]


def chat_response(body: dict[str, Any], reply: Reply, content: str) -> dict[str, Any]:
    """The v2 chat response answering ``body``."""
    if reply.tool_calls and body.get("tools"):
        message = {"role": "assistant", "tool_plan": reply.tool_plan, "tool_calls": _calls(reply)}
        finish, output = "TOOL_CALL", 10 * len(reply.tool_calls)
    else:
        message = {"role": "assistant", "content": [{"type": "text", "text": content}]}
        finish, output = reply.finish_reason, len(_words(content))
    return {
        "id": CHAT_ID,
        "message": message,
        "finish_reason": finish,
        "usage": _usage(body, output),
    }


def _tool_events(reply: Reply) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": word}}}
        for word in _words(reply.tool_plan)
    ]
    for index, call in enumerate(_calls(reply)):
        arguments = call["function"]["arguments"]
        start = {**call, "function": {**call["function"], "arguments": ""}}
        events.append(
            {"type": "tool-call-start", "index": index, "delta": {"message": {"tool_calls": start}}}
        )
        for piece in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
            delta = {"message": {"tool_calls": {"function": {"arguments": piece}}}}
            events.append({"type": "tool-call-delta", "index": index, "delta": delta})
        events.append({"type": "tool-call-end", "index": index})
    return events


def stream_events(body: dict[str, Any], reply: Reply, content: str) -> list[dict[str, Any]]:
    """The stream events answering ``body``, ``message-end`` included."""
    start_message = {
        "role": "assistant",
        "content": [],
        "tool_plan": "",
        "tool_calls": [],
        "citations": [],
    }
    events: list[dict[str, Any]] = [
        {"id": CHAT_ID, "type": "message-start", "delta": {"message": start_message}}
    ]
    if reply.tool_calls and body.get("tools"):
        events += _tool_events(reply)
        finish, output = "TOOL_CALL", 10 * len(reply.tool_calls)
    else:
        words = _words(content)
        start = {"message": {"content": {"type": "text", "text": ""}}}
        events.append({"type": "content-start", "index": 0, "delta": start})
        for word in words:
            delta = {"message": {"content": {"text": word}}}
            events.append({"type": "content-delta", "index": 0, "delta": delta})
        events.append({"type": "content-end", "index": 0})
        finish, output = reply.finish_reason, len(words)
    end = {"finish_reason": finish, "usage": _usage(body, output)}
    events.append({"type": "message-end", "delta": end})
    return events


class FakeCohere(ScriptedServer[Reply, RecordedRequest]):
    """The fake server; use as a context manager, point adapters at :attr:`base_url`.

    With ``api_key`` set it answers 401 like Cohere unless the request carries
    ``Authorization: Bearer <api_key>``.
    """

    ignores_stream: bool = False
    """Whether ``"stream": true`` goes unheeded: set it on an instance to have every
    call answered with the whole chat response as ``application/json``."""

    def __init__(self, *, api_key: str | None = None, content: str = DEFAULT_CONTENT) -> None:
        super().__init__()
        self.api_key = api_key
        self.content = content

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, like Cohere's ``https://api.cohere.com``."""
        return self.origin

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/chat", self._chat)
        app.router.add_post("/v2/embed", self._embed)
        app.router.add_get("/v1/models", self._models)
        return app

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        payload = json.loads(raw) if raw else None
        headers = {name.lower(): value for name, value in request.headers.items()}
        recorded = RecordedRequest(
            request.method, request.path, dict(request.query), headers, payload
        )
        self._remember(recorded)
        return payload

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token == self.api_key:
            return None
        message = "invalid api token" if token else "no api key supplied"
        return web.json_response(error_body(message), status=401)

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        command_a = {"name": "command-a-03-2025", "endpoints": ["generate", "chat", "summarize"]}
        command_r = {"name": "command-r7b-12-2024", "endpoints": ["generate", "chat"]}
        if request.query.get("page_token") == "page-2":
            return web.json_response({"models": [command_r]})
        return web.json_response({"models": [command_a], "next_page_token": "page-2"})

    async def _embed(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        reply = self._next_reply(Reply)
        await asyncio.sleep(reply.delay)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if reply.body is not None:
            return _raw_response(reply)
        if (problem := _invalid_embed(body)) is not None:
            return web.json_response(error_body(f"invalid request: {problem}"), status=400)
        texts = body["texts"]
        dimensions = body.get("output_dimension") or DEFAULT_DIMENSIONS
        tokens = sum(word_tokens(text) for text in texts)
        answer = {
            "id": "da6e531f-54c6-4a73-bf92-f60566d8d753",
            "embeddings": {"float": [fake_vector(text, dimensions) for text in texts]},
            "texts": texts,
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
            "response_type": "embeddings_by_type",
        }
        return web.json_response(answer, status=reply.status, headers=reply.headers)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        reply = self._next_reply(Reply)
        await asyncio.sleep(reply.delay)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if reply.body is not None:
            return _raw_response(reply)
        if (problem := _invalid(body)) is not None:
            return web.json_response(error_body(f"invalid request: {problem}"), status=400)
        content = reply.content if reply.content is not None else self.content
        if body.get("stream") and not self.ignores_stream:
            return await _stream(request, reply, stream_events(body, reply, content))
        return web.json_response(
            chat_response(body, reply, content), status=reply.status, headers=reply.headers
        )


def _invalid(body: Any) -> str | None:
    """Cohere's complaint about ``body``, for the mistakes it rejects; None if fine."""
    if not isinstance(body, dict) or not body.get("model"):
        return "model must be specified."
    if not body.get("messages"):
        return "messages must contain at least one message."
    for number, message in enumerate(body["messages"]):
        role = message.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            return f"messages[{number}]: unknown role {role!r}."
        if role == "tool" and not message.get("tool_call_id"):
            return f"messages[{number}]: tool message needs a tool_call_id."
        if role == "assistant" and "content" not in message and "tool_calls" not in message:
            return f"messages[{number}]: assistant message needs content or tool_calls."
    return None


def _invalid_embed(body: Any) -> str | None:
    """Cohere's complaint about an embed ``body``; None if fine."""
    if not isinstance(body, dict) or not body.get("model"):
        return "model must be specified."
    if not body.get("input_type"):
        return "input_type is required for embed models v3 and higher."
    texts = body.get("texts")
    if not isinstance(texts, list) or not texts:
        return "one of texts, images or inputs must be specified."
    if len(texts) > 96:
        return f"total number of texts must be at most 96 - received {len(texts)}"
    if body.get("embedding_types", ["float"]) != ["float"]:
        return "this fake serves float embeddings only."
    return None


def _raw_response(reply: Reply) -> web.Response:
    if isinstance(reply.body, dict):
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)
    headers = {"Content-Type": "application/json", **reply.headers}
    return web.Response(body=reply.body, status=reply.status, headers=headers)


def _event(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()


async def _stream(
    request: web.Request, reply: Reply, events: list[dict[str, Any]]
) -> web.StreamResponse:
    """Send ``events`` as SSE, applying the reply's cut, stall, error and garbage."""
    headers = {"Content-Type": "text/event-stream", **reply.headers}
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
            end = {"type": "message-end", "delta": {"finish_reason": "ERROR", "error": reply.error}}
            await response.write(_event(end))
            break
        if sent == reply.garbage_after:
            await response.write(b"event: content-delta\ndata: {this is not json\n\n")
        if event["type"] == "message-end" and reply.omit_end:
            continue
        await response.write(_event(event))
    else:
        await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response
