"""The official anthropic SDK against /v1/messages on a live API and worker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import KeyFactory
from tests.fakes.openai_server import FakeOpenAI, Reply, tool_call
from tests.jobs import wait_for_status
from tests.stack import Stack

WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def sdk(stack: Stack, make_key: KeyFactory) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=stack.base_url, api_key=make_key(), max_retries=0, timeout=30
    ) as client:
        yield client


def _prompt() -> str:
    return f"Write a haiku about queues {uuid.uuid4().hex}"


def test_create_returns_a_message(sdk: anthropic.Anthropic) -> None:
    raw = sdk.messages.with_raw_response.create(
        model="mock",
        max_tokens=64,
        messages=[{"role": "user", "content": _prompt()}],
        extra_body={"mock": {"tokens": 12}},
    )
    message = raw.parse()

    assert message.type == "message"
    assert message.role == "assistant"
    job_id = raw.headers["x-relayq-job-id"]
    assert message.id == "msg_" + job_id.removeprefix("job_")
    [block] = message.content
    assert block.type == "text"
    assert len(block.text.split()) == 12
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 12
    assert message.usage.input_tokens > 0


def test_max_tokens_is_carried_and_reported_as_the_stop_reason(sdk: anthropic.Anthropic) -> None:
    message = sdk.messages.create(
        model="mock",
        max_tokens=3,
        messages=[{"role": "user", "content": _prompt()}],
        extra_body={"mock": {"tokens": 12}},
    )

    [block] = message.content
    assert block.type == "text"
    assert len(block.text.split()) == 3
    assert message.stop_reason == "max_tokens"


def test_system_and_turns_reach_the_upstream_as_openai_messages(
    sdk: anthropic.Anthropic, fake_openai: FakeOpenAI
) -> None:
    before = len(fake_openai.requests)
    message = sdk.messages.create(
        model="gpt-4o-mini",
        max_tokens=100,
        system="You are terse.",
        stop_sequences=["END"],
        metadata={"user_id": "user-7"},
        # Sampling parameters are not in this SDK's signature; older API versions take them.
        extra_body={"temperature": 0.5, "top_p": 0.9, "priority": 3},
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/cat.png"},
                    },
                ],
            },
        ],
    )

    assert message.model == "gpt-4o-mini-2024-07-18"
    assert message.content[0].type == "text"
    [sent] = fake_openai.requests[before:]
    assert sent.json["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        },
    ]
    assert sent.json["max_completion_tokens"] == 100
    assert (sent.json["temperature"], sent.json["top_p"]) == (0.5, 0.9)
    assert sent.json["stop"] == ["END"]
    assert sent.json["user"] == "user-7"


def test_a_tool_use_round_trip(sdk: anthropic.Anthropic, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Reply(tool_calls=[tool_call("call_1", "get_weather", '{"city":"Oslo"}')]))
    question: Any = {"role": "user", "content": "Weather in Oslo?"}

    first = sdk.messages.create(
        model="gpt-4o-mini",
        max_tokens=100,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "any"},
        messages=[question],
    )

    assert first.stop_reason == "tool_use"
    [use] = first.content
    assert use.type == "tool_use"
    assert (use.id, use.name, use.input) == ("call_1", "get_weather", {"city": "Oslo"})

    before = len(fake_openai.requests)
    second = sdk.messages.create(
        model="gpt-4o-mini",
        max_tokens=100,
        tools=[WEATHER_TOOL],
        messages=[
            question,
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"},
                    {"type": "text", "text": "Thanks; summarise it."},
                ],
            },
        ],
    )

    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    [sent] = fake_openai.requests[before:]
    assert sent.json["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER_TOOL["input_schema"],
                "description": "The weather in a city.",
            },
        }
    ]
    assert sent.json["messages"][1:] == [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
        {"role": "user", "content": "Thanks; summarise it."},
    ]


def test_the_first_call_asks_for_a_tool_as_tool_choice_any_says(
    sdk: anthropic.Anthropic, fake_openai: FakeOpenAI
) -> None:
    before = len(fake_openai.requests)
    sdk.messages.create(
        model="gpt-4o-mini",
        max_tokens=100,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "Weather?"}],
    )

    [sent] = fake_openai.requests[before:]
    assert sent.json["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent.json["parallel_tool_calls"] is False


def test_stream_text_deltas_add_up_to_the_final_message(sdk: anthropic.Anthropic) -> None:
    prompt: Any = [{"role": "user", "content": _prompt()}]
    whole = sdk.messages.create(
        model="mock", max_tokens=64, messages=prompt, extra_body={"mock": {"tokens": 16}}
    )

    with sdk.messages.stream(
        model="mock",
        max_tokens=64,
        messages=prompt,
        extra_body={"mock": {"tokens": 16, "stream_interval_ms": 5}},
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    with sdk.messages.stream(
        model="mock",
        max_tokens=64,
        messages=prompt,
        extra_body={"mock": {"tokens": 16, "stream_interval_ms": 5}},
    ) as stream:
        text = "".join(stream.text_stream)

    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop"} <= set(kinds)
    assert "message_delta" in kinds
    [block] = final.content
    assert block.type == "text"
    assert text == block.text
    assert whole.content[0].type == "text"
    assert block.text == whole.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 16
    assert final.usage.input_tokens == whole.usage.input_tokens > 0


def test_a_streamed_tool_call_arrives_as_input_json_deltas(
    sdk: anthropic.Anthropic, fake_openai: FakeOpenAI
) -> None:
    arguments = '{"city":"Reykjavik","unit":"celsius"}'
    fake_openai.script(Reply(tool_calls=[tool_call("call_9", "get_weather", arguments)]))

    with sdk.messages.stream(
        model="gpt-4o-mini",
        max_tokens=100,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Weather in Reykjavik?"}],
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()

    partial = "".join(
        event.delta.partial_json
        for event in events
        if event.type == "content_block_delta" and event.delta.type == "input_json_delta"
    )
    assert json.loads(partial) == json.loads(arguments)
    [use] = final.content
    assert use.type == "tool_use"
    assert (use.id, use.name, use.input) == ("call_9", "get_weather", json.loads(arguments))
    assert final.stop_reason == "tool_use"


def test_a_cached_answer_streams_too(sdk: anthropic.Anthropic) -> None:
    prompt: Any = [{"role": "user", "content": _prompt()}]
    whole = sdk.messages.create(model="mock-cached", max_tokens=64, messages=prompt)

    with sdk.messages.stream(model="mock-cached", max_tokens=64, messages=prompt) as stream:
        final = stream.get_final_message()

    assert [block.to_dict() for block in final.content] == [
        block.to_dict() for block in whole.content
    ]
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_the_job_behind_a_message_can_be_looked_up(sdk: anthropic.Anthropic, stack: Stack) -> None:
    raw = sdk.messages.with_raw_response.create(
        model="mock",
        max_tokens=64,
        messages=[{"role": "user", "content": _prompt()}],
        extra_body={"priority": 3},  # a job option passes along
    )
    job_id = raw.headers["x-relayq-job-id"]

    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {sdk.api_key}"}
    ) as client:
        job = wait_for_status(client, job_id, {"succeeded", "failed"}, timeout=10)

    assert job["status"] == "succeeded"
    assert job["priority"] == 3
    assert job["request"]["max_completion_tokens"] == 64
    first = raw.parse().content[0]
    assert first.type == "text"
    assert job["response"]["choices"][0]["message"]["content"] == first.text


def test_an_unknown_model_raises_not_found_error(sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as raised:
        sdk.messages.create(
            model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
        )

    assert raised.value.status_code == 404
    body = raised.value.body
    assert isinstance(body, dict)
    assert body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": body["error"]["message"]},
        "request_id": raised.value.response.headers["x-request-id"],
    }
    assert "no-such-model" in body["error"]["message"]


def test_a_bad_key_raises_authentication_error(stack: Stack) -> None:
    with (
        anthropic.Anthropic(base_url=stack.base_url, api_key="rq-nope", max_retries=0) as sdk,
        pytest.raises(anthropic.AuthenticationError) as raised,
    ):
        sdk.messages.create(
            model="mock", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
        )

    assert isinstance(raised.value.body, dict)
    assert raised.value.body["type"] == "error"
    assert raised.value.body["error"]["type"] == "authentication_error"


def test_a_missing_max_tokens_raises_bad_request_error(sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        sdk.messages.create(  # type: ignore[call-overload]
            model="mock",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=anthropic.omit,
        )

    assert isinstance(raised.value.body, dict)
    assert raised.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "Missing required parameter: 'max_tokens'.",
    }


def test_a_block_relayq_cannot_carry_is_a_bad_request(sdk: anthropic.Anthropic) -> None:
    document: Any = {
        "type": "document",
        "source": {"type": "url", "url": "https://example.com/a.pdf"},
    }
    with pytest.raises(anthropic.BadRequestError) as raised:
        sdk.messages.create(
            model="mock", max_tokens=10, messages=[{"role": "user", "content": [document]}]
        )

    assert isinstance(raised.value.body, dict)
    assert "messages[0].content[0].source" in raised.value.body["error"]["message"]


def test_the_key_may_come_as_x_api_key_or_a_bearer_token(
    stack: Stack, make_key: KeyFactory
) -> None:
    key = make_key()
    body = {"model": "mock", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
    url = f"{stack.base_url}/v1/messages"
    as_x_api_key = httpx.post(url, json=body, headers={"x-api-key": key}, timeout=10)
    as_bearer = httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    anonymous = httpx.post(url, json=body, timeout=10)
    # The other routes keep OpenAI's ways: a bearer token, OpenAI's error shape.
    chat = httpx.post(
        f"{stack.base_url}/v1/chat/completions",
        json={"model": "mock", "messages": body["messages"]},
        headers={"x-api-key": key},
        timeout=10,
    )

    assert as_x_api_key.status_code == as_bearer.status_code == 200
    assert as_x_api_key.json()["type"] == as_bearer.json()["type"] == "message"
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"
    assert "x-api-key" in anonymous.json()["error"]["message"]
    assert chat.status_code == 401
    assert chat.json()["error"]["code"] == "missing_api_key"


def test_auth_token_sends_a_bearer_token_the_route_accepts(
    stack: Stack, make_key: KeyFactory
) -> None:
    with anthropic.Anthropic(base_url=stack.base_url, auth_token=make_key(), max_retries=0) as sdk:
        message = sdk.messages.create(
            model="mock", max_tokens=8, messages=[{"role": "user", "content": "Hi"}]
        )

    assert message.type == "message"


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_rate_limit_raises_rate_limit_error(
    sdk: anthropic.Anthropic, stream: bool
) -> None:
    with pytest.raises(anthropic.RateLimitError) as raised:
        sdk.messages.create(
            model="mock-faulty",
            max_tokens=10,
            messages=[{"role": "user", "content": "Hi"}],
            stream=stream,
            extra_body={"mock": {"fault": "rate_limit", "retry_after": 0.4}},
        )

    assert raised.value.response.headers["retry-after"] == "1"
    assert raised.value.response.headers["x-relayq-job-id"].startswith("job_")
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["error"]["type"] == "rate_limit_error"


@pytest.mark.usefixtures("cut_breaker_closed")
def test_an_attempt_cut_mid_stream_ends_the_stream_with_an_error_event(
    sdk: anthropic.Anthropic,
) -> None:
    """As on /v1/chat/completions, a stream never mixes two attempts' text: it ends with
    Anthropic's ``error`` event naming the job, which goes on."""
    prompt: Any = [{"role": "user", "content": f"cut {uuid.uuid4().hex}"}]
    received: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as failed,
        sdk.messages.stream(
            model="mock-cut",
            max_tokens=100,
            messages=prompt,
            extra_body={"mock": {"tokens": 40, "stream_interval_ms": 30}},
        ) as stream,
    ):
        received.extend(stream.text_stream)

    assert received
    assert isinstance(failed.value.body, dict)
    assert failed.value.body["type"] == "error"
    assert failed.value.body["error"]["type"] == "api_error"
    assert "attempt" in failed.value.body["error"]["message"]
    assert "job_" in failed.value.body["error"]["message"]
