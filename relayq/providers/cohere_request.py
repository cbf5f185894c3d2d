"""The body of a Cohere Chat API v2 call, built from the canonical chat request.

Pure translation, no I/O. :func:`chat_body` turns an OpenAI-shaped
:class:`~relayq.schemas.chat.ChatCompletionRequest` into the JSON body of
``POST /v2/chat``, whose shape is close to OpenAI's:

- system and developer messages become ``system`` messages where they stand;
- user content parts are carried as Cohere's ``text`` and ``image_url``
  content blocks (a ``data:`` URL or a web URL, with its ``detail``);
- an assistant message with ``tool_calls`` keeps them as they are, its text
  becoming the ``tool_plan`` (Cohere's reasoning before tool calls, which the
  adapter hands back as the message content, so a conversation round-trips);
  without tool calls its text is the ``content``;
- a tool message becomes a ``tool`` message with its ``tool_call_id``;
- ``temperature``, ``top_p`` (``p``), ``max_completion_tokens`` or
  ``max_tokens``, ``stop`` (``stop_sequences``), ``seed`` and the two
  penalties are carried as Cohere names them; ``response_format`` becomes
  ``{"type": "json_object"}`` with the ``json_schema`` when there is one;
- ``tool_choice`` ``required`` and ``none`` become ``REQUIRED`` and ``NONE``;
  ``auto`` is Cohere's default and sends nothing; a named function becomes
  ``REQUIRED`` with only that tool offered, Cohere's way of forcing it.

Cohere's own parameters (``k``, ``safety_mode``, ``documents``,
``citation_options``, ``strict_tools``, ``thinking``, ``priority``) pass
through when the request carries them as extra fields.

Not carried, and why: ``n`` > 1 raises
:class:`~relayq.providers.errors.InvalidRequest` (Cohere answers one
message); ``user``, ``logit_bias`` and ``parallel_tool_calls`` have no
Cohere equivalent; ``logprobs`` is not requested, because Cohere's token
log-probabilities are not translated back; audio and file parts raise
:class:`~relayq.providers.errors.InvalidRequest`. Values are not clamped to
Cohere's narrower ranges (``temperature`` up to 1, ``p`` up to 0.99): Cohere
answers an out-of-range value with a 400 that names it.
"""

from __future__ import annotations

from typing import Any

from relayq.providers.errors import InvalidRequest
from relayq.schemas.chat import ChatCompletionRequest, ChatMessage, Role

__all__ = ["FORWARDED_EXTRAS", "chat_body", "chat_messages"]

FORWARDED_EXTRAS = (
    "k",
    "safety_mode",
    "documents",
    "citation_options",
    "strict_tools",
    "thinking",
    "priority",
)
"""Extra (non-OpenAI) body fields passed to Cohere as they are."""

_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}

Message = dict[str, Any]


def chat_body(
    request: ChatCompletionRequest,
    *,
    model: str,
    stream: bool,
    defaults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /v2/chat`` for ``request`` served by ``model``.

    ``defaults`` (the provider's configured Cohere parameters) are overridden
    by what the request itself sets.
    """
    if request.n is not None and request.n > 1:
        raise InvalidRequest("Cohere's Chat API answers one message only (n must be 1)")
    body: dict[str, Any] = {"model": model, "messages": chat_messages(request.messages)}
    simple = {
        "temperature": request.temperature,
        "p": request.top_p,
        "max_tokens": request.max_completion_tokens or request.max_tokens,
        "seed": request.seed,
        "frequency_penalty": request.frequency_penalty,
        "presence_penalty": request.presence_penalty,
    }
    body.update({key: value for key, value in simple.items() if value is not None})
    if request.stop:
        body["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if request.tools:
        tools = [_tool(tool) for tool in request.tools]
        body.update(_tool_choice(request.tool_choice, tools))
    response_format = _response_format(request.response_format)
    if response_format is not None:
        body["response_format"] = response_format
    extras = {**(defaults or {}), **(request.model_extra or {})}
    body.update({name: extras[name] for name in FORWARDED_EXTRAS if name in extras})
    if stream:
        body["stream"] = True
    return body


def chat_messages(messages: list[ChatMessage]) -> list[Message]:
    """``messages`` as Cohere v2 chat messages, in order."""
    translated: list[Message] = []
    for message in messages:
        if message.role in (Role.SYSTEM, Role.DEVELOPER):
            translated.append({"role": "system", "content": message.text()})
        elif message.role is Role.USER:
            translated.append({"role": "user", "content": _user_content(message.content)})
        elif message.role is Role.TOOL:
            if not message.tool_call_id:
                raise InvalidRequest("a tool message needs the tool_call_id it answers")
            translated.append(
                {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text()}
            )
        elif assistant := _assistant(message):
            translated.append(assistant)
    return translated


def _user_content(content: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return content or ""
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text") or "")})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            image = image if isinstance(image, dict) else {"url": str(image)}
            url: dict[str, Any] = {"url": str(image.get("url", ""))}
            if image.get("detail"):
                url["detail"] = image["detail"]
            blocks.append({"type": "image_url", "image_url": url})
        else:
            raise InvalidRequest(f"user content part {kind!r} has no Cohere equivalent")
    return blocks


def _assistant(message: ChatMessage) -> Message | None:
    """The assistant message; None for one with neither text nor tool calls."""
    text = message.text()
    if not message.tool_calls:
        return {"role": "assistant", "content": text} if text else None
    calls = [call.model_dump(mode="json") for call in message.tool_calls]
    assistant: Message = {"role": "assistant", "tool_calls": calls}
    if text:
        assistant["tool_plan"] = text
    return assistant


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function")
    if tool.get("type") != "function" or not isinstance(function, dict):
        raise InvalidRequest(f"tool type {tool.get('type')!r} has no Cohere equivalent")
    mapped: dict[str, Any] = {
        "name": function.get("name"),
        "parameters": function.get("parameters") or _EMPTY_SCHEMA,
    }
    if function.get("description"):
        mapped["description"] = function["description"]
    return {"type": "function", "function": mapped}


def _tool_choice(choice: str | dict[str, Any] | None, tools: list[dict[str, Any]]) -> Message:
    """``tools`` and ``tool_choice`` for OpenAI's ``tool_choice``."""
    if choice is None or choice == "auto":
        return {"tools": tools}
    if choice in ("required", "none"):
        return {"tools": tools, "tool_choice": str(choice).upper()}
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    chosen = [tool for tool in tools if tool["function"]["name"] == name]
    if not chosen:
        raise InvalidRequest(f"tool_choice {choice!r} names no tool of the request")
    return {"tools": chosen, "tool_choice": "REQUIRED"}


def _response_format(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    kind = (response_format or {}).get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = (response_format or {}).get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format json_schema needs a schema to carry to Cohere")
        return {"type": "json_object", "json_schema": schema}
    raise InvalidRequest(f"response_format {kind!r} has no Cohere equivalent")
