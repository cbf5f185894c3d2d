"""OpenAI Responses to and from the canonical chat shapes, item by item.

The answers and events are checked against the openai SDK's own types
(validated, not constructed), so a misnamed or missing field fails here.
"""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter, ValidationError

from relayq.schemas.anthropic_translation import Untranslatable
from relayq.schemas.chat import ChatCompletionRequest
from relayq.schemas.jobs import JobCreate
from relayq.schemas.responses import ResponseObject, ResponsesRequest
from relayq.schemas.responses_stream import ResponsesEventStream
from relayq.schemas.responses_translation import (
    chat_body,
    echoed_fields,
    incomplete_reason,
    response_from_completion,
    usage_of,
)

_EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
JOB_ID = "job_01ABC"


def _request(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "any-route", **fields})


def test_a_text_input_is_one_user_message() -> None:
    body = chat_body(_request(input="Hi", instructions="Be brief.", max_output_tokens=20))

    assert body == {
        "model": "any-route",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "max_completion_tokens": 20,
    }
    ChatCompletionRequest.model_validate(body)


def test_message_items_keep_their_roles_and_parts() -> None:
    body = chat_body(
        _request(
            input=[
                {"role": "system", "content": "S"},
                {"type": "message", "role": "developer", "content": "D"},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Look:"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                        {
                            "type": "input_file",
                            "file_data": "data:application/pdf;base64,JVBE",
                            "filename": "a.pdf",
                        },
                    ],
                },
                {
                    "type": "message",
                    "id": "msg_1",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Seen.", "annotations": []}],
                },
                {"role": "user", "content": [{"type": "input_text", "text": "Thanks"}]},
            ]
        )
    )

    assert body["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "developer", "content": "D"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {
                    "type": "file",
                    "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
                },
            ],
        },
        {"role": "assistant", "content": "Seen."},
        {"role": "user", "content": "Thanks"},
    ]
    JobCreate.model_validate(body)


def test_function_calls_join_the_assistant_turn_and_outputs_become_tool_messages() -> None:
    body = chat_body(
        _request(
            input=[
                {"role": "user", "content": "Weather in Oslo and Bergen?"},
                {"role": "assistant", "content": "Looking."},
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": '{"c":"O"}'},
                {"type": "function_call", "call_id": "c2", "name": "w", "arguments": '{"c":"B"}'},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call_output", "call_id": "c1", "output": "Sun"},
                {
                    "type": "function_call_output",
                    "call_id": "c2",
                    "output": [{"type": "input_text", "text": "Rain"}],
                },
            ]
        )
    )

    def call(call_id: str, arguments: str) -> dict[str, Any]:
        function = {"name": "w", "arguments": arguments}
        return {"id": call_id, "type": "function", "function": function}

    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [call("c1", '{"c":"O"}'), call("c2", '{"c":"B"}')],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "Sun"},
        {"role": "tool", "tool_call_id": "c2", "content": "Rain"},
    ]
    ChatCompletionRequest.model_validate(body)


