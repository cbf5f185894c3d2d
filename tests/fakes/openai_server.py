"""A wire-level fake of OpenAI's API, for testing adapters over real HTTP.

It serves ``POST /v1/chat/completions``, ``POST /v1/embeddings``, ``POST /v1/completions``
(a ``text_completion``: the content once per prompt and choice),
``POST /v1/images/generations`` (:mod:`tests.fakes.images`),
``POST /v1/responses`` (:mod:`tests.fakes.responses`) and
``GET /v1/models`` the way OpenAI's API reference documents them: a
``chat.completion`` object, or with ``"stream": true`` a
``text/event-stream`` of ``data: {chunk}`` events (the first carrying the
assistant role, one per word, one with the finish reason, a usage chunk with
empty ``choices`` when ``stream_options.include_usage``), ended by
``data: [DONE]``; an embeddings ``list`` with one vector per input
(:func:`tests.fakes.vectors.fake_vector`, ``dimensions`` long, base64 when
``encoding_format`` says so, usage in words), refusing an empty input, an
empty string, more than 2,048 inputs or an unknown field with 400; errors as
``{"error": {message, type, param, code}}``.

Tests script it one call at a time with :class:`Reply` (a status, headers, a
raw body, a delay before answering, tool calls to answer with, a stream cut,
stalled or broken after N events) and read back what it received from
:attr:`FakeOpenAI.requests`. With :attr:`FakeOpenAI.ignores_stream` set it
answers ``"stream": true`` with the whole ``chat.completion`` as
``application/json``, as OpenAI-compatible servers that cannot stream do.

Fakes of OpenAI-compatible vendors subclass :class:`FakeOpenAI` and override
its hooks: :meth:`~FakeOpenAI.routes` (paths), :meth:`~FakeOpenAI.authorized`
(the auth header), :meth:`~FakeOpenAI.completion_body` and
:meth:`~FakeOpenAI.stream_chunks` (vendor fields), :attr:`~FakeOpenAI.send_done`
(the ``[DONE]`` marker) and :attr:`~FakeOpenAI.keepalive` (SSE comments).
"""

from __future__ import annotations

import array
import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.images import images_problem, images_response
from tests.fakes.responses import response_body, response_events
from tests.fakes.server import ScriptedServer
from tests.fakes.vectors import DEFAULT_DIMENSIONS, fake_vector, word_tokens

__all__ = [
    "DEFAULT_CONTENT",
    "FakeOpenAI",
    "RecordedRequest",
    "Reply",
    "completion",
    "embeddings_list",
    "error_body",
    "stream_events",
    "text_completion",
    "text_completion_chunks",
    "tool_call",
]

DEFAULT_CONTENT = "Hello! How can I assist you today?"


