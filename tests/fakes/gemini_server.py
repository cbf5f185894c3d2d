"""A wire-level fake of Google's Gemini API, for testing the gemini adapter over real HTTP.

It serves ``POST /{version}/models/{model}:generateContent``,
``:streamGenerateContent?alt=sse`` and ``:batchEmbedContents``, and
``GET /{version}/models``, the way the Gemini API answers them (see
``tests/fixtures/gemini/``): a ``GenerateContentResponse`` with
``candidates``, ``usageMetadata``, ``modelVersion`` and ``responseId``; a
stream of ``data: {...}`` events with CRLF line endings, one per word, each
with the running ``usageMetadata``, the last with ``finishReason``, and no
end marker (the connection just closes); embeddings as ``{"embeddings":
[{"values": [...]}]}`` (:func:`tests.fakes.vectors.fake_vector`,
``outputDimensionality`` long, no usage), refusing more than 100 requests or
one naming another model with 400 ``INVALID_ARGUMENT``; errors as
``{"error": {code, message, status, details}}``. Like Gemini, it answers a
wrong ``x-goog-api-key`` with 400 ``API_KEY_INVALID`` and a missing one with
403 ``PERMISSION_DENIED``, and rejects a content without parts.

Tests script it one call at a time with :class:`Reply` and read back what it
received from :attr:`FakeGemini.requests`. With :attr:`FakeGemini.ignores_stream`
set it answers ``streamGenerateContent`` as Gemini does without ``alt=sse``:
the stream's responses as one JSON array, ``application/json``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.server import ScriptedServer
from tests.fakes.vectors import DEFAULT_DIMENSIONS, fake_vector

__all__ = [
    "DEFAULT_CONTENT",
    "FakeGemini",
    "FunctionCallScript",
    "RecordedRequest",
    "Reply",
    "error_body",
]

DEFAULT_CONTENT = "Hello! How can I help you today?"
RESPONSE_ID = "q3mBaPzKJ4e4qtsP0aSy-Ac"
_CRLF = "\r\n"


def error_body(
    code: int, message: str, status: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Google's error object."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return {"error": error}


@dataclass
class FunctionCallScript:
    """One ``functionCall`` part the fake answers with."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    thought_signature: str | None = None


