"""Anthropic Messages to and from the canonical chat shapes, block by block."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from relayq.schemas.anthropic_messages import MessagesRequest, MessagesResponse
from relayq.schemas.anthropic_stream import MessageStream, error_event
from relayq.schemas.anthropic_translation import (
    Untranslatable,
    chat_body,
    message_from_completion,
    stop_reason,
    usage_of,
)
from relayq.schemas.chat import ChatCompletionRequest
from relayq.schemas.chunk_events import chunks_of


def _request(messages: list[dict[str, Any]], **fields: Any) -> MessagesRequest:
    return MessagesRequest.model_validate(
        {"model": "any-route", "max_tokens": 50, "messages": messages, **fields}
    )


def _user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def _messages(*blocks: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = chat_body(_request([_user(*blocks)]))["messages"]
    return messages


def test_a_plain_request_is_a_canonical_chat_request() -> None:
    body = chat_body(_request([{"role": "user", "content": "Hi"}]))

    assert body == {
        "model": "any-route",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_completion_tokens": 50,
    }
    ChatCompletionRequest.model_validate(body)


def test_system_as_a_string_or_as_blocks() -> None:
    as_string = chat_body(_request([_user({"type": "text", "text": "Hi"})], system="Be brief."))
    as_blocks = chat_body(
        _request(
            [_user({"type": "text", "text": "Hi"})],
            system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        )
    )

    assert as_string["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert as_blocks["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
    }


def test_text_and_image_blocks_become_content_parts() -> None:
    messages = _messages(
        {"type": "text", "text": "Compare"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/b.jpg"}},
    )

    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/b.jpg"}},
            ],
        }
    ]


def test_a_base64_pdf_document_becomes_a_file_part() -> None:
    source = {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}
    messages = _messages({"type": "document", "source": source, "title": "a.pdf"})

    part = {
        "type": "file",
        "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
    }
    assert messages == [{"role": "user", "content": [part]}]


def test_a_url_document_is_not_carried() -> None:
    document = {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}

    with pytest.raises(Untranslatable) as refused:
        _messages({"type": "text", "text": "Read"}, document)

    assert refused.value.param == "messages[0].content[1].source"


def test_tool_use_and_tool_result_blocks_become_a_call_and_a_tool_message() -> None:
    body = chat_body(
        _request(
            [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Use the tool.", "signature": "s"},
                        {"type": "text", "text": "Let me look."},
                        {"type": "tool_use", "id": "tu_1", "name": "weather", "input": {"c": 1}},
                        {"type": "tool_use", "id": "tu_2", "name": "clock", "input": {}},
                    ],
                },
                _user(
                    {"type": "tool_result", "tool_use_id": "tu_1", "content": "Rain"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "tu_2",
                        "content": [{"type": "text", "text": "12:00"}],
                        "is_error": False,
                    },
                    {"type": "text", "text": "So?"},
                ),
            ]
        )
    )

    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "tu_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"c":1}'},
                },
                {
                    "id": "tu_2",
                    "type": "function",
                    "function": {"name": "clock", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "tu_1", "content": "Rain"},
        {"role": "tool", "tool_call_id": "tu_2", "content": "12:00"},
        {"role": "user", "content": "So?"},
    ]
    ChatCompletionRequest.model_validate(body)


def test_an_image_in_a_tool_result_is_not_carried() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/c.png"}}
    with pytest.raises(Untranslatable) as refused:
        _messages({"type": "tool_result", "tool_use_id": "tu_1", "content": [image]})

    assert refused.value.param == "messages[0].content[0].content[0]"


def test_a_tool_use_block_in_a_user_turn_is_refused() -> None:
    with pytest.raises(Untranslatable) as refused:
        _messages({"type": "tool_use", "id": "tu_1", "name": "x", "input": {}})

    assert refused.value.param == "messages[0].content[0]"


def test_an_unknown_block_type_fails_validation() -> None:
    with pytest.raises(ValidationError):
        _request([_user({"type": "hologram", "data": "?"})])


def test_max_tokens_is_required() -> None:
    with pytest.raises(ValidationError) as failed:
        MessagesRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
        )

    assert failed.value.errors()[0]["loc"] == ("max_tokens",)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "weather", "disable_parallel_tool_use": True},
            {
                "tool_choice": {"type": "function", "function": {"name": "weather"}},
                "parallel_tool_calls": False,
            },
        ),
    ],
)
def test_tools_and_tool_choice(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    tool = {"name": "weather", "input_schema": {"type": "object", "properties": {}}}
    body = chat_body(
        _request([{"role": "user", "content": "Hi"}], tools=[tool], tool_choice=choice)
    )

    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    assert {k: body[k] for k in expected} == expected


def test_a_tool_choice_of_a_tool_without_its_name_is_refused() -> None:
    tool = {"name": "weather", "input_schema": {"type": "object"}}
    request = _request(
        [{"role": "user", "content": "Hi"}], tools=[tool], tool_choice={"type": "tool"}
    )

    with pytest.raises(Untranslatable) as refused:
        chat_body(request)

    assert refused.value.param == "tool_choice"


def test_sampling_stops_user_and_extras() -> None:
    body = chat_body(
        _request(
            [{"role": "user", "content": "Hi"}],
            temperature=0.3,
            top_p=0.8,
            top_k=40,
            stop_sequences=["###"],
            metadata={"user_id": "u-1"},
            thinking={"type": "enabled", "budget_tokens": 1024},
            service_tier="auto",
            container="c-1",
            output_config={
                "effort": "low",
                "format": {"type": "json_schema", "schema": {"type": "object"}},
            },
            priority=2,
            mock={"tokens": 3},
            stream=True,
        )
    )

    assert body == {
        "model": "any-route",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_completion_tokens": 50,
        "temperature": 0.3,
        "top_p": 0.8,
        "top_k": 40,
        "stop": ["###"],
        "user": "u-1",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": {"type": "object"}},
        },
        "priority": 2,
        "mock": {"tokens": 3},
        "stream": True,
    }


def _completion(message: dict[str, Any], finish: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "upstream-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


def test_a_completion_with_text_and_tool_calls_is_a_message() -> None:
    completion = _completion(
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"a":1}'}},
                {"id": "c2", "type": "function", "function": {"name": "v", "arguments": "oops"}},
            ],
        },
        "tool_calls",
        {
            "prompt_tokens": 100,
            "completion_tokens": 7,
            "total_tokens": 107,
            "prompt_tokens_details": {"cached_tokens": 60, "cache_creation_tokens": 10},
        },
    )

    message = message_from_completion(completion, job_id="job_01ABC")

    assert message == {
        "id": "msg_01ABC",
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "c1", "name": "w", "input": {"a": 1}},
            {"type": "tool_use", "id": "c2", "name": "v", "input": {"arguments": "oops"}},
        ],
        "model": "upstream-model",
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 30,
            "output_tokens": 7,
            "cache_creation_input_tokens": 10,
            "cache_read_input_tokens": 60,
        },
    }
    MessagesResponse.model_validate(message)


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        ("something_new", "end_turn"),
        (None, None),
    ],
)
def test_stop_reasons(finish: str | None, expected: str | None) -> None:
    assert stop_reason(finish) == expected


def test_usage_without_details_counts_no_cache() -> None:
    assert usage_of({"prompt_tokens": 5, "completion_tokens": 2}) == {
        "input_tokens": 5,
        "output_tokens": 2,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c",
        "model": "upstream-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def test_a_text_stream_as_anthropic_events() -> None:
    stream = MessageStream(message_id="msg_1", model="route")
    events = []
    for chunk in [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hel"}),
        _chunk({"content": "lo"}),
        _chunk({}, "stop"),
        {
            "id": "c",
            "model": "upstream-model",
            "choices": [],
            "usage": {"prompt_tokens": 4, "completion_tokens": 2},
        },
    ]:
        events.extend(stream.feed(chunk))
    events.extend(stream.finish())

    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert (start["id"], start["model"], start["content"]) == ("msg_1", "upstream-model", [])
    assert events[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert [data["delta"] for name, data in events if name == "content_block_delta"] == [
        {"type": "text_delta", "text": "Hel"},
        {"type": "text_delta", "text": "lo"},
    ]
    assert events[6][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "input_tokens": 4,
            "output_tokens": 2,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def test_a_tool_call_stream_as_input_json_deltas_after_text() -> None:
    stream = MessageStream(message_id="msg_2", model="route")
    events = []
    for chunk in [
        _chunk({"content": "Let me check."}),
        _chunk(
            {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "w", "arguments": ""}}]}
        ),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
        _chunk(
            {"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "v", "arguments": "{}"}}]}
        ),
        _chunk({}, "tool_calls"),
    ]:
        events.extend(stream.feed(chunk))
    events.extend(stream.finish())

    blocks = [data for name, data in events if name == "content_block_start"]
    assert [block["index"] for block in blocks] == [0, 1, 2]
    assert blocks[1]["content_block"] == {"type": "tool_use", "id": "c1", "name": "w", "input": {}}
    deltas = [
        (data["index"], data["delta"]) for name, data in events if name == "content_block_delta"
    ]
    assert deltas[1:] == [
        (1, {"type": "input_json_delta", "partial_json": '{"city":'}),
        (1, {"type": "input_json_delta", "partial_json": '"Oslo"}'}),
        (2, {"type": "input_json_delta", "partial_json": "{}"}),
    ]
    stops = [data["index"] for name, data in events if name == "content_block_stop"]
    assert stops == [0, 1, 2]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_an_empty_stream_still_starts_and_ends_its_message() -> None:
    events = MessageStream(message_id="msg_3", model="route").finish()

    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "message_delta",
        "message_stop",
    ]
    assert events[0][1]["message"]["model"] == "route"


def test_chunks_are_read_back_from_data_lines() -> None:
    sse = b'data: {"id":"a","choices":[]}\n\ndata: {"id":"b","choices":[]}\n\ndata: [DONE]\n\n'

    assert [chunk["id"] for chunk in chunks_of(sse)] == ["a", "b"]


def test_an_error_event_is_anthropics_error_object() -> None:
    assert error_event("api_error", "It broke.") == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "It broke."}},
    )
