"""OpenAI's Responses API as the wire-level fakes answer it (``POST /v1/responses``).

Shaped as OpenAI's API reference documents it ("Create a model response",
https://platform.openai.com/docs/api-reference/responses/create, and
"Responses streaming events",
https://platform.openai.com/docs/api-reference/responses-streaming; the
documented example is kept in ``tests/fixtures/openai/responses_text.json``):
a ``response`` object whose ``output`` holds, when the request asks for
``reasoning``, a ``reasoning`` item first (its summary; its
``encrypted_content`` when ``include`` names ``reasoning.encrypted_content``),
then a ``function_call`` item per scripted tool call (when the request carries
``tools``) or a ``message`` with one ``output_text`` part; ``usage`` in input
and output tokens (words), reasoning tokens counted apart; the request's
settings echoed. Streamed: ``event:``-named SSE events, each with its
``sequence_number``: ``response.created``, ``response.in_progress``, each item
added, its text a word per ``response.output_text.delta`` (a function call's
arguments in ``response.function_call_arguments.delta`` pieces), each item
done, then ``response.completed``; no ``[DONE]``.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["REASONING_SUMMARY", "response_body", "response_events"]

REASONING_SUMMARY = "The user greets me; a short greeting back will do."
ENCRYPTED = "gAAAAABfakeEncryptedReasoning=="
_REASONING_TOKENS = 16


def _input_tokens(body: dict[str, Any]) -> int:
    given = body.get("input")
    text = given if isinstance(given, str) else str(given or "")
    return len(text.split()) + len(str(body.get("instructions") or "").split())


def _items(
    body: dict[str, Any], content: str, tool_calls: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if body.get("reasoning"):
        reasoning: dict[str, Any] = {
            "id": "rs_fake0001",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": REASONING_SUMMARY}],
        }
        if "reasoning.encrypted_content" in (body.get("include") or []):
            reasoning["encrypted_content"] = ENCRYPTED
        items.append(reasoning)
    if tool_calls and body.get("tools"):
        for index, call in enumerate(tool_calls):
            function = call["function"]
            items.append(
                {
                    "id": f"fc_fake000{index}",
                    "type": "function_call",
                    "status": "completed",
                    "call_id": call["id"],
                    "name": function["name"],
                    "arguments": function["arguments"],
                }
            )
        return items
    part = {"type": "output_text", "text": content, "annotations": [], "logprobs": []}
    items.append(
        {
            "id": "msg_fake0001",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [part],
        }
    )
    return items


def response_body(
    body: dict[str, Any], content: str, tool_calls: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The ``response`` answering ``body`` with ``content`` (or ``tool_calls``)."""
    output = _items(body, content, tool_calls)
    reasoning = _REASONING_TOKENS if body.get("reasoning") else 0
    written = sum(
        len(str(item.get("arguments", ""))) if item["type"] == "function_call" else 0
        for item in output
    ) or len(content.split())
    input_tokens = _input_tokens(body)
    output_tokens = written + reasoning
    return {
        "id": "resp_fake0001",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model"),
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_tokens + output_tokens,
        },
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def response_events(
    body: dict[str, Any], content: str, tool_calls: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The stream of :func:`response_body`'s response, each event's data (its ``type``
    names the SSE event)."""
    whole = response_body(body, content, tool_calls)
    events: list[dict[str, Any]] = []

    def event(kind: str, **data: Any) -> None:
        events.append({"type": kind, "sequence_number": len(events), **data})

    started = {**whole, "status": "in_progress", "output": [], "usage": None}
    event("response.created", response=started)
    event("response.in_progress", response=started)
    for index, item in enumerate(whole["output"]):
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            event(
                "response.output_item.added",
                output_index=index,
                item={**item, "content": [], "status": "in_progress"},
            )
            part = item["content"][0]
            event(
                "response.content_part.added", **where, content_index=0, part={**part, "text": ""}
            )
            for word in _pieces(part["text"]):
                event(
                    "response.output_text.delta", **where, content_index=0, delta=word, logprobs=[]
                )
            event(
                "response.output_text.done",
                **where,
                content_index=0,
                text=part["text"],
                logprobs=[],
            )
            event("response.content_part.done", **where, content_index=0, part=part)
        elif item["type"] == "function_call":
            event(
                "response.output_item.added",
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            )
            arguments = item["arguments"]
            for start in range(0, len(arguments), 8):
                event(
                    "response.function_call_arguments.delta",
                    **where,
                    delta=arguments[start : start + 8],
                )
            event("response.function_call_arguments.done", **where, arguments=arguments)
        else:
            event("response.output_item.added", output_index=index, item=item)
        event("response.output_item.done", output_index=index, item=item)
    event("response.completed", response=whole)
    return events


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [word if i == 0 else f" {word}" for i, word in enumerate(words)]
