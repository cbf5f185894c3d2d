"""Anthropic Messages to the canonical chat request, and a ``chat.completion`` back.

Pure translation, no I/O, the reverse of the Anthropic adapter's
(:mod:`relayq.providers.anthropic_request`): that one speaks Anthropic to an
upstream, this one hears it from a caller.

:func:`chat_body` takes a :class:`MessagesRequest` to the JSON body of a
``POST /v1/chat/completions``:

- ``system`` (a string or text blocks) becomes the first message, ``system``;
- a user turn's ``text``, ``image`` (base64 as a ``data:`` URL, or a URL) and
  ``document`` (a base64 PDF, as a ``file`` part) blocks become its content
  parts; its ``tool_result`` blocks become ``tool`` messages, placed before it
  (they answer the assistant turn just before);
- an assistant turn's text becomes its content, its ``tool_use`` blocks its
  ``tool_calls`` (``arguments``: the JSON of ``input``); thinking blocks are
  dropped;
- ``tools`` become function tools (``input_schema`` → ``parameters``);
  ``tool_choice`` ``auto``/``any``/``tool``/``none`` → ``auto``/``required``/
  the named function/``none``, ``disable_parallel_tool_use`` →
  ``parallel_tool_calls: false``;
- ``max_tokens`` → ``max_completion_tokens``, ``stop_sequences`` → ``stop``,
  ``metadata.user_id`` → ``user``; ``temperature`` and ``top_p`` as they are;
  ``top_k`` rides as an extra field (the Anthropic and Gemini adapters and
  servers that know it use it; OpenAI refuses it); ``output_config.format``
  (a JSON schema) → ``response_format``; ``thinking``, ``output_config.effort``,
  ``service_tier`` and the rest of :data:`NOT_CARRIED` are not carried. Other
  fields (job options such as ``priority``, an adapter's controls) pass along
  as they are.

What cannot be carried (a URL document, an image in a tool result, a block
in the wrong turn) raises :class:`Untranslatable` naming its place.

:func:`message_from_completion` turns a ``chat.completion`` into a ``message``:
``msg_`` ids, ``text`` and ``tool_use`` blocks, ``stop_reason`` from the finish
reason (:data:`STOP_REASONS`) and Anthropic's usage counts (cached input
apart).
"""

from __future__ import annotations

import json
from typing import Any

from relayq.schemas.anthropic_messages import (
    NOT_CARRIED,
    ContentBlock,
    DocumentBlock,
    ImageBlock,
    MessageParam,
    MessagesRequest,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolChoiceParam,
    ToolResultBlock,
    ToolUseBlock,
)

__all__ = [
    "STOP_REASONS",
    "Untranslatable",
    "chat_body",
    "message_from_completion",
    "message_id",
    "stop_reason",
    "tool_input",
    "usage_of",
]

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
"""Anthropic's ``stop_reason`` for each OpenAI ``finish_reason``; others read as ``end_turn``.

OpenAI's ``stop`` does not say whether a stop sequence ended the text, so
``stop_sequence`` is never reported."""

Part = dict[str, Any]


