"""OpenAI Responses to the canonical chat request, and a ``chat.completion`` back.

Pure translation, no I/O. :func:`chat_body` takes a :class:`ResponsesRequest`
to the JSON body of a ``POST /v1/chat/completions``:

- ``instructions`` becomes the first message, ``system``; ``input`` as a
  string is one user message;
- a ``message`` item keeps its role (``developer`` and ``system`` too); its
  ``input_text`` parts become text parts (a message of one text part: a
  string), ``input_image`` an ``image_url`` part (``detail`` kept),
  ``input_file`` given inline (``file_data``) a ``file`` part; an assistant
  message's ``output_text`` and ``refusal`` parts become its text;
- ``function_call`` items become the ``tool_calls`` of an assistant message
  (joined to the assistant message just before, if any), each
  ``function_call_output`` a ``tool`` message; ``reasoning`` items are dropped;
- ``tools`` of type ``function`` become chat's nested function tools;
  ``tool_choice`` ``auto``/``none``/``required`` as they are,
  ``{"type": "function", "name"}`` the named function;
- ``max_output_tokens`` → ``max_completion_tokens``; ``text.format``
  ``json_schema``/``json_object`` → ``response_format``; ``metadata`` → the
  job's metadata; ``temperature``, ``top_p``, ``parallel_tool_calls`` and
  ``user`` as they are. Other fields (job options such as ``priority``, an
  adapter's controls) pass along, except :data:`NOT_CARRIED`.

What would need state relayq does not keep (``store: true``,
``previous_response_id``, ``conversation``, ``background``, ``prompt``) or a
tool no route runs (OpenAI's hosted tools) raises :class:`Untranslatable`
naming its place, as does content that cannot be carried (an image by
``file_id``, a file by URL).

:func:`response_from_completion` turns a ``chat.completion`` into a
``response``: ``resp_`` ids, a ``message`` item with ``output_text``, a
``function_call`` item per tool call, ``status`` ``incomplete`` when the
answer was cut (:func:`incomplete_reason`) and OpenAI's Responses usage.
"""

from __future__ import annotations

import time
from typing import Any

from relayq.schemas.anthropic_translation import Untranslatable
from relayq.schemas.responses import (
    NOT_CARRIED,
    InputItem,
    ResponsesContentPart,
    ResponsesFunctionCall,
    ResponsesFunctionCallOutput,
    ResponsesInputFile,
    ResponsesInputImage,
    ResponsesInputText,
    ResponsesMessage,
    ResponsesOutputText,
    ResponsesRefusal,
    ResponsesRequest,
    ResponsesTool,
    ResponsesToolChoice,
)

__all__ = [
    "INCOMPLETE_REASONS",
    "chat_body",
    "echoed_fields",
    "function_call_item",
    "incomplete_reason",
    "item_ids",
    "refuse_state",
    "response_from_completion",
    "response_id",
    "usage_of",
]

INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}
"""The ``incomplete_details.reason`` of a chat finish reason that cut the answer short."""

_REFUSED = {
    "store": "relayq is stateless: it keeps no responses, so 'store' must be false or absent",
    "previous_response_id": (
        "relayq is stateless: it keeps no responses to continue from; send the whole "
        "conversation in 'input'"
    ),
    "conversation": (
        "relayq is stateless: it keeps no conversations; send the whole conversation in 'input'"
    ),
    "background": "relayq is stateless: background responses are not served",
    "prompt": "prompt templates are kept by OpenAI, not relayq; send the text in 'input'",
}

Part = dict[str, Any]


