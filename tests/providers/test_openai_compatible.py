"""The openai_compatible adapter: its presets' differences, against FakeOpenAI.

The behaviour it shares with the other OpenAI-wire adapters is tested in
test_openai_family.py (with no preset, as a vLLM server is used).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from relayq.config.settings import ProviderSettings
from relayq.providers.errors import ProviderUnavailable
from relayq.providers.http import build_http_client
from relayq.providers.openai import OpenAIProvider
from relayq.providers.openai_compatible import PRESETS, OpenAICompatibleProvider
from relayq.schemas.chat import ChatCompletionChunk, ChatCompletionRequest
from tests.fakes.openai_server import FakeOpenAI, Reply, completion, stream_events
from tests.providers.openai_family import (
    KEY,
    OPENAI_COMPATIBLE,
    Vendor,
    completer,
    fixture_json,
    fixture_text,
    run,
    sse_reply,
    streamer,
    text_of,
)

FULL_REQUEST = ChatCompletionRequest.model_validate(
    {
        "model": "public-name",
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_completion_tokens": 64,
        "seed": 42,
        "user": "u-1",
        "temperature": 0.3,
        "response_format": {"type": "json_object"},
    }
)


def preset(name: str, model: str = "some-model") -> Vendor:
    return Vendor("openai_compatible", FakeOpenAI, model, options={"preset": name})


def build(**config: Any) -> OpenAICompatibleProvider:
    async def make() -> OpenAICompatibleProvider:
        async with build_http_client(max_connections=10) as http:
            settings = ProviderSettings.model_validate({"type": "openai_compatible", **config})
            return OpenAICompatibleProvider(name="local", settings=settings, http=http)

    return asyncio.run(make())


def test_request_on_the_wire_without_a_key() -> None:
    with FakeOpenAI() as fake:
        run(
            OPENAI_COMPATIBLE,
            fake.base_url,
            completer(OPENAI_COMPATIBLE, FULL_REQUEST),
            api_key=None,
        )
        (sent,) = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert "authorization" not in sent.headers
    assert sent.json == FULL_REQUEST.upstream_body(model="meta-llama/Llama-3.1-8B-Instruct")


@pytest.mark.parametrize(
    ("name", "base_url"),
    [
        ("groq", "https://api.groq.com/openai/v1"),
        ("deepseek", "https://api.deepseek.com/v1"),
        ("mistral", "https://api.mistral.ai/v1"),
        ("together", "https://api.together.xyz/v1"),
        ("fireworks", "https://api.fireworks.ai/inference/v1"),
        ("ollama", "http://127.0.0.1:11434/v1"),
        ("lmstudio", "http://127.0.0.1:1234/v1"),
    ],
)
def test_preset_supplies_the_base_url(name: str, base_url: str) -> None:
    assert build(options={"preset": name}).base_url == base_url
    assert build(options={"preset": name}, base_url="http://h:1/v1/").base_url == "http://h:1/v1"


@pytest.mark.parametrize("options", [{}, {"preset": "vllm"}])
def test_base_url_is_required_without_a_default(options: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"'local'.*base_url is required"):
        build(options=options)


def test_unknown_preset_lists_the_known_ones() -> None:
    known = ", ".join(sorted(PRESETS))
    with pytest.raises(ValueError, match=rf"options\.preset.*unknown preset 'acme'.*{known}"):
        build(options={"preset": "acme"})


def test_mistral_request_uses_its_field_names() -> None:
    mistral = preset("mistral", "mistral-small-latest")
    with FakeOpenAI(api_key=KEY) as fake:
        run(mistral, fake.base_url, completer(mistral, FULL_REQUEST))
        run(mistral, fake.base_url, streamer(mistral, [], FULL_REQUEST))
        plain, streamed = (r.json for r in fake.requests)
    assert plain == {
        "model": "mistral-small-latest",
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 64,
        "random_seed": 42,
        "temperature": 0.3,
        "response_format": {"type": "json_object"},
    }
    assert streamed["stream"] is True
    assert "stream_options" not in streamed


def test_deepseek_request_uses_max_tokens() -> None:
    deepseek = preset("deepseek", "deepseek-chat")
    with FakeOpenAI(api_key=KEY) as fake:
        run(deepseek, fake.base_url, completer(deepseek, FULL_REQUEST))
        sent = fake.requests[0].json
    assert sent["max_tokens"] == 64
    assert "max_completion_tokens" not in sent
    assert (sent["seed"], sent["user"]) == (42, "u-1")


@pytest.mark.parametrize("name", ["groq", "together", "fireworks", "ollama", "vllm", "lmstudio"])
def test_other_presets_send_openais_body(name: str) -> None:
    vendor = preset(name)
    with FakeOpenAI(api_key=KEY) as fake:
        run(vendor, fake.base_url, completer(vendor, FULL_REQUEST))
        assert fake.requests[0].json == FULL_REQUEST.upstream_body(model="some-model")


def test_groq_usage_from_x_groq() -> None:
    groq = preset("groq", "llama-3.3-70b-versatile")
    received: list[ChatCompletionChunk] = []
    with FakeOpenAI(api_key=KEY) as fake:
        fake.script(sse_reply(fixture_text("openai_compatible", "groq_stream.sse")))
        run(groq, fake.base_url, streamer(groq, received))
    assert text_of(received) == "Hi there!"
    assert received[-1].usage is not None
    assert received[-1].usage.total_tokens == 15
    assert (received[-1].usage.model_extra or {})["queue_time"] == 0.0123


def test_mistral_stream_maps_model_length_and_keeps_usage() -> None:
    mistral = preset("mistral", "mistral-small-latest")
    received: list[ChatCompletionChunk] = []
    with FakeOpenAI(api_key=KEY) as fake:
        fake.script(sse_reply(fixture_text("openai_compatible", "mistral_stream.sse")))
        run(mistral, fake.base_url, streamer(mistral, received))
    assert text_of(received) == "Bonjour !"
    assert received[-1].choices[0].finish_reason == "length"
    assert received[-1].usage is not None
    assert received[-1].usage.total_tokens == 11


def test_together_eos_is_stop() -> None:
    together = preset("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo")
    with FakeOpenAI(api_key=KEY) as fake:
        fake.script(Reply(body=fixture_json("openai_compatible", "together_completion.json")))
        answer = run(together, fake.base_url, completer(together))
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content == "Hello! How can I help?"


def test_deepseek_reasoning_content_passes_through() -> None:
    deepseek = preset("deepseek", "deepseek-reasoner")
    with FakeOpenAI(api_key=KEY) as fake:
        fake.script(Reply(body=fixture_json("openai_compatible", "deepseek_reasoner.json")))
        answer = run(deepseek, fake.base_url, completer(deepseek))
    message_extra = answer.choices[0].message.model_extra or {}
    assert message_extra["reasoning_content"].startswith("Compare 9.11 and 9.8")


def test_reasoning_content_deltas_pass_through() -> None:
    deepseek = preset("deepseek", "deepseek-reasoner")
    events = stream_events({"model": "deepseek-reasoner", "messages": []}, "Yes.")
    events[0]["choices"][0]["delta"]["reasoning_content"] = "Let me think."
    received: list[ChatCompletionChunk] = []
    with FakeOpenAI(api_key=KEY) as fake:
        fake.script(
            sse_reply("".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n")
        )
        run(deepseek, fake.base_url, streamer(deepseek, received))
    assert (received[0].choices[0].delta.model_extra or {})["reasoning_content"] == "Let me think."


@pytest.mark.parametrize(
    ("name", "reason"), [("mistral", "error"), ("deepseek", "insufficient_system_resource")]
)
def test_failed_finish_reasons_raise(name: str, reason: str) -> None:
    vendor = preset(name)
    answer = completion({"model": "some-model", "messages": []}, "Half an ans")
    answer["choices"][0]["finish_reason"] = reason
    with FakeOpenAI(api_key=KEY) as fake:
        fake.script(Reply(body=answer))
        with pytest.raises(ProviderUnavailable, match=reason):
            run(vendor, fake.base_url, completer(vendor))


def test_finish_reasons_of_other_vendors_are_left_alone() -> None:
    answer = completion({"model": "some-model", "messages": []}, "Hi")
    answer["choices"][0]["finish_reason"] = "eos"
    with FakeOpenAI(api_key=KEY) as fake:
        fake.script(Reply(body=answer))
        result = run(OPENAI_COMPATIBLE, fake.base_url, completer(OPENAI_COMPATIBLE))
    assert result.choices[0].finish_reason == "eos"


async def _models(provider: OpenAIProvider) -> list[str] | None:
    return await provider.list_models()


def test_lists_models() -> None:
    with FakeOpenAI(api_key=KEY, models=("llama3.2:latest", "qwen2.5:7b")) as fake:
        assert run(preset("ollama"), fake.base_url, _models) == ["llama3.2:latest", "qwen2.5:7b"]
        (sent,) = fake.requests
    assert (sent.method, sent.path) == ("GET", "/v1/models")
    assert sent.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("body", "ids"),
    [
        (
            fixture_json("openai_compatible", "ollama_models.json"),
            ["llama3.2:latest", "qwen2.5:7b"],
        ),
        (
            [{"id": "meta-llama/Llama-3.3-70B", "object": "model", "type": "chat"}],
            ["meta-llama/Llama-3.3-70B"],
        ),
    ],
    ids=["openai-shape", "bare-array"],
)
def test_model_list_shapes(body: Any, ids: list[str]) -> None:
    with FakeOpenAI(api_key=KEY) as fake:
        fake.models_body = lambda: body  # type: ignore[method-assign]
        assert run(OPENAI_COMPATIBLE, fake.base_url, _models) == ids


def test_chunks_of_an_unchanged_openai_stream_keep_the_upstreams_json() -> None:
    """Decode once: where the preset changes nothing in a chunk, each chunk keeps the
    upstream's JSON, vendor fields and all, and the layers above send it on as it came."""
    deepseek = preset("deepseek", "deepseek-reasoner")
    events = stream_events({"model": "deepseek-reasoner", "messages": []}, "Yes.")
    events[0]["choices"][0]["delta"]["reasoning_content"] = "Let me think."
    sent = [json.dumps(e) for e in events]
    received: list[ChatCompletionChunk] = []
    with FakeOpenAI(api_key=KEY) as fake:
        fake.script(sse_reply("".join(f"data: {e}\n\n" for e in sent) + "data: [DONE]\n\n"))
        run(deepseek, fake.base_url, streamer(deepseek, received))
    assert [chunk.wire for chunk in received] == sent


@pytest.mark.parametrize(
    ("name", "fixture"), [("groq", "groq_stream.sse"), ("mistral", "mistral_stream.sse")]
)
def test_chunks_a_preset_changes_are_not_passed_on_as_they_came(name: str, fixture: str) -> None:
    """Groq's usage moves out of ``x_groq``, Mistral's finish reasons are renamed: those
    chunks are encoded again from what relayq made of them."""
    vendor = preset(name)
    received: list[ChatCompletionChunk] = []
    with FakeOpenAI(api_key=KEY) as fake:
        fake.script(sse_reply(fixture_text("openai_compatible", fixture)))
        run(vendor, fake.base_url, streamer(vendor, received))
    assert received
    assert all(chunk.wire is None for chunk in received)
