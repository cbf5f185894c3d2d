"""The official openai SDK against /v1/responses on a live API and worker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from relayq.store import Database
from relayq.store.keys import create_key
from tests.conftest import KeyFactory
from tests.fakes.openai_server import DEFAULT_CONTENT, FakeOpenAI, Reply, tool_call
from tests.jobs import wait_for_status
from tests.services import run
from tests.stack import Stack

WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": False,
}


@pytest.fixture
def sdk(stack: Stack, make_key: KeyFactory) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{stack.base_url}/v1", api_key=make_key(), max_retries=0, timeout=30
    ) as client:
        yield client


def _prompt() -> str:
    return f"Write a haiku about queues {uuid.uuid4().hex}"


def test_create_with_text_input_returns_a_response(sdk: openai.OpenAI, stack: Stack) -> None:
    raw = sdk.responses.with_raw_response.create(
        model="mock", input=_prompt(), store=False, extra_body={"mock": {"tokens": 12}}
    )
    response = raw.parse()

    job_id = raw.headers["x-relayq-job-id"]
    assert response.id == "resp_" + job_id.removeprefix("job_")
    assert response.object == "response"
    assert response.status == "completed"
    [item] = response.output
    assert item.type == "message"
    assert item.role == "assistant"
    [part] = item.content
    assert part.type == "output_text"
    assert part.annotations == []
    assert len(response.output_text.split()) == 12
    assert response.usage is not None
    assert response.usage.output_tokens == 12
    assert response.usage.input_tokens > 0
    assert response.usage.total_tokens == (
        response.usage.input_tokens + response.usage.output_tokens
    )
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    # The job behind it is an ordinary job of kind responses, served over chat by the mock.
    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {sdk.api_key}"}
    ) as client:
        job = wait_for_status(client, job_id, {"succeeded", "failed"}, timeout=10)
    assert job["status"] == "succeeded"
    assert job["kind"] == "responses"
    assert job["request"]["input"].startswith("Write a haiku")
    assert job["response"]["id"] == response.id
    assert job["response"]["output"][0]["content"][0]["text"] == response.output_text
    assert job["usage"]["completion_tokens"] == 12


def test_instructions_and_a_message_list_reach_the_upstream_as_chat_messages(
    sdk: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    before = len(fake_openai.requests)
    response = sdk.responses.create(
        model="gpt-4o-mini-chat",
        instructions="You are terse.",
        input=[
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {
                        "type": "input_image",
                        "image_url": "https://example.com/cat.png",
                        "detail": "low",
                    },
                ],
            },
        ],
        temperature=0.5,
        top_p=0.9,
        metadata={"team": "a"},
        extra_body={"priority": 3},
    )

    assert response.model == "gpt-4o-mini-2024-07-18"
    assert response.output_text == DEFAULT_CONTENT
    assert response.instructions == "You are terse."
    assert response.metadata == {"team": "a"}
    [sent] = fake_openai.requests[before:]
    assert sent.json["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.com/cat.png", "detail": "low"},
                },
            ],
        },
    ]
    assert (sent.json["temperature"], sent.json["top_p"]) == (0.5, 0.9)
    assert not {"priority", "metadata", "instructions", "input"} & set(sent.json)


def test_a_function_call_round_trip(sdk: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Reply(tool_calls=[tool_call("call_1", "get_weather", '{"city":"Oslo"}')]))
    question: Any = {"role": "user", "content": "Weather in Oslo?"}

    first = sdk.responses.create(
        model="gpt-4o-mini-chat", input=[question], tools=[WEATHER_TOOL], tool_choice="required"
    )

    assert first.status == "completed"
    [call] = first.output
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments) == ("call_1", "get_weather", '{"city":"Oslo"}')

    # The history goes back as it came: the call item as the SDK parsed it, then its output.
    history: list[Any] = [
        question,
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"},
    ]
    before = len(fake_openai.requests)
    second = sdk.responses.create(model="gpt-4o-mini-chat", tools=[WEATHER_TOOL], input=history)

    assert second.output_text == DEFAULT_CONTENT
    [sent] = fake_openai.requests[before:]
    assert sent.json["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": WEATHER_TOOL["parameters"],
                "strict": False,
            },
        }
    ]
    assert sent.json["messages"] == [
        {"role": "user", "content": "Weather in Oslo?"},
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
    ]


def test_a_named_tool_choice_is_carried_as_chat_s(
    sdk: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    before = len(fake_openai.requests)
    sdk.responses.create(
        model="gpt-4o-mini-chat",
        input="Weather?",
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
    )

    [sent] = fake_openai.requests[before:]
    assert sent.json["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent.json["parallel_tool_calls"] is False


def test_max_output_tokens_cuts_the_answer_and_makes_it_incomplete(sdk: openai.OpenAI) -> None:
    response = sdk.responses.create(
        model="mock", input=_prompt(), max_output_tokens=3, extra_body={"mock": {"tokens": 12}}
    )

    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.max_output_tokens == 3
    assert len(response.output_text.split()) == 3


def test_a_json_schema_text_format_is_carried_as_response_format(
    sdk: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    before = len(fake_openai.requests)
    response = sdk.responses.create(
        model="gpt-4o-mini-chat",
        input="Name a city.",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
    )

    [sent] = fake_openai.requests[before:]
    assert sent.json["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": schema, "strict": True},
    }
    assert response.text is not None
    assert response.text.format is not None
    assert response.text.format.type == "json_schema"


def test_stream_text_deltas_add_up_to_the_final_response(sdk: openai.OpenAI) -> None:
    prompt = _prompt()
    whole = sdk.responses.create(model="mock", input=prompt, extra_body={"mock": {"tokens": 16}})

    with sdk.responses.stream(
        model="mock",
        input=prompt,
        extra_body={"mock": {"tokens": 16, "stream_interval_ms": 5}},
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()

    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert {
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    } <= set(kinds)
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == final.output_text == whole.output_text
    assert final.status == "completed"
    assert final.id.startswith("resp_")
    assert final.usage is not None
    assert whole.usage is not None
    assert final.usage.output_tokens == 16
    assert final.usage.input_tokens == whole.usage.input_tokens > 0


def test_a_streamed_function_call_arrives_as_argument_deltas(
    sdk: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    arguments = '{"city":"Reykjavik","unit":"celsius"}'
    fake_openai.script(Reply(tool_calls=[tool_call("call_9", "get_weather", arguments)]))

    with sdk.responses.stream(
        model="gpt-4o-mini-chat", input="Weather in Reykjavik?", tools=[WEATHER_TOOL]
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()

    partial = "".join(
        event.delta for event in events if event.type == "response.function_call_arguments.delta"
    )
    assert partial == arguments
    [done] = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done.arguments == arguments
    [call] = final.output
    assert call.type == "function_call"
    assert (call.call_id, call.name, json.loads(call.arguments)) == (
        "call_9",
        "get_weather",
        json.loads(arguments),
    )


def test_a_cut_stream_ends_incomplete(sdk: openai.OpenAI) -> None:
    with sdk.responses.stream(
        model="mock", input=_prompt(), max_output_tokens=4, extra_body={"mock": {"tokens": 12}}
    ) as stream:
        events = list(stream)

    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert len(last.response.output_text.split()) == 4


def test_a_cached_answer_streams_too(sdk: openai.OpenAI) -> None:
    prompt = _prompt()
    whole = sdk.responses.create(model="mock-cached", input=prompt)

    with sdk.responses.stream(model="mock-cached", input=prompt) as stream:
        final = stream.get_final_response()

    assert final.output_text == whole.output_text
    assert final.usage is not None
    assert whole.usage is not None
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_store_true_is_a_bad_request(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.responses.create(model="mock", input="Hi", store=True)

    assert isinstance(raised.value.body, dict)
    assert raised.value.body["param"] == "store"
    assert "stateless" in raised.value.body["message"]


def test_a_previous_response_id_is_a_bad_request(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.responses.create(model="mock", input="Hi", previous_response_id="resp_123")

    assert isinstance(raised.value.body, dict)
    assert raised.value.body["param"] == "previous_response_id"


def test_a_hosted_tool_is_a_bad_request(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.responses.create(model="mock", input="Hi", tools=[{"type": "web_search"}])

    assert isinstance(raised.value.body, dict)
    assert raised.value.body["param"] == "tools[0].type"


def test_a_bad_item_is_a_bad_request_naming_its_place(sdk: openai.OpenAI) -> None:
    items: Any = [
        {"role": "user", "content": "Weather?"},
        {"type": "function_call_output", "output": "Sunny"},
    ]
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.responses.create(model="mock", input=items)

    assert isinstance(raised.value.body, dict)
    assert raised.value.body["param"] == "input[1].call_id"
    assert raised.value.body["code"] == "missing_required_parameter"


def test_an_unknown_model_raises_not_found_error(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        sdk.responses.create(model="no-such-model", input="Hi")

    assert "no-such-model" in raised.value.message


def test_a_bad_key_raises_authentication_error(stack: Stack) -> None:
    with (
        openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="rq-nope", max_retries=0) as sdk,
        pytest.raises(openai.AuthenticationError),
    ):
        sdk.responses.create(model="mock", input="Hi")


@pytest.mark.usefixtures("cut_breaker_closed")
def test_an_attempt_cut_mid_stream_ends_with_an_error_event_and_response_failed(
    sdk: openai.OpenAI,
) -> None:
    """As on /v1/chat/completions, a stream never mixes two attempts' text."""
    with sdk.responses.stream(
        model="mock-cut",
        input=f"cut {uuid.uuid4().hex}",
        extra_body={"mock": {"tokens": 40, "stream_interval_ms": 30}},
    ) as stream:
        events = list(stream)

    kinds = [event.type for event in events]
    assert "response.output_text.delta" in kinds
    assert kinds[-2:] == ["error", "response.failed"]
    error = events[-2]
    assert error.type == "error"
    assert error.code == "attempt_interrupted"
    assert "job_" in error.message
    failed = events[-1]
    assert failed.type == "response.failed"
    assert failed.response.status == "failed"


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_rate_limit_raises_rate_limit_error(sdk: openai.OpenAI, stream: bool) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        sdk.responses.create(
            model="mock-faulty",
            input="Hi",
            stream=stream,
            extra_body={"mock": {"fault": "rate_limit", "retry_after": 0.4}},
        )

    assert raised.value.response.headers["retry-after"] == "1"
    assert raised.value.response.headers["x-relayq-job-id"].startswith("job_")
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "rate_limited"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], None),
        ({"input": "Hi"}, "model"),
        ({"model": "mock", "input": [5]}, "input[0]"),
        ({"model": "mock", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"model": "mock", "input": "Hi", "tool_choice": "sometimes"}, "tool_choice"),
    ],
)
def test_a_malformed_body_is_a_400_in_openai_s_shape(
    client: httpx.Client, body: Any, param: str | None
) -> None:
    answer = client.post("/v1/responses", json=body)

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def _key(database_url: str, **fields: Any) -> str:
    async def create() -> str:
        database = Database(database_url)
        try:
            async with database.session() as session:
                return (await create_key(session, name="scoped", **fields)).secret
        finally:
            await database.aclose()

    return run(create())