def chat_body(request: ResponsesRequest) -> dict[str, Any]:
    """The canonical (OpenAI chat completions) body for ``request``, extras included."""
    refuse_state(request)
    messages: list[Part] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    if isinstance(request.input, str):
        messages.append({"role": "user", "content": request.input})
    else:
        for index, item in enumerate(request.input):
            _add_item(messages, item, where=f"input[{index}]")
    if not messages:
        raise Untranslatable("the input has no message relayq can send", param="input")
    extras = request.model_extra or {}
    body: dict[str, Any] = {
        **{name: value for name, value in extras.items() if name not in NOT_CARRIED},
        "model": request.model,
        "messages": messages,
    }
    optional = {
        "max_completion_tokens": request.max_output_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "parallel_tool_calls": request.parallel_tool_calls,
        "user": request.user,
        "metadata": request.metadata or None,
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    if request.tools:
        body["tools"] = [_tool(tool, where=f"tools[{i}]") for i, tool in enumerate(request.tools)]
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice(request.tool_choice)
    text_format = request.text.format if request.text else None
    if text_format is not None and text_format.get("type") != "text":
        body["response_format"] = _response_format(text_format)
    if request.stream:
        body["stream"] = True
    return body


def refuse_state(request: ResponsesRequest) -> None:
    """Raise :class:`Untranslatable` for what needs state relayq does not keep (``store:
    true``, ``previous_response_id``, ``conversation``, ``background``, ``prompt``): no
    route serves it, natively or not."""
    values = {
        "store": request.store,
        "previous_response_id": request.previous_response_id,
        "conversation": request.conversation,
        "background": request.background,
        "prompt": request.prompt,
    }
    for name, value in values.items():
        if value:
            raise Untranslatable(_REFUSED[name], param=name)


def _add_item(messages: list[Part], item: InputItem, *, where: str) -> None:
    if isinstance(item, ResponsesMessage):
        messages.append(_message(item, where=where))
    elif isinstance(item, ResponsesFunctionCall):
        call = {
            "id": item.call_id,
            "type": "function",
            "function": {"name": item.name, "arguments": item.arguments},
        }
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif isinstance(item, ResponsesFunctionCallOutput):
        messages.append(
            {"role": "tool", "tool_call_id": item.call_id, "content": _tool_output(item, where)}
        )
    # A reasoning item is an earlier answer's reasoning: not carried.


def _message(item: ResponsesMessage, *, where: str) -> Part:
    if isinstance(item.content, str):
        return {"role": item.role, "content": item.content}
    if item.role == "assistant":
        texts: list[str] = []
        for index, part in enumerate(item.content):
            if isinstance(part, ResponsesOutputText | ResponsesInputText):
                texts.append(part.text)
            elif isinstance(part, ResponsesRefusal):
                texts.append(part.refusal)
            else:
                raise Untranslatable(
                    f"an assistant message carries text, not {part.type}",
                    param=f"{where}.content[{index}]",
                )
        return {"role": "assistant", "content": "".join(texts)}
    parts = [
        _input_part(part, where=f"{where}.content[{index}]")
        for index, part in enumerate(item.content)
    ]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return {"role": item.role, "content": parts[0]["text"]}
    return {"role": item.role, "content": parts}


def _input_part(part: ResponsesContentPart, *, where: str) -> Part:
    if isinstance(part, ResponsesInputText | ResponsesOutputText):
        return {"type": "text", "text": part.text}
    if isinstance(part, ResponsesInputImage):
        if not part.image_url:
            raise Untranslatable(
                "an image is carried by its image_url (a URL or a data: URL), not by file_id",
                param=where,
            )
        image: Part = {"url": part.image_url}
        if part.detail in ("auto", "low", "high"):
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image}
    if isinstance(part, ResponsesInputFile):
        if not part.file_data:
            raise Untranslatable(
                "a file is carried inline (file_data), not by file_id or file_url", param=where
            )
        file: Part = {"file_data": part.file_data}
        if part.filename:
            file["filename"] = part.filename
        return {"type": "file", "file": file}
    raise Untranslatable("a refusal belongs in an assistant message", param=where)


def _tool_output(item: ResponsesFunctionCallOutput, where: str) -> str:
    if isinstance(item.output, str):
        return item.output
    texts: list[str] = []
    for index, part in enumerate(item.output):
        if not isinstance(part, ResponsesInputText | ResponsesOutputText):
            raise Untranslatable(
                "a function call's output is carried as text only (a chat tool message)",
                param=f"{where}.output[{index}]",
            )
        texts.append(part.text)
    return "".join(texts)


def _tool(tool: ResponsesTool, *, where: str) -> Part:
    if tool.type != "function":
        raise Untranslatable(
            f"relayq carries function tools only; '{tool.type}' is run by OpenAI itself",
            param=f"{where}.type",
        )
    if not tool.name:
        raise Untranslatable("a function tool has a name", param=f"{where}.name")
    function: Part = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    if tool.parameters is not None:
        function["parameters"] = tool.parameters
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _tool_choice(choice: str | ResponsesToolChoice) -> str | Part:
    if isinstance(choice, str):
        return choice
    if choice.type != "function" or not choice.name:
        raise Untranslatable(
            "tool_choice is auto, none, required or a function by name", param="tool_choice"
        )
    return {"type": "function", "function": {"name": choice.name}}