@dataclass
class Reply:
    """How the fake answers one generate call; the defaults answer normally.

    ``body`` is sent as-is (a dict or list as JSON) instead of the generated
    answer. ``function_calls`` answers with those calls when the request
    carries tools. The ``*_after`` fields act on a stream after that many
    events: ``cut_after`` drops the connection, ``stall_after`` goes silent
    for ``stall`` seconds, ``error_after`` sends ``error`` as a ``data:``
    event and ends, ``raw_error_after`` writes it as plain indented JSON
    lines (as Google does), ``garbage_after`` sends a non-JSON event.
    ``omit_finish`` leaves out every ``finishReason``.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | str | dict[str, Any] | list[Any] | None = None
    content: str | None = None
    delay: float = 0.0
    function_calls: list[FunctionCallScript] | None = None
    finish_reason: str = "STOP"
    thoughts_tokens: int = 0
    cut_after: int | None = None
    stall_after: int | None = None
    stall: float = 0.0
    error_after: int | None = None
    raw_error_after: int | None = None
    error: dict[str, Any] = field(
        default_factory=lambda: error_body(
            500, "An internal error has occurred. Please retry.", "INTERNAL"
        )
    )
    garbage_after: int | None = None
    omit_finish: bool = False


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


def _prompt_tokens(body: dict[str, Any]) -> int:
    contents = [*body.get("contents", []), body.get("systemInstruction") or {}]
    texts = [part.get("text", "") for c in contents for part in c.get("parts", [])]
    return sum(len(text.split()) for text in texts)


def _usage(body: dict[str, Any], candidates: int | None, thoughts: int) -> dict[str, Any]:
    prompt = _prompt_tokens(body)
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates is not None:
        usage["candidatesTokenCount"] = candidates
    usage["totalTokenCount"] = prompt + (candidates or 0) + thoughts
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def _call_part(call: FunctionCallScript) -> dict[str, Any]:
    function_call: dict[str, Any] = {"name": call.name, "args": call.args}
    if call.id is not None:
        function_call["id"] = call.id
    part: dict[str, Any] = {"functionCall": function_call}
    if call.thought_signature is not None:
        part["thoughtSignature"] = call.thought_signature
    return part


def _response(
    model: str, parts: list[dict[str, Any]], finish: str | None, usage: dict[str, Any]
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
    if finish is not None:
        candidate["finishReason"] = finish
    candidate["index"] = 0
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": RESPONSE_ID,
    }


def _answer_parts(body: dict[str, Any], reply: Reply, content: str) -> list[dict[str, Any]]:
    if reply.function_calls and body.get("tools"):
        return [_call_part(call) for call in reply.function_calls]
    return [{"text": content}]


def completion(model: str, body: dict[str, Any], reply: Reply, content: str) -> dict[str, Any]:
    """The ``GenerateContentResponse`` answering ``body``."""
    parts = _answer_parts(body, reply, content)
    tokens = len(_words(content)) if "text" in parts[0] else 5 * len(parts)
    finish = None if reply.omit_finish else reply.finish_reason
    return _response(model, parts, finish, _usage(body, tokens, reply.thoughts_tokens))


def stream_events(model: str, body: dict[str, Any], reply: Reply, content: str) -> list[Any]:
    """The ``GenerateContentResponse`` events streaming the answer to ``body``."""
    parts = _answer_parts(body, reply, content)
    finish = None if reply.omit_finish else reply.finish_reason
    if "text" not in parts[0]:
        return [_response(model, parts, finish, _usage(body, 5 * len(parts), 0))]
    words = _words(content)
    events = []
    for sent, word in enumerate(words, start=1):
        last = sent == len(words)
        usage = _usage(body, sent if last else None, reply.thoughts_tokens)
        events.append(_response(model, [{"text": word}], finish if last else None, usage))
    return events


class FakeGemini(ScriptedServer[Reply, RecordedRequest]):
    """The fake server; use as a context manager, point adapters at :attr:`base_url`.

    With ``api_key`` set it checks the ``x-goog-api-key`` header like Gemini.
    With ``require_thought_signatures`` it rejects a model turn whose first
    function call has no ``thoughtSignature``, as Gemini 3 models do.
    """

    ignores_stream: bool = False
    """Whether ``alt=sse`` goes unheeded: set it on an instance to have streams
    answered as one JSON array of their responses, as Gemini's default ``alt=json``."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        content: str = DEFAULT_CONTENT,
        require_thought_signatures: bool = False,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.content = content
        self.require_thought_signatures = require_thought_signatures

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, like Gemini's ``https://generativelanguage.googleapis.com``."""
        return self.origin

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{version}/models/{call}", self._generate)
        app.router.add_get("/{version}/models", self._models)
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
        given = request.headers.get("x-goog-api-key")
        if given == self.api_key:
            return None
        if given is None:
            message = "Method doesn't allow unregistered callers. Please use API Key."
            return web.json_response(error_body(403, message, "PERMISSION_DENIED"), status=403)
        info = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }
        message = "API key not valid. Please pass a valid API key."
        return web.json_response(error_body(400, message, "INVALID_ARGUMENT", [info]), status=400)

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        flash = {
            "name": "models/gemini-2.5-flash",
            "displayName": "Gemini 2.5 Flash",
            "supportedGenerationMethods": ["generateContent", "countTokens"],
        }
        embedding = {
            "name": "models/gemini-embedding-001",
            "supportedGenerationMethods": ["embedContent"],
        }
        pro = {"name": "models/gemini-2.5-pro", "supportedGenerationMethods": ["generateContent"]}
        if request.query.get("pageToken") == "page-2":
            return web.json_response({"models": [pro]})
        return web.json_response({"models": [flash, embedding], "nextPageToken": "page-2"})

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        reply = self._next_reply(Reply)
        await asyncio.sleep(reply.delay)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        model, _, method = request.match_info["call"].rpartition(":")
        methods = ("generateContent", "streamGenerateContent", "batchEmbedContents")
        if method not in methods or not model:
            return web.json_response(error_body(404, "Not found", "NOT_FOUND"), status=404)
        if reply.body is not None:
            return _raw_response(reply)
        if method == "batchEmbedContents":
            return _batch_embed(model, body, reply)
        if (problem := self._invalid(body)) is not None:
            return web.json_response(error_body(400, problem, "INVALID_ARGUMENT"), status=400)
        content = reply.content if reply.content is not None else self.content
        if method == "streamGenerateContent":
            events = stream_events(model, body, reply, content)
            if self.ignores_stream:
                return web.json_response(events, status=reply.status, headers=reply.headers)
            return await _stream(request, reply, events)
        return web.json_response(
            completion(model, body, reply, content), status=reply.status, headers=reply.headers
        )

    def _invalid(self, body: Any) -> str | None:
        """Gemini's complaint about ``body``, for the mistakes it rejects; None if fine."""
        if not isinstance(body, dict) or not body.get("contents"):
            return "* GenerateContentRequest.contents: contents is not specified"
        for number, content in enumerate(body["contents"]):
            if content.get("role") not in ("user", "model") or not content.get("parts"):
                return f"* GenerateContentRequest.contents[{number}]: bad role or no parts"
            calls = [part for part in content["parts"] if "functionCall" in part]
            if self.require_thought_signatures and calls and "thoughtSignature" not in calls[0]:
                return (
                    f"Function call is missing a thought_signature in functionCall parts. "
                    f"Additional data, function call `{calls[0]['functionCall']['name']}`, "
                    f"position {number + 1}."
                )
        return None