def test_the_chat_scope_and_the_key_s_models_are_required(stack: Stack, database_url: str) -> None:
    base_url = f"{stack.base_url}/v1"
    reader = _key(database_url, scopes=["read"])
    limited = _key(database_url, models=["mock-idle"])
    with (
        openai.OpenAI(base_url=base_url, api_key=reader, max_retries=0) as sdk,
        pytest.raises(openai.PermissionDeniedError) as unscoped,
    ):
        sdk.responses.create(model="mock", input="Hi")
    with (
        openai.OpenAI(base_url=base_url, api_key=limited, max_retries=0) as sdk,
        pytest.raises(openai.PermissionDeniedError) as disallowed,
    ):
        sdk.responses.create(model="mock", input="Hi")

    assert isinstance(unscoped.value.body, dict)
    assert unscoped.value.body["code"] == "insufficient_scope"
    assert isinstance(disallowed.value.body, dict)
    assert disallowed.value.body["code"] == "model_not_allowed"
    assert disallowed.value.body["param"] == "model"


def _job(stack: Stack, sdk: openai.OpenAI, job_id: str) -> dict[str, Any]:
    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {sdk.api_key}"}
    ) as client:
        return wait_for_status(client, job_id, {"succeeded", "failed"}, timeout=10)


def test_a_native_route_passes_the_request_and_the_answer_through(
    sdk: openai.OpenAI, fake_openai: FakeOpenAI, stack: Stack
) -> None:
    before = len(fake_openai.requests)
    raw = sdk.responses.with_raw_response.create(
        model="gpt-4o-mini",
        input="Hi there",
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        tools=[{"type": "web_search"}],  # a hosted tool: the native path carries it
        store=False,
        extra_body={"priority": 7},
    )
    response = raw.parse()

    [sent] = fake_openai.requests[before:]
    assert sent.path == "/v1/responses"  # the Responses request itself, not a chat one
    assert sent.json["model"] == "gpt-4o-mini-2024-07-18"
    assert sent.json["store"] is False
    assert sent.json["include"] == ["reasoning.encrypted_content"]
    assert sent.json["tools"] == [{"type": "web_search"}]
    assert "priority" not in sent.json
    assert response.id == "resp_fake0001"  # the vendor's own
    reasoning, message = response.output
    assert reasoning.type == "reasoning"
    assert reasoning.encrypted_content is not None  # what the chat translation drops
    assert message.type == "message"
    assert response.output_text == DEFAULT_CONTENT
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens == 16
    job = _job(stack, sdk, raw.headers["x-relayq-job-id"])
    assert (job["kind"], job["status"], job["priority"]) == ("responses", "succeeded", 7)
    assert job["response"]["output"][0]["type"] == "reasoning"
    assert job["usage"]["prompt_tokens"] == response.usage.input_tokens
    assert job["usage"]["completion_tokens"] == response.usage.output_tokens
    assert job["usage"]["completion_tokens_details"] == {"reasoning_tokens": 16}
    assert job["cost_usd"] > 0


