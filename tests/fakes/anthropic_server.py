"""A wire-level fake of Anthropic's Messages API, for testing adapters over real HTTP.

It serves ``POST /v1/messages`` and ``GET /v1/models`` the way Anthropic's API
reference documents them (examples in ``tests/fixtures/anthropic/``): a
``message`` object, or with ``"stream": true`` a ``text/event-stream`` of named
events (``message_start``, a text block streamed a word per
``content_block_delta``, a ``ping``, ``tool_use`` blocks whose input arrives as
``input_json_delta`` fragments, ``message_delta`` with the stop reason and
usage, ``message_stop``); errors as ``{"type": "error", "error": {type,
message}, "request_id"}``. It checks the key (``x-api-key``, or a bearer token
as the official SDK sends it) when built with one, and ``anthropic-version``
always, and rejects what Anthropic rejects: a body
without ``max_tokens``, turns that do not alternate, empty text blocks,
``tool_use`` ids not answered by ``tool_result`` blocks in the next user turn,
tool blocks without ``tools``. It honours ``stop_sequences`` and ``max_tokens``
(a word counts as a token).

Tests script it one call at a time with :class:`Reply` (a status, headers, a
raw body, tool uses, a delay, a stream cut, stalled, broken or left without
``message_stop`` after N events) and read what it received from
:attr:`FakeAnthropic.requests`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.openai_server import RecordedRequest
from tests.fakes.server import ScriptedServer

__all__ = [
    "API_VERSION",
    "DEFAULT_CONTENT",
    "DEFAULT_MODELS",
    "FakeAnthropic",
    "RecordedRequest",
    "Reply",
    "ToolUse",
    "error_body",
    "message",
    "stream_events",
]

API_VERSION = "2023-06-01"
DEFAULT_CONTENT = "Hello! How can I assist you today?"
DEFAULT_MODELS = ("claude-opus-4-7", "claude-sonnet-4-6", "claude-haiku-4-5")
MESSAGE_ID = "msg_01FakeXFDUDYJgAACzvnptvV"


def error_body(message: str, *, type: str = "invalid_request_error") -> dict[str, Any]:
    """Anthropic's error object."""
    return {
        "type": "error",
        "error": {"type": type, "message": message},
        "request_id": "req_011CFakeRequest0000000000",
    }


@dataclass(frozen=True)
class ToolUse:
    """A tool call the fake answers with (only when the request carries ``tools``)."""

    name: str
    input: dict[str, Any]
    id: str | None = None