class Untranslatable(ValueError):
    """A request relayq cannot carry faithfully; ``param`` says where."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


def chat_body(request: MessagesRequest) -> dict[str, Any]:
    """The canonical (OpenAI chat completions) body for ``request``, extras included."""
    messages: list[Part] = []
    if request.system:
        messages.append({"role": "system", "content": _system(request.system)})
    for index, turn in enumerate(request.messages):
        messages.extend(_turn(turn, where=f"messages[{index}]"))
    extras = request.model_extra or {}
    body: dict[str, Any] = {
        **{name: value for name, value in extras.items() if name not in NOT_CARRIED},
        "model": request.model,
        "messages": messages,
        "max_completion_tokens": request.max_tokens,
    }
    optional = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "stop": request.stop_sequences or None,
        "user": request.metadata.user_id if request.metadata else None,
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "parameters": tool.input_schema,
                    **({"description": tool.description} if tool.description else {}),
                },
            }
            for tool in request.tools
        ]
        if request.tool_choice is not None:
            body.update(_tool_choice(request.tool_choice))
    output_format = request.output_config.format if request.output_config else None
    if output_format is not None:
        body["response_format"] = _response_format(output_format)
    if request.stream:
        body["stream"] = True
    return body


def _response_format(output_format: dict[str, Any]) -> dict[str, Any]:
    schema = output_format.get("schema")
    if output_format.get("type") != "json_schema" or not isinstance(schema, dict):
        raise Untranslatable(
            "output_config.format is carried as a json_schema with its schema only",
            param="output_config.format",
        )
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def _system(system: str | list[TextBlock]) -> str | list[Part]:
    if isinstance(system, str):
        return system
    if len(system) == 1:
        return system[0].text
    return [{"type": "text", "text": block.text} for block in system]


def _turn(turn: MessageParam, *, where: str) -> list[Part]:
    if isinstance(turn.content, str):
        return [{"role": turn.role, "content": turn.content}]
    if turn.role == "assistant":
        return [_assistant(turn.content, where=where)]
    results: list[Part] = []
    parts: list[Part] = []
    for index, block in enumerate(turn.content):
        place = f"{where}.content[{index}]"
        if isinstance(block, ToolResultBlock):
            results.append(_tool_message(block, where=place))
        elif isinstance(block, ThinkingBlock | RedactedThinkingBlock):
            continue
        elif isinstance(block, ToolUseBlock):
            raise Untranslatable("a tool_use block belongs in an assistant turn", param=place)
        else:
            parts.append(_user_part(block, where=place))
    if parts:
        content: str | list[Part] = parts
        if len(parts) == 1 and parts[0]["type"] == "text":
            content = parts[0]["text"]
        results.append({"role": "user", "content": content})
    return results


def _user_part(block: TextBlock | ImageBlock | DocumentBlock, *, where: str) -> Part:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    source = block.source
    if isinstance(block, ImageBlock):
        if source.type == "base64":
            url = f"data:{source.media_type};base64,{source.data}"
        else:
            url = source.url
        return {"type": "image_url", "image_url": {"url": url}}
    if source.type != "base64" or source.media_type != "application/pdf":
        raise Untranslatable(
            "only base64 PDF documents are carried (as an OpenAI file part)",
            param=f"{where}.source",
        )
    file: Part = {"file_data": f"data:application/pdf;base64,{source.data}"}
    if block.title:
        file["filename"] = block.title
    return {"type": "file", "file": file}


def _tool_message(block: ToolResultBlock, *, where: str) -> Part:
    content = block.content
    if isinstance(content, list):
        for index, part in enumerate(content):
            if not isinstance(part, TextBlock):
                raise Untranslatable(
                    "a tool result is carried as text only (an OpenAI tool message)",
                    param=f"{where}.content[{index}]",
                )
        text = "".join(part.text for part in content if isinstance(part, TextBlock))
    else:
        text = content or ""
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": text}


def _assistant(blocks: list[ContentBlock], *, where: str) -> Part:
    texts: list[str] = []
    calls: list[Part] = []
    for index, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            arguments = json.dumps(block.input, separators=(",", ":"))
            function = {"name": block.name, "arguments": arguments}
            calls.append({"id": block.id, "type": "function", "function": function})
        elif not isinstance(block, ThinkingBlock | RedactedThinkingBlock):
            raise Untranslatable(
                f"an assistant turn carries text and tool_use blocks, not {block.type}",
                param=f"{where}.content[{index}]",
            )
    message: Part = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_choice(choice: ToolChoiceParam) -> dict[str, Any]:
    mapped: dict[str, Any] = {}
    if choice.type == "tool":
        if not choice.name:
            raise Untranslatable("tool_choice of type 'tool' names its tool", param="tool_choice")
        mapped["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    else:
        mapped["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    if choice.disable_parallel_tool_use:
        mapped["parallel_tool_calls"] = False
    return mapped


def message_id(job_id: str) -> str:
    """The ``msg_`` id of the message a job answers with: the job's own id, retyped."""
    return "msg_" + job_id.partition("_")[2]


def stop_reason(finish_reason: str | None) -> str | None:
    """Anthropic's stop reason for an OpenAI finish reason (None while unknown)."""
    return None if finish_reason is None else STOP_REASONS.get(finish_reason, "end_turn")


def usage_of(usage: dict[str, Any] | None) -> dict[str, int]:
    """OpenAI's usage as Anthropic counts it: cached input apart from ``input_tokens``."""
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    cache_read = int(details.get("cached_tokens") or 0)
    cache_write = int(details.get("cache_creation_tokens") or 0)
    prompt = int(usage.get("prompt_tokens") or 0)
    return {
        "input_tokens": max(0, prompt - cache_read - cache_write),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
    }


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's ``arguments`` as a ``tool_use`` block's ``input`` (an object)."""
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {"arguments": arguments}  # kept, not lost, when a model wrote no JSON
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}


def message_from_completion(completion: dict[str, Any], *, job_id: str) -> dict[str, Any]:
    """The ``message`` answering with ``completion``'s first choice."""
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[Part] = []
    text = message.get("content") or message.get("refusal")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": tool_input(str(function.get("arguments") or "")),
            }
        )
    return {
        "id": message_id(job_id),
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": completion.get("model"),
        "stop_reason": stop_reason(choice.get("finish_reason")) or "end_turn",
        "stop_sequence": None,
        "usage": usage_of(completion.get("usage")),
    }
