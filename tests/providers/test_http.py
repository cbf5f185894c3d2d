"""The shared HTTP client and the mapping of transport failures to our errors."""

from __future__ import annotations

import asyncio

import aiohttp
import httpx
import pytest
from httpx_aiohttp import AiohttpTransport

from relayq.providers.errors import (
    InvalidRequest,
    MalformedResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
)
from relayq.providers.http import build_http_client, request_timeout, transport_errors
from relayq.settings import ProviderSettings
from tests.fakes.openai_server import FakeOpenAI, Reply


def test_client_runs_on_the_aiohttp_transport() -> None:
    async def check() -> None:
        async with build_http_client(max_connections=7) as http:
            transport = http._transport
            assert isinstance(transport, AiohttpTransport)
            assert transport.limits.max_connections == 7
            assert http.trust_env is False

    asyncio.run(check())


def test_client_talks_to_a_real_server() -> None:
    async def fetch(url: str) -> httpx.Response:
        async with build_http_client(max_connections=2) as http:
            return await http.get(url, headers={"Authorization": "Bearer k"})

    with FakeOpenAI(api_key="k") as server:
        response = asyncio.run(fetch(f"{server.base_url}/models"))
    assert response.status_code == 200
    assert response.json()["data"][0]["object"] == "model"


def test_a_cookie_an_upstream_sets_is_not_sent_on_later_calls() -> None:
    """One client carries every key's calls: what an upstream set for one call stays there."""

    async def two_calls(url: str) -> list[int]:
        async with build_http_client(max_connections=2) as http:
            statuses = []
            for _ in range(2):
                response = await http.post(
                    url,
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"Authorization": "Bearer k"},
                )
                statuses.append(response.status_code)
            return statuses

    with FakeOpenAI(api_key="k") as server:
        server.script(Reply(headers={"Set-Cookie": "__cf_bm=abc123; Path=/; HttpOnly"}))
        statuses = asyncio.run(two_calls(f"{server.base_url}/chat/completions"))
        calls = [r for r in server.requests if r.method == "POST"]
    assert statuses == [200, 200]
    assert len(calls) == 2
    assert all("cookie" not in {name.lower() for name in call.headers} for call in calls)


def test_request_timeout_comes_from_the_provider_settings() -> None:
    timeout = request_timeout(ProviderSettings(type="x", read_timeout=30, connect_timeout=2))
    assert (timeout.read, timeout.connect, timeout.pool) == (30, 2, 30)


def raised_from(exc: BaseException, cause: BaseException | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as raised, transport_errors("p"):
        raise exc from cause
    assert raised.value.__cause__ is exc
    return raised.value


@pytest.mark.parametrize(
    ("exc", "cause", "error_type"),
    [
        (httpx.ReadTimeout("slow"), aiohttp.SocketTimeoutError("slow"), ProviderTimeout),
        (httpx.ConnectTimeout("slow"), aiohttp.ConnectionTimeoutError("slow"), ProviderTimeout),
        (httpx.ConnectTimeout("slow"), None, ProviderTimeout),
        # httpx-aiohttp labels these ConnectTimeout; they are not timeouts
        (httpx.ConnectTimeout("gone"), aiohttp.ServerDisconnectedError(), ProviderConnectionError),
        (httpx.ConnectTimeout("no"), aiohttp.ClientConnectionError("no"), ProviderConnectionError),
        (httpx.ReadError("cut"), aiohttp.ClientPayloadError("cut"), ProviderConnectionError),
        (httpx.ConnectError("refused"), None, ProviderConnectionError),
        (httpx.RemoteProtocolError("bad"), None, ProviderConnectionError),
        (httpx.DecodingError("gzip"), None, MalformedResponse),
        (aiohttp.ServerDisconnectedError(), None, ProviderConnectionError),
        (TimeoutError(), None, ProviderTimeout),
    ],
)
def test_transport_errors_are_mapped(
    exc: BaseException, cause: BaseException | None, error_type: type[ProviderError]
) -> None:
    assert type(raised_from(exc, cause)) is error_type


def test_provider_errors_pass_through() -> None:
    with pytest.raises(InvalidRequest), transport_errors("p"):
        raise InvalidRequest("no")