def test_a_native_stream_relays_the_vendor_s_events(
    sdk: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    before = len(fake_openai.requests)
    with sdk.responses.stream(
        model="gpt-4o-mini", input="Hi", reasoning={"effort": "low"}, store=False
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()

    [sent] = fake_openai.requests[before:]
    assert (sent.path, sent.json["stream"]) == ("/v1/responses", True)
    assert [e.sequence_number for e in events] == list(range(len(events)))  # as it came
    assert events[0].type == "response.created"
    added = [e.item.type for e in events if e.type == "response.output_item.added"]
    assert added == ["reasoning", "message"]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == DEFAULT_CONTENT
    assert events[-1].type == "response.completed"
    assert final.id == "resp_fake0001"
    assert final.output[0].type == "reasoning"


@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_native_deployment_falls_back_over_chat(
    sdk: openai.OpenAI, fake_openai: FakeOpenAI, stack: Stack, stream: bool
) -> None:
    before = len(fake_openai.requests)
    response: openai.types.responses.Response
    if stream:
        with sdk.responses.stream(
            model="gpt-4o-mini-fallback", input="Hi", instructions="Be brief."
        ) as events:
            kinds = [event.type for event in events]
            response = events.get_final_response()
        assert kinds[-1] == "response.completed"
        job_id = "job_" + response.id.removeprefix("resp_")
    else:
        raw = sdk.responses.with_raw_response.create(
            model="gpt-4o-mini-fallback", input="Hi", instructions="Be brief."
        )
        response = raw.parse()
        job_id = raw.headers["x-relayq-job-id"]

    paths = [sent.path for sent in fake_openai.requests[before:]]
    # The native deployment answered 401 (or its breaker, open, refused the call first).
    assert paths[-1] == "/v1/chat/completions"
    assert set(paths[:-1]) <= {"/v1/responses"}
    assert response.id == "resp_" + job_id.removeprefix("job_")  # written by relayq
    assert response.output_text == DEFAULT_CONTENT
    assert response.instructions == "Be brief."
    job = _job(stack, sdk, job_id)
    assert (job["kind"], job["status"], job["provider"]) == (
        "responses",
        "succeeded",
        "openai-chat",
    )
    assert [a["provider"] for a in job["attempts"]] == ["openai-badkey", "openai-chat"]
    assert job["response"]["output"][0]["content"][0]["text"] == DEFAULT_CONTENT


def test_a_responses_job_through_post_v1_jobs(sdk: openai.OpenAI, stack: Stack) -> None:
    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {sdk.api_key}"}
    ) as client:
        created = client.post(
            "/v1/jobs",
            json={
                "kind": "responses",
                "model": "mock",
                "input": _prompt(),
                "metadata": {"team": "a"},
                "mock": {"tokens": 5},
            },
        )
        assert created.status_code == 202, created.text
        job = wait_for_status(client, created.json()["id"], {"succeeded", "failed"}, timeout=10)
    assert (job["kind"], job["status"], job["metadata"]) == (
        "responses",
        "succeeded",
        {"team": "a"},
    )
    assert job["request"]["metadata"] == {"team": "a"}
    response = job["response"]
    assert response["object"] == "response"
    assert response["metadata"] == {"team": "a"}
    assert len(response["output"][0]["content"][0]["text"].split()) == 5
    assert job["usage"]["completion_tokens"] == 5


def test_a_native_stream_that_fails_before_its_answer_is_retried_out_of_sight(
    sdk: openai.OpenAI, fake_openai: FakeOpenAI, stack: Stack
) -> None:
    created = {"id": "resp_failed", "object": "response", "status": "in_progress", "output": []}
    opening = {"type": "response.created", "sequence_number": 0, "response": created}
    opened_then_failed = (
        f"event: response.created\ndata: {json.dumps(opening)}\n\n"
        'event: error\ndata: {"type": "error", "sequence_number": 1, "code": "server_error", '
        '"message": "The server had an error.", "param": null}\n\n'
    )
    fake_openai.script(
        Reply(body=opened_then_failed, headers={"Content-Type": "text/event-stream"})
    )
    with sdk.responses.with_streaming_response.create(
        model="gpt-4o-mini", input="Hi", stream=True
    ) as raw:
        job_id = raw.headers["x-relayq-job-id"]
        lines = [line for line in raw.iter_lines() if line.startswith("event: ")]

    # The failed attempt's response.created was held back: one clean stream, the retry's.
    assert lines.count("event: response.created") == 1
    assert lines[-1] == "event: response.completed"
    job = _job(stack, sdk, job_id)
    assert job["status"] == "succeeded"
    assert [a["status"] for a in job["attempts"]] == ["failed", "succeeded"]
    assert job["response"]["id"] == "resp_fake0001"


def test_a_hosted_tool_on_a_mixed_route_fails_when_it_falls_back_to_chat(
    sdk: openai.OpenAI,
) -> None:
    # Taken (the route has a native deployment); its fallback cannot carry it.
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.responses.create(
            model="gpt-4o-mini-fallback", input="Hi", tools=[{"type": "web_search"}]
        )
    assert "tools[0]" in raised.value.message
    assert "does not speak Responses" in raised.value.message
