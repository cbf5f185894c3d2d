"""Every adapter serves jobs through the real API and worker, against its fake vendor.

Two more providers speak to OpenAI-compatible fakes that differ in how they
stream: ``vllm_json`` answers streamed calls with the whole answer (as
servers that ignore ``stream`` do), ``vllm_unstreamed`` is set with
``stream_upstream: false`` and never asked to stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import key_factory
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.azure_openai_server import FakeAzureOpenAI
from tests.fakes.blackbox_server import FakeBlackbox
from tests.fakes.cohere_server import FakeCohere
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.grok_server import FakeGrok
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.openrouter_server import FakeOpenRouter
from tests.fakes.perplexity_server import FakePerplexity
from tests.jobs import body, submit, wait_for_status
from tests.services import reset_database
from tests.stack import Stack

KEY = "vendor-test-key"


@dataclass(frozen=True)
class Vendor:
    adapter: str
    model: str
    fake: type[Any]
    options: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    """Provider settings besides the ones every vendor gets."""
    ignores_stream: bool = False
    """Whether the fake answers streamed calls with the whole answer."""


VENDORS = {
    "anthropic": Vendor("anthropic", "claude-sonnet-4-6", FakeAnthropic, {}),
    "gemini": Vendor("gemini", "gemini-2.5-flash", FakeGemini, {}),
    "cohere": Vendor("cohere", "command-a-03-2025", FakeCohere, {}),
    "azure_openai": Vendor("azure_openai", "gpt-4o-prod", FakeAzureOpenAI, {}),
    "perplexity": Vendor("perplexity", "sonar-pro", FakePerplexity, {}),
    "grok": Vendor("grok", "grok-4", FakeGrok, {}),
    "blackbox": Vendor("blackbox", "blackboxai/openai/gpt-4o", FakeBlackbox, {}),
    "openrouter": Vendor("openrouter", "anthropic/claude-sonnet-4", FakeOpenRouter, {}),
    "openai_compatible": Vendor("openai_compatible", "llama3", FakeOpenAI, {"preset": "vllm"}),
    "vllm_json": Vendor(
        "openai_compatible", "llama3", FakeOpenAI, {"preset": "vllm"}, ignores_stream=True
    ),
    "vllm_unstreamed": Vendor(
        "openai_compatible",
        "llama3",
        FakeOpenAI,
        {"preset": "vllm"},
        settings={"stream_upstream": False},
    ),
}


def content_for(name: str) -> str:
    return f"Answer from the {name} fake"


@dataclass
class VendorStack:
    stack: Stack
    fakes: dict[str, Any]
    key: str


@pytest.fixture(scope="module")
def vendors(
    backend: str, redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VendorStack]:
    if backend == "postgresql":
        pytest.skip("the adapters' wire formats do not depend on the database")
    database_url = f"sqlite:///{tmp_path_factory.mktemp('vendors') / 'relayq.db'}"
    reset_database(database_url)
    with ExitStack() as started:
        fakes = {
            name: started.enter_context(vendor.fake(api_key=KEY, content=content_for(name)))
            for name, vendor in VENDORS.items()
        }
        for name, vendor in VENDORS.items():
            fakes[name].ignores_stream = vendor.ignores_stream
        providers = {
            name: {
                "type": vendor.adapter,
                "base_url": fakes[name].base_url,
                "api_key": KEY,
                "read_timeout": 10,
                "options": vendor.options,
                **vendor.settings,
            }
            for name, vendor in VENDORS.items()
        }
        routes = {
            f"via-{name}": {"provider": name, "model": vendor.model}
            for name, vendor in VENDORS.items()
        }
        env = {
            "RELAYQ_PROVIDERS": json.dumps(providers),
            "RELAYQ_ROUTES": json.dumps(routes),
            "RELAYQ_WORKER__PROVIDERS": json.dumps(sorted(VENDORS)),
            "RELAYQ_KEY_PREFIX": "relayq-vendors",
        }
        logs = tmp_path_factory.mktemp("vendor-logs")
        stack = started.enter_context(
            Stack(
                database_url=database_url,
                redis_url=f"{redis_server}/12",
                logs=logs,
                env=env,
                supervise=False,
            )
        )
        stack.start_api()
        stack.start_worker()
        yield VendorStack(stack=stack, fakes=fakes, key=key_factory(database_url)())


@pytest.mark.parametrize("name", sorted(VENDORS))
def test_a_job_through_each_adapter(vendors: VendorStack, name: str) -> None:
    headers = {"Authorization": f"Bearer {vendors.key}"}
    with httpx.Client(base_url=vendors.stack.base_url, headers=headers, timeout=10) as client:
        job = submit(client, body("Hello there", model=f"via-{name}", max_tokens=64))
        done = wait_for_status(client, job["id"], {"succeeded", "failed"})

    assert done["status"] == "succeeded", done["error"]
    assert done["provider"] == name
    assert done["response"]["object"] == "chat.completion"
    assert done["response"]["choices"][0]["message"]["content"] == content_for(name)
    assert done["response"]["choices"][0]["finish_reason"] == "stop"
    assert done["usage"]["total_tokens"] > 0
    assert vendors.fakes[name].requests, "the fake vendor was not called"


@pytest.mark.parametrize("name", sorted(VENDORS))
def test_a_streamed_chat_completion_through_each_adapter(vendors: VendorStack, name: str) -> None:
    with openai.OpenAI(
        base_url=f"{vendors.stack.base_url}/v1", api_key=vendors.key, max_retries=0, timeout=20
    ) as client:
        chunks = list(
            client.chat.completions.create(
                model=f"via-{name}",
                messages=[{"role": "user", "content": "Stream please"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == content_for(name)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > 0


@pytest.mark.parametrize(
    ("name", "asked_to_stream"), [("vllm_json", True), ("vllm_unstreamed", False)]
)
def test_whole_answers_serve_streamed_jobs(
    vendors: VendorStack, name: str, asked_to_stream: bool
) -> None:
    """A whole answer to a streamed call, or to a call never asked to stream, serves a job
    whose text is streamed (``stream: true``)."""
    headers = {"Authorization": f"Bearer {vendors.key}"}
    before = len(vendors.fakes[name].requests)
    with httpx.Client(base_url=vendors.stack.base_url, headers=headers, timeout=10) as client:
        payload = body("Whole, please", model=f"via-{name}", max_tokens=64, stream=True)
        job = submit(client, payload)
        done = wait_for_status(client, job["id"], {"succeeded", "failed"})

    assert done["status"] == "succeeded", done["error"]
    assert done["response"]["choices"][0]["message"]["content"] == content_for(name)
    assert done["usage"]["total_tokens"] > 0
    calls = [r.json for r in vendors.fakes[name].requests[before:] if r.method == "POST"]
    assert calls
    assert {bool(call.get("stream")) for call in calls} == {asked_to_stream}


def test_a_job_nobody_streams_asks_for_the_whole_answer(vendors: VendorStack) -> None:
    """Text nobody reads as it comes is not streamed from the upstream either: one body
    to parse, not a chunk per token."""
    headers = {"Authorization": f"Bearer {vendors.key}"}
    fake = vendors.fakes["openai_compatible"]
    before = len(fake.requests)
    with httpx.Client(base_url=vendors.stack.base_url, headers=headers, timeout=10) as client:
        job = submit(client, body("Plain, please", model="via-openai_compatible", max_tokens=64))
        done = wait_for_status(client, job["id"], {"succeeded", "failed"})

    assert done["status"] == "succeeded", done["error"]
    assert done["response"]["choices"][0]["message"]["content"] == content_for("openai_compatible")
    assert done["usage"]["total_tokens"] > 0
    calls = [r.json for r in fake.requests[before:] if r.method == "POST"]
    assert calls
    assert not any(call.get("stream") for call in calls)


def test_the_vendor_catalogs_are_listed(vendors: VendorStack) -> None:
    with openai.OpenAI(
        base_url=f"{vendors.stack.base_url}/v1", api_key=vendors.key, max_retries=0
    ) as client:
        ids = {model.id for model in client.models.list()}

    assert {f"via-{name}" for name in VENDORS} <= ids
    for provider in ("anthropic", "gemini", "cohere", "openrouter", "grok", "openai_compatible"):
        assert any(i.startswith(f"{provider}/") for i in ids), provider