def test_tools_are_nested_and_the_rest_carried() -> None:
    body = chat_body(
        _request(
            input="Hi",
            tools=[{"type": "function", "name": "w", "parameters": {"type": "object"}}],
            tool_choice={"type": "function", "name": "w"},
            parallel_tool_calls=False,
            temperature=0.3,
            top_p=0.8,
            user="u-1",
            metadata={"team": "a"},
            text={"format": {"type": "json_object"}, "verbosity": "low"},
            stream=True,
            priority=7,
            mock={"tokens": 3},
            include=["reasoning.encrypted_content"],
            truncation="auto",
            reasoning={"effort": "low"},
        )
    )

    assert body == {
        "model": "any-route",
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [
            {"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "w"}},
        "parallel_tool_calls": False,
        "temperature": 0.3,
        "top_p": 0.8,
        "user": "u-1",
        "metadata": {"team": "a"},
        "response_format": {"type": "json_object"},
        "stream": True,
        "priority": 7,
        "mock": {"tokens": 3},
    }


def test_a_json_schema_format_becomes_a_response_format() -> None:
    schema = {"type": "object", "properties": {}}
    text = {"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}}

    body = chat_body(_request(input="Hi", text=text))
    plain = chat_body(_request(input="Hi", text={"format": {"type": "text"}}))

    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": schema, "strict": True},
    }
    assert "response_format" not in plain


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"store": True}, "store"),
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"type": "function"}]}, "tools[0].name"),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format"),
    ],
)
def test_what_needs_state_or_a_hosted_tool_is_refused(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(Untranslatable) as raised:
        chat_body(_request(input="Hi", **fields))

    assert raised.value.param == param


def test_store_false_is_served() -> None:
    assert chat_body(_request(input="Hi", store=False))["messages"] == [
        {"role": "user", "content": "Hi"}
    ]


@pytest.mark.parametrize(
    ("item", "param"),
    [
        (
            {"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]},
            "input[0].content[0]",
        ),
        (
            {"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]},
            "input[0].content[0]",
        ),
        (
            {"role": "assistant", "content": [{"type": "input_image", "image_url": "https://x"}]},
            "input[0].content[0]",
        ),
        (
            {
                "type": "function_call_output",
                "call_id": "c1",
                "output": [{"type": "input_image", "image_url": "https://x"}],
            },
            "input[0].output[0]",
        ),
    ],
)
def test_content_relayq_cannot_carry_is_refused_by_its_place(
    item: dict[str, Any], param: str
) -> None:
    with pytest.raises(Untranslatable) as raised:
        chat_body(_request(input=[item]))

    assert raised.value.param == param


def test_an_unknown_item_type_fails_validation_at_its_index() -> None:
    with pytest.raises(ValidationError) as raised:
        _request(input=[{"role": "user", "content": "Hi"}, {"type": "item_reference", "id": "m"}])

    [error] = raised.value.errors()
    assert error["loc"] == ("input", 1)
    assert "'item_reference'" in error["msg"]


@pytest.mark.parametrize(
    ("item", "loc"),
    [
        ({"role": "bot", "content": "Hi"}, ("input", 0, "role")),
        ({"role": "user", "content": 5}, ("input", 0, "content")),
        ({"role": "user", "content": [{"type": "input_text"}]}, ("input", 0, "content", 0, "text")),
        ({"type": "function_call", "name": "w", "arguments": "{}"}, ("input", 0, "call_id")),
    ],
)
def test_a_bad_item_is_located_as_openai_names_it(
    item: dict[str, Any], loc: tuple[Any, ...]
) -> None:
    with pytest.raises(ValidationError) as raised:
        _request(input=[item])

    assert [error["loc"] for error in raised.value.errors()] == [loc]


def _completion(message: dict[str, Any], finish: str, **usage: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "upstream-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14, **usage},
    }


def test_a_completion_with_text_and_tool_calls_is_a_response() -> None:
    request = _request(input="Hi", tools=[{"type": "function", "name": "w"}], metadata={"k": "v"})
    message = {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
        ],
    }
    completion = _completion(
        message,
        "tool_calls",
        prompt_tokens_details={"cached_tokens": 6},
        completion_tokens_details={"reasoning_tokens": 2},
    )

    answer = response_from_completion(completion, job_id=JOB_ID, echo=echoed_fields(request))

    parsed = Response.model_validate(answer)
    ResponseObject.model_validate(answer)
    assert parsed.id == "resp_01ABC"
    assert parsed.status == "completed"
    assert parsed.model == "upstream-model"
    assert parsed.created_at == 1700000000
    assert parsed.output_text == "Checking."
    assert [item.type for item in parsed.output] == ["message", "function_call"]
    call = parsed.output[1]
    assert call.type == "function_call"
    assert (call.id, call.call_id, call.name, call.arguments) == ("fc_01ABC_0", "c1", "w", "{}")
    assert parsed.metadata == {"k": "v"}
    assert parsed.tools[0].type == "function"
    assert parsed.usage is not None
    assert parsed.usage.input_tokens == 10
    assert parsed.usage.input_tokens_details.cached_tokens == 6
    assert parsed.usage.output_tokens_details.reasoning_tokens == 2
    assert parsed.usage.total_tokens == 14


@pytest.mark.parametrize(
    ("finish", "reason"),
    [("stop", None), ("tool_calls", None), ("length", "max_output_tokens"), (None, None)],
)
def test_incomplete_reasons(finish: str | None, reason: str | None) -> None:
    assert incomplete_reason(finish) == reason


def test_a_cut_completion_is_an_incomplete_response() -> None:
    completion = _completion({"role": "assistant", "content": "One two"}, "length")

    answer = response_from_completion(
        completion, job_id=JOB_ID, echo=echoed_fields(_request(input="Hi", max_output_tokens=2))
    )

    parsed = Response.model_validate(answer)
    assert parsed.status == "incomplete"
    assert parsed.incomplete_details is not None
    assert parsed.incomplete_details.reason == "max_output_tokens"
    assert parsed.output[0].type == "message"
    assert parsed.output[0].status == "incomplete"


def test_usage_without_details_counts_none_cached() -> None:
    assert usage_of({"prompt_tokens": 3, "completion_tokens": 2}) == {
        "input_tokens": 3,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 5,
    }


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"id": "c", "model": "upstream-model", "choices": [choice], **extra}


def _stream(**request: Any) -> ResponsesEventStream:
    echo = echoed_fields(_request(input="Hi", **request))
    return ResponsesEventStream(job_id=JOB_ID, model="any-route", echo=echo, created_at=1)


def _validated(events: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    parsed = [_EVENTS.validate_python(data) for _, data in events]
    assert [name for name, _ in events] == [event.type for event in parsed]
    assert [event.sequence_number for event in parsed] == list(range(len(parsed)))
    return parsed


def test_a_text_stream_as_responses_events() -> None:
    stream = _stream()
    events = stream.feed(_chunk({"role": "assistant", "content": ""}))
    events += stream.feed(_chunk({"content": "Hello"}))
    events += stream.feed(_chunk({"content": " there"}))
    events += stream.feed(_chunk({}, "stop"))
    events += stream.feed(
        {"id": "c", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    )
    events += stream.finish()

    parsed = _validated(events)
    assert [event.type for event in parsed] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert parsed[0].response.status == "in_progress"
    assert parsed[0].response.output == []
    assert parsed[6].text == "Hello there"
    assert parsed[8].item.status == "completed"
    final = parsed[-1].response
    assert final.id == "resp_01ABC"
    assert final.model == "upstream-model"
    assert final.output_text == "Hello there"
    assert final.usage.output_tokens == 2
    assert final.usage.total_tokens == 7


def test_a_tool_call_stream_after_text_as_argument_deltas() -> None:
    stream = _stream(tools=[{"type": "function", "name": "w"}])
    events = stream.feed(_chunk({"content": "Let me check."}))
    head = {"index": 0, "id": "c1", "type": "function", "function": {"name": "w", "arguments": ""}}
    events += stream.feed(_chunk({"tool_calls": [head]}))
    events += stream.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}))
    events += stream.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}))
    events += stream.feed(_chunk({}, "tool_calls"))
    events += stream.finish()

    parsed = _validated(events)
    kinds = [event.type for event in parsed]
    assert kinds[kinds.index("response.output_item.done") + 1 :] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = parsed[kinds.index("response.function_call_arguments.delta") - 1]
    assert added.item.type == "function_call"
    assert (added.item.call_id, added.item.name, added.item.arguments) == ("c1", "w", "")
    assert parsed[-3].arguments == '{"a":1}'
    final = parsed[-1].response
    assert [item.type for item in final.output] == ["message", "function_call"]
    assert final.output[1].arguments == '{"a":1}'
    assert final.output[1].id == "fc_01ABC_0"