def _embed_problem(model: str, body: Any) -> str | None:
    """Gemini's complaint about a ``batchEmbedContents`` body; None if fine."""
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not requests:
        return "* BatchEmbedContentsRequest.requests: requests is not specified"
    if len(requests) > 100:
        return "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch"
    for number, item in enumerate(requests):
        if item.get("model") != f"models/{model}":
            return (
                f"Model names should be the same in all requests. "
                f"requests[{number}].model is {item.get('model')!r}, not 'models/{model}'."
            )
        parts = (item.get("content") or {}).get("parts") or []
        if not any(part.get("text") for part in parts):
            return f"* BatchEmbedContentsRequest.requests[{number}].content: no text"
    return None


def _batch_embed(model: str, body: Any, reply: Reply) -> web.Response:
    if (problem := _embed_problem(model, body)) is not None:
        return web.json_response(error_body(400, problem, "INVALID_ARGUMENT"), status=400)
    embeddings = []
    for item in body["requests"]:
        text = "".join(part.get("text", "") for part in item["content"]["parts"])
        dimensions = item.get("outputDimensionality") or DEFAULT_DIMENSIONS
        embeddings.append({"values": fake_vector(text, dimensions)})
    answer = {"embeddings": embeddings}
    return web.json_response(answer, status=reply.status, headers=reply.headers)


def _raw_response(reply: Reply) -> web.Response:
    if isinstance(reply.body, dict | list):
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)
    headers = {"Content-Type": "application/json", **reply.headers}
    return web.Response(body=reply.body, status=reply.status, headers=headers)


async def _stream(request: web.Request, reply: Reply, events: list[Any]) -> web.StreamResponse:
    """Send ``events`` as SSE, applying the reply's cut, stall, errors and garbage."""
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
            await response.write(f"data: {json.dumps(reply.error)}{_CRLF}{_CRLF}".encode())
            break
        if sent == reply.raw_error_after:
            await response.write(json.dumps(reply.error, indent=2).encode() + b"\n")
            break
        if sent == reply.garbage_after:
            await response.write(f"data: {{this is not json{_CRLF}{_CRLF}".encode())
        await response.write(f"data: {json.dumps(event)}{_CRLF}{_CRLF}".encode())
    await response.write_eof()
    return response
