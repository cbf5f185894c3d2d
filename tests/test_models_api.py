"""GET /v1/models: routes, aliases, and what providers publish, as the openai SDK reads it."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import KeyFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.jobs import body, submit, wait_for_status
from tests.stack import Stack


@pytest.fixture
def sdk(stack: Stack, make_key: KeyFactory) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=make_key(), max_retries=0)


def test_lists_routes_aliases_and_published_models(sdk: openai.OpenAI) -> None:
    ids = [model.id for model in sdk.models.list()]

    assert {"mock", "mock-idle", "gpt-4o-mini", "mock-cached", "mock-cached-alias"} <= set(ids)
    published = [i for i in ids if i.startswith("openai/")]
    assert published, ids
    model = sdk.models.retrieve(published[0])
    assert model.owned_by == "openai"
    assert sdk.models.retrieve("mock").owned_by == "relayq"


def test_an_unknown_model_is_a_404(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        sdk.models.retrieve("no-such-model")

    assert "no-such-model" in str(raised.value)


def test_a_published_model_is_routable_by_provider_and_name(
    client: httpx.Client, fake_openai: FakeOpenAI
) -> None:
    listed = client.get("/v1/models").json()["data"]
    published = next(m["id"] for m in listed if m["id"].startswith("openai/"))
    before = len(fake_openai.requests)

    job = submit(client, body("direct", model=published))
    done = wait_for_status(client, job["id"], {"succeeded", "failed"})

    assert done["status"] == "succeeded", done
    sent = [r for r in fake_openai.requests[before:] if r.path == "/v1/chat/completions"]
    assert sent[-1].json["model"] == published.removeprefix("openai/")
