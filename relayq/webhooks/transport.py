"""Sending one webhook attempt: a POST whose every failure is an answer, not an exception.

The client is httpx on the aiohttp transport, as for providers, with its
own pool and a :class:`GuardedResolver`, so a
host is checked at the moment it is resolved for connecting. Redirects are
never followed (a 3xx is a failed attempt: the receiver should be fixed,
not trusted to send us elsewhere), and no proxy or certificate settings are
read from the environment.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from httpx_aiohttp import AiohttpTransport

import relayq
from relayq.providers.retry_after import parse_retry_after
from relayq.schemas.destinations import DestinationRefused, address_refusal, literal_refusal

__all__ = ["Answer", "GuardedResolver", "build_webhook_client", "post_webhook"]

_USER_AGENT = f"relayq-webhooks/{relayq.__version__}"


@dataclass(frozen=True, kw_only=True)
class Answer:
    """What one attempt came to."""

    latency_ms: float
    status_code: int | None = None
    """None when no answer came (refused destination, timeout, connection error)."""
    error: str | None = None
    retry_after: float | None = None
    """Seconds the receiver asked us to wait (``Retry-After``)."""

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def build_webhook_client(*, allow_private: bool, max_connections: int) -> httpx.AsyncClient:
    """The process's client for receivers. Create and close it on the loop that uses it."""

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=max_connections, resolver=GuardedResolver(allow_private=allow_private)
        )
        return aiohttp.ClientSession(connector=connector, trust_env=False)

    return httpx.AsyncClient(
        transport=AiohttpTransport(client=session, trust_env=False),
        trust_env=False,
        follow_redirects=False,
    )


async def post_webhook(
    client: httpx.AsyncClient,
    *,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout_seconds: float,
    allow_private: bool,
) -> Answer:
    """POST ``body`` to ``url``; the answer's status, or why there was none."""
    started = time.perf_counter()

    def answer(
        *,
        status_code: int | None = None,
        error: str | None = None,
        retry_after: float | None = None,
    ) -> Answer:
        latency_ms = (time.perf_counter() - started) * 1000
        return Answer(
            latency_ms=latency_ms, status_code=status_code, error=error, retry_after=retry_after
        )

    try:
        refusal = literal_refusal(url, allow_private=allow_private)
        request = client.build_request(
            "POST",
            url,
            content=body,
            headers={"content-type": "application/json", "user-agent": _USER_AGENT, **headers},
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 10.0)),
        )
    except (ValueError, httpx.InvalidURL) as exc:  # checked at registration; never retried into
        return answer(error=f"invalid URL: {exc}")
    if refusal is not None:
        return answer(error=f"destination refused: {refusal}")
    try:
        async with asyncio.timeout(timeout_seconds):
            response = await client.send(request, stream=True)
            # The body is not read: only the status matters, and it may be large.
            await response.aclose()
    except TimeoutError:
        return answer(error=f"timed out after {timeout_seconds:g}s")
    except (httpx.HTTPError, aiohttp.ClientError, OSError) as exc:
        return answer(error=_failure(exc))
    status = response.status_code
    retry_after = response.headers.get("retry-after")
    return answer(
        status_code=status,
        error=_redirect(response) if 300 <= status < 400 else None,
        retry_after=parse_retry_after(retry_after) if retry_after else None,
    )


def _redirect(response: httpx.Response) -> str:
    location = response.headers.get("location", "")
    return f"redirect to {location!r} not followed" if location else "redirect not followed"


def _failure(exc: BaseException) -> str:
    """Why no answer came, told apart by the exception's causes."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, DestinationRefused):
            return f"destination refused: {cause}"
        cause = cause.__cause__ or cause.__context__
    inner = exc.__cause__
    if isinstance(exc, httpx.TimeoutException) and (
        # The transport calls every connection failure a ConnectTimeout.
        not isinstance(inner, aiohttp.ClientError) or isinstance(inner, TimeoutError)
    ):
        return f"timed out: {exc}"
    return f"connection failed: {inner or exc}"


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing names that resolve to an address we do not call.

    Any refused address fails the whole lookup: the connection is made to
    the addresses checked here, never to a second answer.
    """

    def __init__(self, *, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._resolver = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        for result in results:
            refusal = address_refusal(
                ipaddress.ip_address(result["host"].split("%")[0]),
                allow_private=self._allow_private,
            )
            if refusal is not None:
                raise DestinationRefused(f"{host} is refused: {refusal}")
        return results

    async def close(self) -> None:
        await self._resolver.close()
