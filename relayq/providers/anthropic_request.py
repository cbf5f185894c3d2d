"""The body of an Anthropic Messages API call, built from the canonical chat request.

Pure translation, no I/O. :func:`messages_body` turns an OpenAI-shaped
:class:`~relayq.schemas.chat.ChatCompletionRequest` into the JSON body of
``POST /v1/messages``:

- system and developer messages are joined (blank line between) into the
  top-level ``system`` string, wherever they stand in the conversation;
- user content parts become ``text``, ``image`` (``base64`` source from a
  ``data:`` URL, ``url`` source otherwise) and ``document`` blocks (a PDF
  ``file`` part sent as ``file_data``);
- an assistant message's ``tool_calls`` become ``tool_use`` blocks, each tool
  message a ``tool_result`` block in a user turn;
- consecutive turns of the same role are merged into one, since Anthropic
  requires user and assistant turns to alternate (tool results followed by a
  user message become one user turn, tool results first as Anthropic asks);
- a turn that is a single text block is sent as a plain string.

A request that cannot be carried faithfully (``n`` > 1, an audio part, an
OpenAI file id, a non-function tool) raises
:class:`~relayq.providers.errors.InvalidRequest` before anything is sent.
"""

from __future__ import annotations

import json
import re
from typing import Any

from relayq.providers.errors import InvalidRequest
from relayq.schemas.chat import ChatCompletionRequest, ChatMessage, Role, ToolCall

__all__ = ["FORWARDED_EXTRAS", "conversation", "messages_body"]

FORWARDED_EXTRAS = ("top_k",)
"""Extra (non-OpenAI) body fields passed to Anthropic as they are."""