@dataclass
class Reply:
    """How the fake answers one messages call; the defaults answer normally.

    ``body`` is sent as-is (a dict as JSON) instead of the generated answer.
    ``tool_uses`` makes the answer call those tools after its text.
    ``usage`` is merged into the generated usage (cache counts, say). The
    ``*_after`` fields act on a stream after that many events: ``cut_after``
    drops the connection mid-body, ``stall_after`` goes silent for ``stall``
    seconds, ``error_after`` sends ``error`` as an ``error`` event and ends,
    ``garbage_after`` sends a non-JSON event; ``omit_stop`` ends the body
    without ``message_stop``.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | str | dict[str, Any] | None = None
    content: str | None = None
    tool_uses: list[ToolUse] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    delay: float = 0.0
    cut_after: int | None = None
    stall_after: int | None = None
    stall: float = 0.0
    error_after: int | None = None
    error: dict[str, Any] = field(
        default_factory=lambda: {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
        }
    )
    garbage_after: int | None = None
    omit_stop: bool = False


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [word if i == 0 else f" {word}" for i, word in enumerate(words)]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_text_of(block.get("text") or block.get("content")) for block in content)
    return ""


def _input_tokens(body: dict[str, Any]) -> int:
    texts = [_text_of(body.get("system"))] + [_text_of(m.get("content")) for m in body["messages"]]
    return sum(len(text.split()) for text in texts)


def _answer(body: dict[str, Any], reply: Reply, content: str) -> tuple[str, list[ToolUse], str]:
    """The text, tool uses and stop reason answering ``body``."""
    stop_reason = "tool_use" if reply.tool_uses else "end_turn"
    for stop in body.get("stop_sequences") or []:
        if stop in content:
            content, stop_reason = content[: content.index(stop)], "stop_sequence"
            return content, [], stop_reason
    words = _words(content)
    if len(words) > body["max_tokens"]:
        return "".join(words[: body["max_tokens"]]), [], "max_tokens"
    return content, reply.tool_uses, stop_reason


def _blocks(text: str, tool_uses: list[ToolUse]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for n, use in enumerate(tool_uses, start=1):
        use_id = use.id or f"toolu_01FakeToolUse{n:011d}"
        blocks.append({"type": "tool_use", "id": use_id, "name": use.name, "input": use.input})
    return blocks


def message(body: dict[str, Any], reply: Reply, content: str) -> dict[str, Any]:
    """The ``message`` answering ``body``."""
    text, tool_uses, stop_reason = _answer(body, reply, content)
    stop_sequence = None
    if stop_reason == "stop_sequence":
        stop_sequence = next(s for s in body["stop_sequences"] if s in content)
    output = (len(_words(text)) if text else 0) + 10 * len(tool_uses)
    usage = {"input_tokens": _input_tokens(body), "output_tokens": output, **reply.usage}
    return {
        "id": MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": _blocks(text, tool_uses),
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage,
    }


def stream_events(body: dict[str, Any], reply: Reply, content: str) -> list[dict[str, Any]]:
    """The stream events (each with its ``type``) answering ``body`` as ``message`` does."""
    answer = message(body, reply, content)
    start = {**answer, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**answer["usage"], "output_tokens": 1}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(answer["content"]):
        opening: dict[str, Any]
        if block["type"] == "text":
            deltas = [{"type": "text_delta", "text": word} for word in _words(block["text"])]
            opening = {"type": "text", "text": ""}
        else:
            arguments = json.dumps(block["input"])
            fragments = [""] + [arguments[i : i + 8] for i in range(0, len(arguments), 8)]
            deltas = [{"type": "input_json_delta", "partial_json": f} for f in fragments]
            opening = {**block, "input": {}}
        events.append({"type": "content_block_start", "index": index, "content_block": opening})
        if index == 0:
            events.append({"type": "ping"})
        events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": index})
    delta = {"stop_reason": answer["stop_reason"], "stop_sequence": answer["stop_sequence"]}
    usage = {"output_tokens": answer["usage"]["output_tokens"]}
    events.append({"type": "message_delta", "delta": delta, "usage": usage})
    events.append({"type": "message_stop"})
    return events


def conversation_problem(body: Any) -> str | None:
    """Why Anthropic would reject ``body`` with a 400, or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens: Field required (an integer of at least 1)"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    open_tool_uses: set[str] = set()
    uses_tools = False
    for n, turn in enumerate(messages):
        role = turn.get("role")
        if role not in ("user", "assistant"):
            return f"messages.{n}.role: Input should be 'user' or 'assistant'"
        if n and messages[n - 1].get("role") == role:
            return f'messages: roles must alternate, but found multiple "{role}" roles in a row'
        content = turn.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        if any(b.get("type") == "text" and not b.get("text") for b in blocks):
            return f"messages.{n}: text content blocks must be non-empty"
        answered = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
        calls = {b.get("id") for b in blocks if b.get("type") == "tool_use"}
        uses_tools = uses_tools or bool(answered or calls)
        if answered - open_tool_uses:
            return f"messages.{n}: unexpected `tool_use_id` found in `tool_result` blocks"
        if open_tool_uses - answered:
            missing = ", ".join(sorted(open_tool_uses - answered))
            return (
                f"messages.{n}: `tool_use` ids were found without `tool_result` blocks: {missing}"
            )
        open_tool_uses = {str(call) for call in calls}
    if uses_tools and not body.get("tools"):
        return "Requests which include `tool_use` or `tool_result` blocks must define tools."
    return None


