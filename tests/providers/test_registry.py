"""The provider registry, the status mapping every adapter shares, the public surface."""

from __future__ import annotations

import asyncio
import importlib

import pytest

import relayq.providers
from relayq.config.settings import ProviderSettings
from relayq.providers import PROVIDER_TYPES, build_providers, provider_type
from relayq.providers.errors import (
    AuthenticationFailed,
    InvalidRequest,
    MalformedResponse,
    ModelNotFound,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    error_for_status,
)
from relayq.providers.http import build_http_client
from relayq.providers.mock import MockProvider
from relayq.providers.openai import OpenAIProvider

MODULES = [
    "relayq.providers",
    "relayq.providers.base",
    "relayq.providers.errors",
    "relayq.providers.http",
    "relayq.providers.mock",
    "relayq.providers.openai",
    "relayq.providers.retry_after",
    "relayq.providers.sse",
]


def test_registry_names_each_adapter_by_its_type() -> None:
    assert provider_type("mock") is MockProvider
    assert provider_type("openai") is OpenAIProvider
    for type_name in ("mock", "openai"):
        assert provider_type(type_name).type_name == type_name
    assert {"anthropic", "gemini", "cohere", "azure_openai"} <= set(PROVIDER_TYPES)


def test_build_providers_shares_one_client() -> None:
    async def build() -> None:
        async with build_http_client(max_connections=10) as http:
            providers = build_providers(
                {
                    "local": ProviderSettings(type="mock"),
                    "oai": ProviderSettings(type="openai", base_url="http://127.0.0.1:9/v1"),
                },
                http,
            )
            assert isinstance(providers["local"], MockProvider)
            assert isinstance(providers["oai"], OpenAIProvider)
            assert providers["oai"].name == "oai"
            assert all(provider.http is http for provider in providers.values())

    asyncio.run(build())


def test_unknown_type_lists_the_supported_ones() -> None:
    async def build() -> None:
        async with build_http_client(max_connections=10) as http:
            build_providers({"fancy": ProviderSettings(type="fancy-ai")}, http)

    with pytest.raises(
        ValueError, match=r"'fancy'.*'fancy-ai'.*supported types: anthropic, azure_openai, "
    ):
        asyncio.run(build())


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, InvalidRequest),
        (413, InvalidRequest),
        (422, InvalidRequest),
        (401, AuthenticationFailed),
        (403, AuthenticationFailed),
        (404, ModelNotFound),
        (408, ProviderTimeout),
        (409, ProviderUnavailable),
        (429, RateLimited),
        (500, ProviderUnavailable),
        (503, ProviderUnavailable),
        (529, ProviderUnavailable),
        (302, MalformedResponse),
    ],
)
def test_error_for_status(status: int, error_type: type[ProviderError]) -> None:
    error = error_for_status(status, "why", retry_after=3)
    assert type(error) is error_type
    assert (error.message, error.status_code) == ("why", status)
    if isinstance(error, RateLimited):
        assert error.retry_after == 3


@pytest.mark.parametrize("module_name", MODULES)
def test_public_names_exist(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__all__
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.{name}"


def test_package_exports_the_registry() -> None:
    assert set(relayq.providers.__all__) >= {"PROVIDER_TYPES", "Provider", "build_providers"}