_DATA_URL = re.compile(r"data:(?P<media_type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}

Block = dict[str, Any]


def messages_body(
    request: ChatCompletionRequest, *, model: str, default_max_tokens: int, stream: bool
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/messages`` for ``request`` served by ``model``."""
    if request.n is not None and request.n > 1:
        raise InvalidRequest("Anthropic's Messages API answers one choice only (n must be 1)")
    system, turns = conversation(request.messages)
    max_tokens = request.max_completion_tokens or request.max_tokens or default_max_tokens
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": turns}
    if system:
        body["system"] = system
    if request.stop:
        body["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if request.tools:
        body["tools"] = [_tool(tool) for tool in request.tools]
        choice = _tool_choice(request.tool_choice, parallel=request.parallel_tool_calls)
        if choice is not None:
            body["tool_choice"] = choice
    output_format = _output_format(request.response_format)
    if output_format is not None:
        body["output_config"] = {"format": output_format}
    extras = request.model_extra or {}
    body.update({name: extras[name] for name in FORWARDED_EXTRAS if name in extras})
    if stream:
        body["stream"] = True
    return body


def conversation(messages: list[ChatMessage]) -> tuple[str | None, list[dict[str, Any]]]:
    """The ``system`` string and the alternating user/assistant turns of ``messages``."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role in (Role.SYSTEM, Role.DEVELOPER):
            if text := message.text():
                system.append(text)
            continue
        role, blocks = _turn(message)
        if not blocks:
            continue  # Anthropic rejects empty turns; dropping one keeps the rest valid
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        blocks = turn["content"]
        if len(blocks) == 1 and blocks[0]["type"] == "text":
            turn["content"] = blocks[0]["text"]
    return "\n\n".join(system) or None, turns


def _turn(message: ChatMessage) -> tuple[str, list[Block]]:
    if message.role is Role.TOOL:
        return "user", [_tool_result(message)]
    if message.role is Role.ASSISTANT:
        blocks = _content_blocks(message.content, assistant=True)
        return "assistant", blocks + [_tool_use(call) for call in message.tool_calls or []]
    return "user", _content_blocks(message.content, assistant=False)


def _content_blocks(content: str | list[dict[str, Any]] | None, *, assistant: bool) -> list[Block]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[Block] = []
    for part in content:
        block = _part(part, assistant=assistant)
        if block is not None:
            blocks.append(block)
    return blocks


def _part(part: dict[str, Any], *, assistant: bool) -> Block | None:
    """One OpenAI content part as an Anthropic block; None for an empty text."""
    kind = part.get("type")
    if kind == "text" or (assistant and kind == "refusal"):
        text = str(part.get(kind) or "")
        return {"type": "text", "text": text} if text else None
    if kind == "image_url" and not assistant:
        image = part.get("image_url") or {}
        return _image(str(image.get("url", "")) if isinstance(image, dict) else str(image))
    if kind == "file" and not assistant:
        return _document(part.get("file") or {})
    where = "assistant" if assistant else "user"
    raise InvalidRequest(f"{where} content part {kind!r} has no Anthropic equivalent")


def _image(url: str) -> Block:
    match = _DATA_URL.fullmatch(url)
    if match is not None:
        source = {"type": "base64", "media_type": match["media_type"], "data": match["data"]}
        return {"type": "image", "source": source}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest("image_url must be an http(s) URL or a base64 data: URL")


def _document(file: dict[str, Any]) -> Block:
    match = _DATA_URL.fullmatch(str(file.get("file_data", "")))
    if match is None or match["media_type"] != "application/pdf":
        raise InvalidRequest("file parts are carried only as file_data PDF data: URLs")
    source = {"type": "base64", "media_type": "application/pdf", "data": match["data"]}
    block: Block = {"type": "document", "source": source}
    if file.get("filename"):
        block["title"] = file["filename"]
    return block


def _tool_use(call: ToolCall) -> Block:
    try:
        arguments = json.loads(call.function.arguments or "{}")
    except ValueError as exc:
        raise InvalidRequest(f"tool call {call.id!r}: arguments are not JSON: {exc}") from exc
    if not isinstance(arguments, dict):
        raise InvalidRequest(f"tool call {call.id!r}: arguments must be a JSON object")
    return {"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments}


def _tool_result(message: ChatMessage) -> Block:
    if not message.tool_call_id:
        raise InvalidRequest("a tool message needs the tool_call_id it answers")
    block: Block = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    if isinstance(message.content, str):
        if message.content:
            block["content"] = message.content
    elif message.content:
        block["content"] = _content_blocks(message.content, assistant=False)
    return block


def _tool(tool: dict[str, Any]) -> Block:
    function = tool.get("function")
    if tool.get("type") != "function" or not isinstance(function, dict):
        raise InvalidRequest(f"tool type {tool.get('type')!r} has no Anthropic equivalent")
    mapped: Block = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or _EMPTY_SCHEMA,
    }
    if function.get("description"):
        mapped["description"] = function["description"]
    if function.get("strict") is True:
        mapped["strict"] = True
    return mapped


def _tool_choice(choice: str | dict[str, Any] | None, *, parallel: bool | None) -> Block | None:
    """OpenAI's ``tool_choice`` and ``parallel_tool_calls`` as Anthropic's ``tool_choice``."""
    mapped: Block
    if choice is None:
        if parallel is not False:
            return None
        mapped = {"type": "auto"}
    elif choice in ("auto", "required", "none"):
        mapped = {"type": {"auto": "auto", "required": "any", "none": "none"}[str(choice)]}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        mapped = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise InvalidRequest(f"tool_choice {choice!r} has no Anthropic equivalent")
    if parallel is False and mapped["type"] != "none":
        mapped["disable_parallel_tool_use"] = True
    return mapped


def _output_format(response_format: dict[str, Any] | None) -> Block | None:
    """A ``json_schema`` response format as Anthropic's structured output format.

    ``text`` needs nothing; ``json_object`` (JSON without a schema) has no
    Anthropic equivalent and is not carried.
    """
    if not response_format or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise InvalidRequest("response_format json_schema needs a schema to carry to Anthropic")
    return {"type": "json_schema", "schema": schema}