class FakeAnthropic(ScriptedServer[Reply, RecordedRequest]):
    """The fake server; use as a context manager, point adapters at :attr:`base_url`.

    With ``api_key`` set it answers 401 like Anthropic unless the request
    carries ``x-api-key: <api_key>``. ``models`` are listed ``page_size`` at a time.
    """

    ignores_stream: bool = False
    """Whether ``"stream": true`` goes unheeded: set it on an instance to have every
    call answered with the whole ``message`` as ``application/json``."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        content: str = DEFAULT_CONTENT,
        models: tuple[str, ...] = DEFAULT_MODELS,
        page_size: int = 20,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.content = content
        self.models = models
        self.page_size = page_size

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, like Anthropic's ``https://api.anthropic.com``."""
        return self.origin

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._models)
        return app

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        headers = {name.lower(): value for name, value in request.headers.items()}
        self._remember(RecordedRequest(request.method, request.path_qs, headers, payload))
        return payload

    def _refused(self, request: web.Request) -> web.Response | None:
        """Anthropic's 401 for a missing or wrong key, 400 for a missing version.

        The key is taken from ``x-api-key`` (the documented header) or as a
        bearer token, which the official SDK sends since its 2.x releases.
        """
        given = request.headers.get("x-api-key")
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.api_key is not None and self.api_key not in (given, bearer):
            given = given or bearer or None
            text = "invalid x-api-key" if given else "x-api-key header is required"
            return web.json_response(error_body(text, type="authentication_error"), status=401)
        if not request.headers.get("anthropic-version"):
            return web.json_response(
                error_body("anthropic-version: header is required"), status=400
            )
        return None

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        if (refused := self._refused(request)) is not None:
            return refused
        after = request.query.get("after_id")
        start = self.models.index(after) + 1 if after in self.models else 0
        limit = min(int(request.query.get("limit", 20)), self.page_size)
        page = self.models[start : start + limit]
        data = [
            {
                "type": "model",
                "id": model,
                "display_name": model,
                "created_at": "2025-09-29T00:00:00Z",
                "lifecycle": "active",
            }
            for model in page
        ]
        return web.json_response(
            {
                "data": data,
                "has_more": start + limit < len(self.models),
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }
        )

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        reply = self._next_reply(Reply)
        await asyncio.sleep(reply.delay)
        if (refused := self._refused(request)) is not None:
            return refused
        if reply.body is not None:
            return _raw_response(reply)
        if (problem := conversation_problem(body)) is not None:
            return web.json_response(error_body(problem), status=400)
        if reply.tool_uses and not body.get("tools"):
            return web.json_response(error_body("tool use scripted, no tools given"), status=400)
        content = reply.content if reply.content is not None else self.content
        if body.get("stream") and not self.ignores_stream:
            return await _stream(request, reply, stream_events(body, reply, content))
        answer = message(body, reply, content)
        return web.json_response(answer, status=reply.status, headers=reply.headers)


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
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **reply.headers}
    response = web.StreamResponse(status=reply.status, headers=headers)
    response.enable_chunked_encoding()
    await response.prepare(request)
    if reply.omit_stop:
        events = events[:-1]
    for sent, event in enumerate(events):
        if sent == reply.stall_after:
            await asyncio.sleep(reply.stall)
        if sent == reply.cut_after:
            assert request.transport is not None
            request.transport.close()  # flushes what was written, then hangs up mid-body
            return response
        if sent == reply.error_after:
            await response.write(_event(reply.error))
            await response.write_eof()
            return response
        if sent == reply.garbage_after:
            await response.write(b"event: content_block_delta\ndata: {this is not json\n\n")
        await response.write(_event(event))
    await response.write_eof()
    return response