def _response_format(text_format: dict[str, Any]) -> dict[str, Any]:
    kind = text_format.get("type")
    if kind == "json_object":
        return {"type": "json_object"}
    schema = text_format.get("schema")
    if kind != "json_schema" or not isinstance(schema, dict):
        raise Untranslatable(
            "text.format is text, json_object, or json_schema with its schema",
            param="text.format",
        )
    json_schema: dict[str, Any] = {"name": str(text_format.get("name") or "output")}
    json_schema["schema"] = schema
    for name in ("description", "strict"):
        if text_format.get(name) is not None:
            json_schema[name] = text_format[name]
    return {"type": "json_schema", "json_schema": json_schema}


def echoed_fields(request: ResponsesRequest) -> dict[str, Any]:
    """The request's settings a ``response`` repeats, as OpenAI's do."""
    text_format = request.text.format if request.text and request.text.format else None
    choice = request.tool_choice
    return {
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "metadata": request.metadata or {},
        "parallel_tool_calls": (
            True if request.parallel_tool_calls is None else request.parallel_tool_calls
        ),
        "temperature": request.temperature,
        "top_p": request.top_p,
        "tool_choice": (
            choice.model_dump(exclude_none=True)
            if isinstance(choice, ResponsesToolChoice)
            else choice or "auto"
        ),
        "tools": [tool.model_dump(exclude_none=True) for tool in request.tools or []],
        "text": {"format": text_format or {"type": "text"}},
        "user": request.user,
        "store": False,
        "background": False,
        "previous_response_id": None,
        "truncation": "disabled",
    }


def response_id(job_id: str) -> str:
    """The ``resp_`` id of the response a job answers with: the job's own id, retyped."""
    return "resp_" + job_id.partition("_")[2]


def item_ids(job_id: str) -> tuple[str, str]:
    """The id of a response's message item, and the prefix of its function call items'."""
    suffix = job_id.partition("_")[2]
    return "msg_" + suffix, "fc_" + suffix


def incomplete_reason(finish_reason: str | None) -> str | None:
    """Why the answer is incomplete, or None when it is whole."""
    return INCOMPLETE_REASONS.get(finish_reason or "")


def usage_of(usage: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI's chat usage as the Responses API counts it."""
    usage = usage or {}
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    input_tokens = int(usage.get("prompt_tokens") or 0)
    output_tokens = int(usage.get("completion_tokens") or 0)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "cached_tokens": int(prompt_details.get("cached_tokens") or 0),
            "cache_write_tokens": int(prompt_details.get("cache_creation_tokens") or 0),
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {
            "reasoning_tokens": int(completion_details.get("reasoning_tokens") or 0)
        },
        "total_tokens": int(usage.get("total_tokens") or input_tokens + output_tokens),
    }


def function_call_item(call: dict[str, Any], *, item_id: str, status: str) -> dict[str, Any]:
    """A ``function_call`` output item for a chat tool call."""
    function = call.get("function") or {}
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call.get("id") or "",
        "name": function.get("name") or "",
        "arguments": str(function.get("arguments") or ""),
    }


def response_from_completion(
    completion: dict[str, Any], *, job_id: str, echo: dict[str, Any]
) -> dict[str, Any]:
    """The ``response`` answering with ``completion``'s first choice; ``echo``:
    :func:`echoed_fields` of its request."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    reason = incomplete_reason(choice.get("finish_reason"))
    status = "incomplete" if reason else "completed"
    message_id, call_prefix = item_ids(job_id)
    output: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        content.append(
            {"type": "output_text", "text": message["content"], "annotations": [], "logprobs": []}
        )
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        content.append({"type": "refusal", "refusal": message["refusal"]})
    if content:
        output.append(
            {
                "id": message_id,
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": content,
            }
        )
    for index, call in enumerate(message.get("tool_calls") or []):
        output.append(function_call_item(call, item_id=f"{call_prefix}_{index}", status=status))
    created = completion.get("created")
    return {
        "id": response_id(job_id),
        "object": "response",
        "created_at": created if isinstance(created, int | float) else int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": {"reason": reason} if reason else None,
        "model": completion.get("model"),
        "output": output,
        "usage": usage_of(completion.get("usage")),
        **echo,
    }