def test_a_cut_stream_ends_with_response_incomplete() -> None:
    stream = _stream(max_output_tokens=1)
    events = stream.feed(_chunk({"content": "One"}, "length")) + stream.finish()

    parsed = _validated(events)
    assert parsed[-1].type == "response.incomplete"
    assert parsed[-1].response.incomplete_details.reason == "max_output_tokens"
    assert parsed[-2].item.status == "incomplete"


def test_a_failed_stream_ends_with_an_error_event_then_response_failed() -> None:
    stream = _stream()
    events = stream.feed(_chunk({"content": "Half"}))
    events += stream.fail({"message": "Attempt 1 of job 'job_1' failed", "code": "x"})

    parsed = _validated(events)
    assert [event.type for event in parsed[-2:]] == ["error", "response.failed"]
    assert (parsed[-2].code, parsed[-2].message) == ("x", "Attempt 1 of job 'job_1' failed")
    assert parsed[-1].response.status == "failed"
    assert parsed[-1].response.error.message == "Attempt 1 of job 'job_1' failed"


def test_an_empty_stream_still_starts_and_completes() -> None:
    parsed = _validated(_stream().finish())

    assert [event.type for event in parsed] == [
        "response.created",
        "response.in_progress",
        "response.completed",
    ]
    assert parsed[-1].response.output == []
