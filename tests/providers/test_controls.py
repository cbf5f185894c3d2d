"""Per-request adapter controls: declared by adapters, checked at the edge, never sent upstream."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import pytest

from relayq.config.settings import ProviderSettings
from relayq.providers import check_controls, control_fields, controls_models
from relayq.providers.errors import InvalidRequest
from relayq.providers.http import build_http_client
from relayq.providers.mock import MockControls, MockProvider
from relayq.providers.openai import OpenAIProvider
from relayq.schemas.chat import ChatCompletionRequest
from tests.fakes.openai_server import FakeOpenAI

SCHEMAS = Path(__file__).parents[2] / "relayq" / "schemas"


def request(**extra: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    )


def test_the_mock_declares_the_only_controls() -> None:
    assert controls_models() == {"mock": MockControls}


def test_the_job_schemas_know_no_adapter() -> None:
    for module in SCHEMAS.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("relayq.providers"), module.name


def test_valid_controls_are_kept_as_parsed() -> None:
    body: dict[str, Any] = {"mock": {"tokens": "12", "fault": None}, "openai": {"x": 1}}
    assert check_controls(body) == []
    assert body == {"mock": {"tokens": 12, "fault": None}, "openai": {"x": 1}}


def test_null_controls_are_no_controls() -> None:
    body: dict[str, Any] = {"mock": None}
    assert check_controls(body) == []
    assert body == {"mock": None}


@pytest.mark.parametrize(
    ("controls", "loc", "kind"),
    [
        ({"tokens": -3}, ("mock", "tokens"), "greater_than_equal"),
        ({"speed": 2}, ("mock", "speed"), "extra_forbidden"),
        ("fast", ("mock",), "model_type"),
    ],
)
def test_invalid_controls_are_located_in_the_body(
    controls: object, loc: tuple[str, ...], kind: str
) -> None:
    (error,) = check_controls({"mock": controls})
    assert (error["loc"], error["type"]) == (loc, kind)


def test_control_fields_name_only_declared_controls() -> None:
    assert control_fields(request()) == frozenset()
    assert control_fields(request(mock={"tokens": 1}, openai=1, top_k=3)) == {"mock"}


def test_controls_are_not_sent_upstream() -> None:
    with FakeOpenAI() as fake:

        async def call() -> None:
            settings = ProviderSettings(type="openai", base_url=fake.base_url)
            async with build_http_client(max_connections=2) as http:
                adapter = OpenAIProvider(name="openai", settings=settings, http=http)
                await adapter.complete(request(mock={"tokens": 1}, top_k=3), model="m")

        asyncio.run(call())
        (sent,) = fake.requests
    assert "mock" not in sent.json
    assert sent.json["top_k"] == 3


def test_the_adapter_reads_its_controls_over_its_options() -> None:
    settings = ProviderSettings(type="mock", options={"tokens": 5, "latency_ms": 1})

    async def controls() -> MockControls:
        async with build_http_client(max_connections=1) as http:
            adapter = MockProvider(name="mock", settings=settings, http=http)
            return adapter.controls(request(mock={"tokens": 7}))

    assert asyncio.run(controls()).model_dump(exclude_unset=True) == {
        "tokens": 7,
        "latency_ms": 1,
    }


def test_invalid_controls_reaching_the_adapter_are_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match=r"invalid mock controls: mock\.tokens"):
        MockProvider.request_controls(request(mock={"tokens": -1}))
