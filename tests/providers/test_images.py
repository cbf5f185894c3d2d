"""Image generation through the adapters, against the vendors' wire-level fakes over the
real HTTP client: OpenAI's and Azure's ``/images/generations``, Blackbox's image models on
its chat completions, the mock's PNGs; and the adapters that draw none refusing."""

from __future__ import annotations

import asyncio
import base64
import struct
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from relayq.config.settings import ProviderSettings
from relayq.providers import provider_type
from relayq.providers.azure_openai import DEFAULT_API_VERSION
from relayq.providers.errors import InvalidRequest, MalformedResponse
from relayq.providers.http import build_http_client
from relayq.providers.mock import MockProvider
from relayq.providers.mock_image import MOCK_IMAGE_SIDE, PNG_SIGNATURE, mock_png
from relayq.providers.openai import OpenAIProvider
from relayq.schemas.completions import TextCompletion, TextCompletionRequest
from relayq.schemas.images import ImageGenerationRequest, ImagesResponse
from tests.fakes.azure_openai_server import FILTER_OK, FakeAzureOpenAI
from tests.fakes.blackbox_server import IMAGE_MODEL, FakeBlackbox
from tests.fakes.images import ONE_PIXEL_PNG
from tests.fakes.openai_server import FakeOpenAI, Reply, text_completion
from tests.providers.openai_family import AZURE, BLACKBOX, KEY, OPENAI, Vendor, fixture_json, run


def _request(**body: Any) -> ImageGenerationRequest:
    return ImageGenerationRequest.model_validate({"model": "alias", "prompt": "a red fox", **body})


def drawer(
    request: ImageGenerationRequest, model: str
) -> Callable[[OpenAIProvider], Awaitable[ImagesResponse]]:
    async def draw(provider: OpenAIProvider) -> ImagesResponse:
        return await provider.generate_images(request, model=model)

    return draw


def test_a_gpt_image_model_gets_the_body_without_response_format_and_answers_bytes() -> None:
    request = _request(
        n=2, size="1024x1024", quality="low", response_format="url", mock={"latency_ms": 5}
    )
    with FakeOpenAI(api_key=KEY) as fake:
        answer = run(OPENAI, fake.base_url, drawer(request, "gpt-image-1"))
        [sent] = fake.requests

    assert (sent.path, sent.headers["authorization"]) == ("/v1/images/generations", f"Bearer {KEY}")
    # The deployment's model; relayq's controls and the refused response_format left out.
    assert sent.json == {
        "model": "gpt-image-1",
        "prompt": "a red fox",
        "n": 2,
        "size": "1024x1024",
        "quality": "low",
    }
    assert [base64.b64decode(i.b64_json or "") for i in answer.data] == [ONE_PIXEL_PNG] * 2
    assert answer.usage is not None
    assert answer.model_extra == {
        "background": "opaque",
        "output_format": "png",
        "quality": "low",
        "size": "1024x1024",
    }
    usage = answer.job_usage()
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, 544)
    assert usage.total_tokens == 547


def test_a_dall_e_model_gets_response_format_and_answers_a_url_with_its_revised_prompt() -> None:
    with FakeOpenAI(api_key=KEY) as fake:
        answer = run(OPENAI, fake.base_url, drawer(_request(response_format="url"), "dall-e-3"))
        [sent] = fake.requests

    assert sent.json["response_format"] == "url"
    [image] = answer.data
    assert image.url == f"{fake.origin}/generated/0.png"
    assert image.revised_prompt == "A detailed rendering of a red fox"
    assert answer.usage is None
    assert answer.job_usage().total_tokens == 0  # DALL·E reports no tokens


@pytest.mark.parametrize("name", ["images_gpt_image_1.json", "images_dall_e_3.json"])
def test_openais_documented_answers_are_read(name: str) -> None:
    documented = fixture_json("openai", name)
    with FakeOpenAI(api_key=KEY) as fake:
        fake.script(Reply(body=documented))
        answer = run(OPENAI, fake.base_url, drawer(_request(), "gpt-image-1"))

    assert answer.model_dump(mode="json", exclude_none=True) == documented


