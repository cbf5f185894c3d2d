"""The body of a Gemini ``generateContent`` call, built from the canonical chat request.

Pure translation, no I/O. :func:`generate_content_body` turns an OpenAI-shaped
:class:`~relayq.schemas.chat.ChatCompletionRequest` into the JSON body Google's Gemini
API (``generativelanguage``) takes on ``models/{model}:generateContent`` and
``:streamGenerateContent``:

- system and developer messages become ``systemInstruction`` text parts, in
  order, wherever they stand in the conversation;
- user and assistant messages become ``contents`` with roles ``user`` and
  ``model``: text parts, and images from base64 ``data:`` URLs as
  ``inlineData`` parts;
- an assistant message's ``tool_calls`` become ``functionCall`` parts and each
  tool message a ``functionResponse`` part (role ``user``) named after the
  call it answers, looked up by ``tool_call_id``; a tool result that is a JSON
  object is sent as the response itself, anything else as ``{"output": ...}``;
- consecutive contents of the same role are merged into one, so parallel tool
  results travel together in one turn as Gemini expects;
- sampling controls (temperature, top_p, max tokens, stop, seed, ``n`` as
  ``candidateCount``, the penalties, an extra ``top_k`` field) go to
  ``generationConfig``; ``response_format`` to
  ``responseMimeType`` plus a schema; ``tools`` to ``functionDeclarations``;
  ``tool_choice`` to ``toolConfig.functionCallingConfig``.

Gemini gives function calls no id, so the adapter makes them up
(``call_<index>_<name>``, see :func:`synthetic_call_id`). Ids of that shape are
not sent back; an id Gemini did send is returned on both the ``functionCall``
and its ``functionResponse``, as the API asks.

Thought signatures: Gemini 3 models reject a replayed ``functionCall`` turn
without the opaque ``thoughtSignature`` they attached to it, and an
OpenAI-shaped conversation has nowhere to keep one. The first function call of
each replayed model turn therefore carries ``thought_signature_fallback``, by
default the placeholder Google documents for conversations whose signatures
were lost ("skip_thought_signature_validator"). The model's hidden reasoning
for that step is not restored; the call is accepted.

Not carried, and why: ``user``, ``logit_bias`` and ``parallel_tool_calls``
have no Gemini equivalent; ``logprobs``/``top_logprobs`` are not requested,
because Gemini's ``logprobsResult`` is not translated back; images by
``http(s)`` URL and audio or file parts raise
:class:`~relayq.providers.errors.InvalidRequest` (Gemini fetches no arbitrary
URL, and ``fileData`` takes only Files API URIs); ``reasoning_effort`` is not
mapped, since Gemini's thinking controls differ per model generation (set
``thinkingConfig`` through the provider's ``generation_config`` option).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from relayq.providers.errors import InvalidRequest
from relayq.schemas.chat import ChatCompletionRequest, ChatMessage, Role, ToolCall

__all__ = ["SchemaDialect", "generate_content_body", "synthetic_call_id"]

SchemaDialect = Literal["json_schema", "openapi"]
"""Which Gemini fields carry schemas: ``responseJsonSchema`` and
``parametersJsonSchema`` (full JSON Schema, Gemini 2.5 and later) or
``responseSchema`` and ``parameters`` (Google's OpenAPI subset, every model)."""

Part = dict[str, Any]
Content = dict[str, Any]

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)
_SYNTHETIC_ID = re.compile(r"call_\d+_.*")
_TOOL_CHOICE_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}


def synthetic_call_id(index: int, name: str) -> str:
    """The id relayq gives the ``index``-th function call of a candidate (Gemini gives none)."""
    return f"call_{index}_{name}"


