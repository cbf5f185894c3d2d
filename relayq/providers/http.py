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

from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from relayq.providers.errors import (
    MalformedResponse,
    ProviderConnectionError,
    ProviderTimeout,
)
from relayq.settings import ProviderSettings

__all__ = ["build_http_client", "request_timeout", "transport_errors"]

_FALLBACK_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
"""Used only by a request sent without its own timeout (adapters always pass one)."""


def build_http_client(*, max_connections: int) -> httpx.AsyncClient:
    """The process-wide upstream client: httpx's API on an aiohttp connection pool.

    ``max_connections`` caps open connections across all hosts; calls beyond it
    wait for a free one (bounded by the request's ``pool`` timeout). The
    client reads no proxy or certificate settings from the environment: relayq
    is configured through :class:`relayq.settings.Settings` alone. Close it
    with ``await client.aclose()`` (or ``async with``) on the loop that used it.
    """
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return httpx.AsyncClient(
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