def test_an_upstream_refusal_is_an_invalid_request_with_the_vendors_message() -> None:
    with FakeOpenAI(api_key=KEY) as fake, pytest.raises(InvalidRequest) as raised:
        run(OPENAI, fake.base_url, drawer(_request(n=2), "dall-e-3"))

    assert raised.value.status_code == 400
    assert "n=1" in raised.value.message


def test_an_answer_without_an_image_is_malformed() -> None:
    with FakeOpenAI(api_key=KEY) as fake:
        fake.script(Reply(body={"created": 1, "data": [{"revised_prompt": "no image"}]}))
        with pytest.raises(MalformedResponse):
            run(OPENAI, fake.base_url, drawer(_request(), "dall-e-3"))


@pytest.mark.parametrize("style", ["deployments", "v1"])
def test_azure_draws_on_the_deployment_with_its_filter_results_kept(style: str) -> None:
    vendor = Vendor("azure_openai", FakeAzureOpenAI, "dalle3", options={"api_style": style})
    with FakeAzureOpenAI(api_key=KEY, deployments=("dalle3",), model_name="dall-e-3") as fake:
        answer = run(vendor, fake.base_url, drawer(_request(style="natural"), "dalle3"))
        [sent] = fake.requests

    if style == "v1":
        assert (sent.path, sent.query) == ("/openai/v1/images/generations", {})
    else:
        assert sent.path == "/openai/deployments/dalle3/images/generations"
        assert sent.query == {"api-version": DEFAULT_API_VERSION}
    assert sent.headers["api-key"] == KEY
    assert sent.json == {"model": "dalle3", "prompt": "a red fox", "style": "natural"}
    [image] = answer.data
    assert image.url is not None
    assert image.model_extra == {
        "prompt_filter_results": FILTER_OK,
        "content_filter_results": FILTER_OK,
    }


def test_an_azure_gpt_image_deployment_gets_no_response_format_and_answers_bytes() -> None:
    vendor = Vendor("azure_openai", FakeAzureOpenAI, "gpt-image-1", {"api_version": "2025-04-01"})
    with FakeAzureOpenAI(
        api_key=KEY, deployments=("gpt-image-1",), model_name="gpt-image-1"
    ) as fake:
        request = _request(response_format="b64_json", output_format="png")
        answer = run(vendor, fake.base_url, drawer(request, "gpt-image-1"))
        [sent] = fake.requests

    assert sent.query == {"api-version": "2025-04-01"}
    assert "response_format" not in sent.json
    [image] = answer.data
    assert base64.b64decode(image.b64_json or "") == ONE_PIXEL_PNG
    assert image.model_extra == {}  # a GPT image model's carry no filter results
    assert answer.usage is not None


def test_azures_documented_answer_is_read() -> None:
    documented = fixture_json("azure_openai", "images_generation.json")
    with FakeAzureOpenAI(api_key=KEY, deployments=("dalle3",)) as fake:
        fake.script(Reply(body=documented))
        answer = run(AZURE, fake.base_url, drawer(_request(), "dalle3"))

    assert answer.model_dump(mode="json", exclude_none=True) == documented


def test_azure_legacy_completions_go_to_the_deployments_completions_url() -> None:
    request = TextCompletionRequest.model_validate(
        {"model": "alias", "prompt": "Say this is a test", "max_tokens": 7}
    )

    async def complete(provider: OpenAIProvider) -> TextCompletion:
        return await provider.complete_text(request, model="instruct-prod")

    with FakeAzureOpenAI(api_key=KEY, deployments=("instruct-prod",)) as fake:
        answer = run(AZURE, fake.base_url, complete)
        fake.script(Reply(body=text_completion({"prompt": "x"}, "from v1")))
        v1 = Vendor("azure_openai", FakeAzureOpenAI, "x", options={"api_style": "v1"})
        via_v1 = run(v1, fake.base_url, complete)
        deployment_call, v1_call = fake.requests

    assert deployment_call.path == "/openai/deployments/instruct-prod/completions"
    assert deployment_call.query == {"api-version": DEFAULT_API_VERSION}
    assert deployment_call.json == {
        "model": "instruct-prod",
        "prompt": "Say this is a test",
        "max_tokens": 7,
    }
    assert answer.choices[0].text == fake.content
    assert (v1_call.path, v1_call.query) == ("/openai/v1/completions", {})
    assert via_v1.choices[0].text == "from v1"


