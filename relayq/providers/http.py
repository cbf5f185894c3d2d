"""The worker's shared upstream HTTP client, and its failures in our error tree.

One :class:`httpx.AsyncClient` per worker process, created at start-up and
closed at shutdown, carries every provider call. It runs on the aiohttp
transport from ``httpx-aiohttp``: measured here, it holds hundreds of calls in
flight where httpx's own pool stalls (design brief, decision 3).

Timeouts. Adapters pass :func:`request_timeout` on each request. httpx puts it
in the request's ``timeout`` extension and ``AiohttpTransport`` (0.2.0) turns
that into an ``aiohttp.ClientTimeout`` for that request alone: ``connect`` →
``sock_connect``, ``read`` → ``sock_read`` (the longest silence between bytes,
while waiting for the headers and while reading the body, as in httpx), and
``pool`` → aiohttp's ``connect`` (waiting for a free pooled connection plus
connecting). There is no total deadline, and ``write`` is ignored. So the
timeouts are honoured without an ``asyncio.timeout`` of our own; the tests
pin this down against a stalling fake server.

Errors. The transport maps aiohttp's exceptions to httpx's, but maps every
``aiohttp.ClientConnectionError`` it has no closer match for, a refused
connection or a server that hung up included, to ``httpx.ConnectTimeout``.
:func:`transport_errors` looks at the aiohttp cause to tell a real timeout
from a failed connection.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from relayq.providers.errors import (
    MalformedResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
)
from relayq.settings import ProviderSettings

__all__ = [
    "build_http_client",
    "decode_json",
    "request_timeout",
    "send_checked",
    "transport_errors",
]

_FALLBACK_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
"""Used only by a request sent without its own timeout (adapters always pass one)."""


class _NoCookies(httpx.Cookies):
    """A jar that keeps nothing: ``Set-Cookie`` answers are not stored."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _UpstreamClient(httpx.AsyncClient):
    """httpx's client that keeps no cookies between calls.

    One client carries every key's calls, so a cookie an upstream set on one
    call (a CDN's bot-management cookie, say) would ride along on every other
    key's. Reading each answer's cookies into a jar also cost a few percent of
    a worker's CPU per job (urllib's cookie machinery, built per response).
    """

    @property
    def cookies(self) -> httpx.Cookies:
        return _NoCookies()

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        pass  # httpx.AsyncClient.__init__ sets its own; none is kept


def build_http_client(*, max_connections: int) -> httpx.AsyncClient:
    """The process-wide upstream client: httpx's API on an aiohttp connection pool.

    ``max_connections`` caps open connections across all hosts; calls beyond it
    wait for a free one (bounded by the request's ``pool`` timeout). The
    client reads no proxy or certificate settings from the environment (relayq
    is configured through :class:`relayq.settings.Settings` alone) and keeps
    no cookies from one call to the next. Close it
    with ``await client.aclose()`` (or ``async with``) on the loop that used it.
    """
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return _UpstreamClient(
        transport=AiohttpTransport(limits=limits, trust_env=False),
        timeout=_FALLBACK_TIMEOUT,
        trust_env=False,
        follow_redirects=False,
    )


def request_timeout(settings: ProviderSettings) -> httpx.Timeout:
    """The per-request timeout for one provider: its read and connect limits."""
    return httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)


def _is_real_timeout(exc: httpx.TimeoutException) -> bool:
    """Whether a timeout from the transport was one, not a mislabelled disconnect."""
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        return isinstance(cause, TimeoutError)
    return True


@contextmanager
def transport_errors(provider: str) -> Iterator[None]:
    """Turn httpx and aiohttp failures raised inside into provider errors.

    Wrap every await that touches the network (sending, reading the body,
    iterating a stream). Errors already in our tree pass through untouched.
    """
    try:
        yield
    except httpx.TimeoutException as exc:
        if _is_real_timeout(exc):
            raise ProviderTimeout(f"{provider}: timed out: {exc}") from exc
        raise ProviderConnectionError(f"{provider}: connection failed: {exc}") from exc
    except httpx.DecodingError as exc:
        raise MalformedResponse(f"{provider}: undecodable response body: {exc}") from exc
    except (httpx.RequestError, aiohttp.ClientError) as exc:
        raise ProviderConnectionError(f"{provider}: connection failed: {exc}") from exc
    except TimeoutError as exc:
        raise ProviderTimeout(f"{provider}: timed out") from exc


def decode_json(content: bytes | str, *, provider: str) -> Any:
    """A vendor's JSON body or event; anything else is a :class:`MalformedResponse`."""
    try:
        return json.loads(content)
    except ValueError as exc:
        raise MalformedResponse(f"{provider}: response is not JSON: {exc}") from exc


ErrorMapper = Callable[[int, Mapping[str, str], bytes], ProviderError]
"""Turns a non-2xx answer (status, headers, body) into the vendor's mapped error."""


@asynccontextmanager
async def send_checked(
    http: httpx.AsyncClient, request: httpx.Request, *, provider: str, on_error: ErrorMapper
) -> AsyncIterator[httpx.Response]:
    """Send; raise ``on_error``'s error for a non-2xx answer, else yield the open response.

    Network failures while the caller reads the body inside the ``async with``
    are mapped to the error tree too, and the response is always closed.
    """
    with transport_errors(provider):
        response = await http.send(request, stream=True)
        try:
            if not response.is_success:
                content = await response.aread()
                raise on_error(response.status_code, response.headers, content)
            yield response
        finally:
            await response.aclose()