def generate_content_body(
    request: ChatCompletionRequest,
    *,
    schema_dialect: SchemaDialect = "json_schema",
    thought_signature_fallback: str | None = None,
    generation_defaults: dict[str, Any] | None = None,
    safety_settings: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON body of ``generateContent`` / ``streamGenerateContent`` for ``request``.

    ``generation_defaults`` (the provider's configured ``generationConfig``
    entries, such as ``thinkingConfig``) are overridden by what the request
    itself sets.
    """
    system, contents = conversation(request.messages, signature=thought_signature_fallback)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    config = {**(generation_defaults or {}), **_generation_config(request, schema_dialect)}
    if config:
        body["generationConfig"] = config
    if request.tools:
        declarations = [_declaration(tool, schema_dialect) for tool in request.tools]
        body["tools"] = [{"functionDeclarations": declarations}]
    if request.tool_choice is not None:
        body["toolConfig"] = {"functionCallingConfig": _calling_config(request.tool_choice)}
    if safety_settings:
        body["safetySettings"] = safety_settings
    return body


def conversation(
    messages: list[ChatMessage], *, signature: str | None
) -> tuple[list[str], list[Content]]:
    """The system texts and the ``contents`` of ``messages``."""
    system: list[str] = []
    contents: list[Content] = []
    call_names: dict[str, str] = {}
    for message in messages:
        if message.role in (Role.SYSTEM, Role.DEVELOPER):
            if text := message.text():
                system.append(text)
            continue
        if message.role is Role.ASSISTANT:
            role, parts = "model", _model_parts(message, signature=signature)
            call_names.update({call.id: call.function.name for call in message.tool_calls or []})
        elif message.role is Role.TOOL:
            role, parts = "user", [_function_response(message, call_names)]
        else:
            role, parts = "user", _user_parts(message.content)
        if not parts:
            continue  # Gemini rejects a content without parts
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return system, contents


def _user_parts(content: str | list[dict[str, Any]] | None) -> list[Part]:
    if not content:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[Part] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            if text := str(part.get("text") or ""):
                parts.append({"text": text})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            parts.append(_image(str(image.get("url", "")) if isinstance(image, dict) else image))
        else:
            raise InvalidRequest(f"user content part {kind!r} has no Gemini equivalent")
    return parts


def _image(url: str) -> Part:
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise InvalidRequest("Gemini takes images only as base64 data: URLs")
    return {"inlineData": {"mimeType": match["mime"], "data": match["data"]}}


def _model_parts(message: ChatMessage, *, signature: str | None) -> list[Part]:
    parts: list[Part] = []
    if isinstance(message.content, str):
        if message.content:
            parts.append({"text": message.content})
    else:
        for part in message.content or []:
            kind = part.get("type")
            if kind not in ("text", "refusal"):
                raise InvalidRequest(f"assistant content part {kind!r} has no Gemini equivalent")
            if text := str(part.get(kind) or ""):
                parts.append({"text": text})
    for position, call in enumerate(message.tool_calls or []):
        call_part: Part = {"functionCall": _function_call(call)}
        if position == 0 and signature:
            call_part["thoughtSignature"] = signature
        parts.append(call_part)
    return parts


def _function_call(call: ToolCall) -> dict[str, Any]:
    try:
        args = json.loads(call.function.arguments or "{}")
    except ValueError as exc:
        raise InvalidRequest(f"tool call {call.id!r}: arguments are not JSON: {exc}") from exc
    if not isinstance(args, dict):
        raise InvalidRequest(f"tool call {call.id!r}: arguments must be a JSON object")
    mapped: dict[str, Any] = {"name": call.function.name, "args": args}
    if not _SYNTHETIC_ID.fullmatch(call.id):
        mapped["id"] = call.id
    return mapped


def _function_response(message: ChatMessage, call_names: dict[str, str]) -> Part:
    call_id = message.tool_call_id or ""
    name = call_names.get(call_id) or message.name
    if not name:
        raise InvalidRequest(
            f"tool message {call_id!r} answers no earlier assistant tool call, "
            "and Gemini needs the function's name"
        )
    text = message.text()
    try:
        result = json.loads(text)
    except ValueError:
        result = text
    response: dict[str, Any] = {
        "name": name,
        "response": result if isinstance(result, dict) else {"output": result},
    }
    if call_id and not _SYNTHETIC_ID.fullmatch(call_id):
        response["id"] = call_id
    return {"functionResponse": response}


def _generation_config(request: ChatCompletionRequest, dialect: SchemaDialect) -> dict[str, Any]:
    config: dict[str, Any] = {}
    simple = {
        "temperature": request.temperature,
        "topP": request.top_p,
        "maxOutputTokens": request.max_completion_tokens or request.max_tokens,
        "seed": request.seed,
        "candidateCount": request.n,
        "presencePenalty": request.presence_penalty,
        "frequencyPenalty": request.frequency_penalty,
        "topK": (request.model_extra or {}).get("top_k"),
    }
    config.update({key: value for key, value in simple.items() if value is not None})
    if request.stop:
        config["stopSequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    config.update(_response_format(request.response_format, dialect))
    return config


def _response_format(response_format: dict[str, Any] | None, dialect: SchemaDialect) -> Part:
    kind = (response_format or {}).get("type")
    if kind in (None, "text"):
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        spec = (response_format or {}).get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format json_schema needs a schema to carry to Gemini")
        field = "responseJsonSchema" if dialect == "json_schema" else "responseSchema"
        return {"responseMimeType": "application/json", field: schema}
    raise InvalidRequest(f"response_format {kind!r} has no Gemini equivalent")


def _declaration(tool: dict[str, Any], dialect: SchemaDialect) -> dict[str, Any]:
    function = tool.get("function")
    if tool.get("type") != "function" or not isinstance(function, dict):
        raise InvalidRequest(f"tool type {tool.get('type')!r} has no Gemini equivalent")
    declaration: dict[str, Any] = {"name": function.get("name")}
    if function.get("description"):
        declaration["description"] = function["description"]
    if function.get("parameters"):
        field = "parametersJsonSchema" if dialect == "json_schema" else "parameters"
        declaration[field] = function["parameters"]
    return declaration


def _calling_config(choice: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(choice, str) and choice in _TOOL_CHOICE_MODES:
        return {"mode": _TOOL_CHOICE_MODES[choice]}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and function.get("name"):
        return {"mode": "ANY", "allowedFunctionNames": [function["name"]]}
    raise InvalidRequest(f"tool_choice {choice!r} has no Gemini equivalent")