def test_blackbox_draws_each_image_with_a_chat_completion_of_its_image_model() -> None:
    with FakeBlackbox(api_key=KEY) as fake:
        answer = run(BLACKBOX, fake.base_url, drawer(_request(n=2, size="512x512"), IMAGE_MODEL))
        sent = fake.requests

    assert [(s.path, s.headers["authorization"]) for s in sent] == [
        ("/chat/completions", f"Bearer {KEY}")
    ] * 2
    for call in sent:  # the prompt as one user message; size is not Blackbox's to take
        assert call.json == {
            "model": IMAGE_MODEL,
            "messages": [{"role": "user", "content": "a red fox"}],
        }
    urls = sorted(image.url or "" for image in answer.data)
    assert urls == [f"https://replicate.delivery/fake/{n}/out.webp" for n in (1, 2)]


def test_blackboxs_documented_answer_is_read() -> None:
    documented = fixture_json("blackbox", "image_generation.json")
    with FakeBlackbox(api_key=KEY) as fake:
        fake.script(Reply(body=documented))
        answer = run(BLACKBOX, fake.base_url, drawer(_request(), IMAGE_MODEL))

    [image] = answer.data
    assert image.url == documented["choices"][0]["message"]["content"]


def test_blackbox_refuses_bytes_and_an_answer_that_is_no_url() -> None:
    with FakeBlackbox(api_key=KEY) as fake:
        with pytest.raises(InvalidRequest) as refused:
            run(BLACKBOX, fake.base_url, drawer(_request(response_format="b64_json"), IMAGE_MODEL))
        assert fake.requests == []  # refused before any call
        with pytest.raises(MalformedResponse):
            run(BLACKBOX, fake.base_url, drawer(_request(), "blackboxai/openai/gpt-4o-mini"))

    assert "response_format" in refused.value.message


@pytest.mark.parametrize(
    "vendor_type", ["openai_compatible", "grok", "openrouter", "perplexity", "anthropic"]
)
def test_the_adapters_that_draw_none_refuse_with_400(vendor_type: str) -> None:
    adapter = provider_type(vendor_type)
    settings = Vendor(vendor_type, FakeOpenAI, "m").settings("http://127.0.0.1:9")

    async def draw() -> ImagesResponse:
        async with build_http_client(max_connections=1) as http:
            provider = adapter(name=vendor_type, settings=settings, http=http)
            return await provider.generate_images(_request(), model="m")

    with pytest.raises(InvalidRequest) as raised:
        asyncio.run(draw())
    assert adapter.serves_images is False
    assert raised.value.status_code == 400
    assert "does not serve image generation" in raised.value.message


def _png_chunks(data: bytes) -> dict[bytes, bytes]:
    """A PNG's chunks by type, each CRC checked."""
    assert data.startswith(PNG_SIGNATURE)
    chunks, at = {}, len(PNG_SIGNATURE)
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks[kind] = body
        at += 12 + length
    return chunks


def test_the_mocks_images_are_valid_deterministic_pngs() -> None:
    async def draw() -> ImagesResponse:
        async with build_http_client(max_connections=1) as http:
            provider = MockProvider(name="mock", settings=ProviderSettings(type="mock"), http=http)
            return await provider.generate_images(_request(n=2), model="mock")

    answer = asyncio.run(draw())

    first, second = (base64.b64decode(image.b64_json or "") for image in answer.data)
    assert first == mock_png("a red fox", 0)
    assert second == mock_png("a red fox", 1)
    assert first != second
    chunks = _png_chunks(first)
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (width, height, depth, colour) == (MOCK_IMAGE_SIDE, MOCK_IMAGE_SIDE, 8, 2)
    rows = zlib.decompress(chunks[b"IDAT"])
    assert len(rows) == MOCK_IMAGE_SIDE * (1 + 3 * MOCK_IMAGE_SIDE)
    assert answer.usage is not None
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (3, 128)