def text_completion(body: dict[str, Any], content: str) -> dict[str, Any]:
    """OpenAI's ``text_completion`` answer to a ``/v1/completions`` ``body``."""
    prompt = body.get("prompt", "")
    prompts = (
        [prompt] if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)) else prompt
    )
    n = int(body.get("n") or 1)
    choices = [
        {"text": content, "index": index, "logprobs": None, "finish_reason": "stop"}
        for index in range(len(prompts) * n)
    ]
    prompt_tokens = sum(len(p.split()) if isinstance(p, str) else len(p) for p in prompts)
    completion_tokens = len(content.split()) * len(choices)
    return {
        "id": f"cmpl-fake-{time.time_ns()}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def text_completion_chunks(body: dict[str, Any], whole: dict[str, Any]) -> list[dict[str, Any]]:
    """``whole`` streamed as OpenAI streams legacy completions: a chunk per word of each
    choice, its finish reason in its last, then a usage chunk when asked."""
    head = {key: whole[key] for key in ("id", "object", "created", "model")}
    chunks = []
    for choice in whole["choices"]:
        words = choice["text"].split(" ")
        for position, word in enumerate(words):
            last = position == len(words) - 1
            text = word if last else word + " "
            part = {"text": text, "index": choice["index"], "logprobs": None}
            part["finish_reason"] = choice["finish_reason"] if last else None
            chunks.append({**head, "choices": [part]})
    options = body.get("stream_options") or {}
    if options.get("include_usage"):
        chunks.append({**head, "choices": [], "usage": whole["usage"]})
    return chunks


def error_body(
    message: str, *, type: str = "invalid_request_error", code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """One OpenAI-shaped tool call, as :attr:`Reply.tool_calls` takes it."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


@dataclass
class Reply:
    """How the fake answers one chat completion call; the defaults answer normally.

    ``body`` is sent as-is (a dict as JSON) instead of the generated answer,
    streamed or not. The ``*_after`` fields act on a stream after that many
    ``data:`` events: ``cut_after`` drops the connection mid-body,
    ``stall_after`` goes silent for ``stall`` seconds, ``error_after`` sends
    ``error`` as an event and ends, ``garbage_after`` sends a non-JSON event.
    ``tool_calls`` (see :func:`tool_call`) answer instead of text when the
    request carries ``tools``.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | str | dict[str, Any] | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
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
    query: dict[str, str] = field(default_factory=dict)
    peer: Any = None
    """The client's address and port: the same for calls on one kept-alive connection."""


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


def completion(
    body: dict[str, Any], content: str, tool_calls: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The ``chat.completion`` answering ``body`` with ``content`` or ``tool_calls``."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    completion_tokens = len(_words(content))
    if tool_calls:
        message = {"role": "assistant", "content": None, "tool_calls": tool_calls, "refusal": None}
        completion_tokens = sum(len(call["function"]["arguments"]) for call in tool_calls)
    return {
        "id": "chatcmpl-fake0001",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if tool_calls else "stop",
            }
        ],
        "usage": _usage(body, completion_tokens),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def _tool_call_deltas(tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls as OpenAI streams them: id and name first, then the arguments in pieces."""
    deltas: list[dict[str, Any]] = []
    for index, call in enumerate(tool_calls):
        head = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        deltas.append({"tool_calls": [head]})
        arguments = call["function"]["arguments"]
        for start in range(0, len(arguments), 8):
            piece = {"index": index, "function": {"arguments": arguments[start : start + 8]}}
            deltas.append({"tool_calls": [piece]})
    return deltas


def stream_events(
    body: dict[str, Any], content: str, tool_calls: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects streaming ``content`` (or ``tool_calls``),
    usage chunk included."""
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

    if tool_calls:
        deltas = _tool_call_deltas(tool_calls)
        events = [chunk({"role": "assistant", "content": None, **deltas[0]})]
        events += [chunk(delta) for delta in deltas[1:]]
        events.append(chunk({}, "tool_calls"))
        completion_tokens = sum(len(call["function"]["arguments"]) for call in tool_calls)
    else:
        words = _words(content)
        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        events += [chunk({"content": word}) for word in words]
        events.append(chunk({}, "stop"))
        completion_tokens = len(words)
    if include_usage:
        events.append({**base, "choices": [], "usage": _usage(body, completion_tokens)})
    return events


_EMBEDDING_FIELDS = frozenset({"model", "input", "dimensions", "encoding_format", "user"})


def _embedding_items(value: Any) -> list[Any]:
    if isinstance(value, str) or (value and all(isinstance(item, int) for item in value)):
        return [value]
    return list(value) if isinstance(value, list) else []


def embeddings_problem(body: Any) -> tuple[str, str | None] | None:
    """OpenAI's complaint (message, param) about an embeddings body; None if fine."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request.", None
    if unknown := sorted(set(body) - _EMBEDDING_FIELDS):
        return f"Unrecognized request argument supplied: {unknown[0]}", None
    if not body.get("model"):
        return "you must provide a model parameter", None
    items = _embedding_items(body.get("input"))
    if not items or any(item in ("", []) for item in items):
        return "'$.input' is invalid. Please check the API reference.", "input"
    if len(items) > 2048:
        return f"'$.input' is too long: {len(items)} items, at most 2048.", "input"
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return "'$.encoding_format' must be 'float' or 'base64'.", "encoding_format"
    dimensions = body.get("dimensions", DEFAULT_DIMENSIONS)
    if not isinstance(dimensions, int) or dimensions < 1:
        return "Invalid value for 'dimensions'.", "dimensions"
    return None


def _base64(vector: list[float]) -> str:
    return base64.b64encode(array.array("f", vector).tobytes()).decode()


def embeddings_list(body: dict[str, Any], *, model: str | None = None) -> dict[str, Any]:
    """OpenAI's answer to an embeddings ``body``: a vector per input, in order."""
    items = _embedding_items(body["input"])
    dimensions = body.get("dimensions", DEFAULT_DIMENSIONS)
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(items):
        vector = fake_vector(item, dimensions)
        embedding = _base64(vector) if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(word_tokens(item) for item in items)
    return {
        "object": "list",
        "data": data,
        "model": model or body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


class FakeOpenAI(ScriptedServer[Reply, RecordedRequest]):
    """The fake server; use as a context manager, point adapters at :attr:`base_url`.

    With ``api_key`` set it answers 401 like OpenAI unless the request carries
    ``Authorization: Bearer <api_key>``. ``models`` are the ids ``GET /models``
    lists.
    """

    send_done: bool = True
    """Whether streams end with ``data: [DONE]``."""
    keepalive: str | None = None
    """An SSE comment line sent before each stream event (OpenRouter's keep-alive)."""
    ignores_stream: bool = False
    """Whether ``"stream": true`` goes unheeded: set it on an instance to have every
    call answered with the whole ``chat.completion`` as ``application/json``."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        content: str = DEFAULT_CONTENT,
        models: tuple[str, ...] = ("gpt-4o-mini",),
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.content = content
        self.models = models

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``, like OpenAI's ``https://api.openai.com/v1``."""
        return f"{self.origin}/v1"

    def routes(self) -> list[tuple[str, str]]:
        """``(method, path)`` of the chat completions and model list routes, in that order."""
        return [("POST", "/v1/chat/completions"), ("GET", "/v1/models")]

    def make_app(self) -> web.Application:
        app = web.Application()
        (chat_method, chat_path), (models_method, models_path) = self.routes()
        app.router.add_route(chat_method, chat_path, self._chat_completions)
        app.router.add_route(models_method, models_path, self._models)
        app.router.add_post(self.embeddings_path(), self._embeddings)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/images/generations", self._images)
        app.router.add_post(self.responses_path(), self._responses)
        return app

    def responses_path(self) -> str:
        """The path of the Responses route (:mod:`tests.fakes.responses`)."""
        return "/v1/responses"

    def images_model(self, request: web.Request, body: Any) -> str:
        """The model that draws: the body's (OpenAI's default, ``dall-e-2``, when absent)."""
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) else "dall-e-2"

    def images_body(self, body: dict[str, Any], *, model: str) -> dict[str, Any]:
        """The ``ImagesResponse`` the fake answers with; vendors add their fields."""
        return images_response(body, model=model, url_base=f"{self.origin}/generated")

    def embeddings_path(self) -> str:
        """The path of the embeddings route."""
        return "/v1/embeddings"

    def embeddings_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The embeddings ``list`` the fake answers with; vendors change its model."""
        return embeddings_list(body)

    def authorized(self, request: web.Request) -> bool | None:
        """Whether the request carries the key: True, False, or None when it has none."""
        given = request.headers.get("Authorization")
        if given is None:
            return None
        return given == f"Bearer {self.api_key}"

    def unauthorized_status(self, *, key_given: bool) -> int:
        """The status of the vendor's answer to a missing or wrong key."""
        return 401

    def unauthorized_body(self, *, key_given: bool) -> dict[str, Any]:
        """The vendor's answer to a missing or wrong key."""
        message = "Incorrect API key provided." if key_given else "You didn't provide an API key."
        return error_body(message, code="invalid_api_key")

    def completion_body(self, body: dict[str, Any], content: str, reply: Reply) -> dict[str, Any]:
        """The ``chat.completion`` the fake answers with; vendors add their fields."""
        return completion(body, content, self._tool_calls(body, reply))

    def stream_chunks(
        self, body: dict[str, Any], content: str, reply: Reply
    ) -> list[dict[str, Any]]:
        """The stream's chunks; vendors add their fields."""
        return stream_events(body, content, self._tool_calls(body, reply))

    def models_body(self) -> dict[str, Any]:
        """The model list in OpenAI's shape."""
        data = [
            {"id": model, "object": "model", "created": 1686935002, "owned_by": "openai"}
            for model in self.models
        ]
        return {"object": "list", "data": data}

    @staticmethod
    def _tool_calls(body: dict[str, Any], reply: Reply) -> list[dict[str, Any]] | None:
        return reply.tool_calls if body.get("tools") else None

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        payload = json.loads(raw) if raw else None
        headers = {name.lower(): value for name, value in request.headers.items()}
        peer = request.transport.get_extra_info("peername") if request.transport else None
        recorded = RecordedRequest(
            request.method, request.path, headers, payload, dict(request.query), peer
        )
        self._remember(recorded)
        return payload

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        verdict = self.authorized(request)
        if verdict:
            return None
        key_given = verdict is not None
        body = self.unauthorized_body(key_given=key_given)
        return web.json_response(body, status=self.unauthorized_status(key_given=key_given))

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        return web.json_response(self.models_body())

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        reply = self._next_reply(Reply)
        await asyncio.sleep(reply.delay)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if reply.body is not None:
            return _raw_response(reply)
        if (problem := embeddings_problem(body)) is not None:
            message, param = problem
            error = error_body(message)
            error["error"]["param"] = param
            return web.json_response(error, status=400)
        return web.json_response(
            self.embeddings_body(body), status=reply.status, headers=reply.headers
        )

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        """Legacy completions: a ``text_completion`` with the content once per prompt and
        choice (``n``), usage in words, or with ``stream`` its chunks (a word each, then
        the finish, then usage when ``stream_options.include_usage``); a scripted reply's
        raw body or status wins."""
        body = await self._record(request)
        reply = self._next_reply(Reply)
        await asyncio.sleep(reply.delay)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if reply.body is not None:
            return _raw_response(reply)
        content = reply.content if reply.content is not None else self.content
        whole = text_completion(body, content)
        if body.get("stream"):
            return await _stream(request, reply, text_completion_chunks(body, whole))
        return web.json_response(whole, status=reply.status, headers=reply.headers)

    async def _images(self, request: web.Request) -> web.Response:
        """Image generation (:mod:`tests.fakes.images`); a scripted reply's raw body wins."""
        body = await self._record(request)
        reply = self._next_reply(Reply)
        await asyncio.sleep(reply.delay)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if reply.body is not None:
            return _raw_response(reply)
        model = self.images_model(request, body)
        if (problem := images_problem(body, model=model)) is not None:
            message, param, code = problem
            error = error_body(message, code=code)
            error["error"]["param"] = param
            return web.json_response(error, status=400)
        return web.json_response(
            self.images_body(body, model=model), status=reply.status, headers=reply.headers
        )

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        """Responses (:mod:`tests.fakes.responses`): a ``response``, or with ``stream`` its
        ``event:``-named events; a scripted reply's raw body or status wins."""
        body = await self._record(request)
        reply = self._next_reply(Reply)
        await asyncio.sleep(reply.delay)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if reply.body is not None:
            return _raw_response(reply)
        content = reply.content if reply.content is not None else self.content
        if body.get("stream"):
            events = response_events(body, content, reply.tool_calls)
            return await _stream(request, reply, events, done=False, named=True)
        whole = response_body(body, content, reply.tool_calls)
        return web.json_response(whole, status=reply.status, headers=reply.headers)

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        reply = self._next_reply(Reply)
        await asyncio.sleep(reply.delay)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        content = reply.content if reply.content is not None else self.content
        if reply.body is not None:
            return _raw_response(reply)
        if body.get("stream") and not self.ignores_stream:
            events = self.stream_chunks(body, content, reply)
            return await _stream(
                request, reply, events, done=self.send_done, comment=self.keepalive
            )
        return web.json_response(
            self.completion_body(body, content, reply), status=reply.status, headers=reply.headers
        )


def _raw_response(reply: Reply) -> web.Response:
    if isinstance(reply.body, dict):
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)
    headers = {"Content-Type": "application/json", **reply.headers}
    return web.Response(body=reply.body, status=reply.status, headers=headers)


async def _stream(
    request: web.Request,
    reply: Reply,
    events: list[dict[str, Any]],
    *,
    done: bool = True,
    comment: str | None = None,
    named: bool = False,
) -> web.StreamResponse:
    """Send ``events`` as SSE, applying the reply's cut, stall, error and garbage.

    ``comment`` is sent as an SSE comment line before each event; ``done``
    says whether ``data: [DONE]`` ends the stream.
    """
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
        if comment is not None:
            await response.write(f": {comment}\n\n".encode())
        name = f"event: {event['type']}\n" if named else ""  # Responses events are named
        await response.write(f"{name}data: {json.dumps(event)}\n\n".encode())
    if done and not reply.omit_done:
        await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response
