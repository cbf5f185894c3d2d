"""The workers' shared upstream HTTP client, and its failures in our error tree.

One :class:`UpstreamClient` per worker process, created at start-up and closed
at shutdown, carries every provider call over one ``aiohttp.ClientSession``.
Adapters build an :class:`UpstreamRequest` (a plain value, so request building
stays pure); :class:`~relayq.providers.base.HTTPProvider` sends it through
:func:`send_checked`.

Why aiohttp alone. The workers used to call through httpx on the aiohttp
transport from ``httpx-aiohttp``. Measured on a loopback mock, 500 concurrent
streamed calls of one token, CPU per call in the calling process, the
adapter's own parsing included: 0.32 to 0.44 ms through httpx (its request and
response models, URL merging, header encoding, its four-generator line reading
and the transport's conversion), 0.14 to 0.17 ms through this client, 0.10 to
0.15 ms for a bare aiohttp call that parses no chunk. That CPU is on the
critical path of every job.

Timeouts. Each request carries a :class:`Timeout` from
:func:`request_timeout`, applied to that request alone as an
``aiohttp.ClientTimeout``: ``connect`` → ``sock_connect``, ``read`` →
``sock_read`` (the longest silence between bytes, while waiting for the
headers and while reading the body), ``pool`` → aiohttp's ``connect`` (waiting
for a free pooled connection plus connecting). There is no total deadline: a
stream may run as long as bytes keep coming. The tests pin this down against
stalling fake servers.

Errors. :func:`transport_errors` maps aiohttp's exceptions: a timeout to
:class:`ProviderTimeout`, a body whose content-encoding cannot be decoded to
:class:`MalformedResponse`, any other ``aiohttp.ClientError`` (refused, reset,
a body cut short) to :class:`ProviderConnectionError`.

Lines. :meth:`UpstreamResponse.aiter_lines` splits the body's bytes on
``\\n``, ``\\r\\n`` and a lone ``\\r`` (the line endings of server-sent events)
and decodes each line as UTF-8, without a generator chain per line.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

import aiohttp
import certifi
import orjson
from aiohttp.http_exceptions import ContentEncodingError

from relayq.config.settings import ProviderSettings
from relayq.providers.errors import (
    MalformedResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
)

__all__ = [
    "ErrorMapper",
    "LineSplitter",
    "Timeout",
    "UpstreamClient",
    "UpstreamRequest",
    "UpstreamResponse",
    "build_http_client",
    "decode_json",
    "request_timeout",
    "send_checked",
    "transport_errors",
]

_KEEPALIVE_SECONDS = 5.0
"""How long an idle pooled connection is kept (httpx's default, which we had)."""


@dataclass(frozen=True, slots=True)
class Timeout:
    """One request's limits, in seconds; None for no limit. There is no total deadline."""

    read: float | None
    """The longest silence between bytes, before the headers and within the body."""
    connect: float | None
    """Opening a connection."""
    pool: float | None
    """Waiting for a free pooled connection plus opening it."""

    def as_aiohttp(self) -> aiohttp.ClientTimeout:
        """The same limits in aiohttp's terms."""
        return aiohttp.ClientTimeout(
            total=None, connect=self.pool, sock_read=self.read, sock_connect=self.connect
        )


def request_timeout(settings: ProviderSettings) -> Timeout:
    """The per-request timeout for one provider: its read and connect limits.

    Waiting for a pooled connection is bounded by the read limit.
    """
    return Timeout(
        read=settings.read_timeout, connect=settings.connect_timeout, pool=settings.read_timeout
    )


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One HTTP request to an upstream, as adapters build it: a value, no I/O."""

    method: str
    url: str
    headers: Mapping[str, str]
    timeout: Timeout
    body: bytes | None = None

    @classmethod
    def post_json(
        cls, url: str, *, json_body: object, headers: Mapping[str, str], timeout: Timeout
    ) -> Self:
        """A POST of ``json_body`` as compact UTF-8 JSON (as httpx encoded it).

        ``Content-Type: application/json`` is added unless ``headers`` set one.
        NaN and infinities are refused (ValueError): they are not JSON.
        """
        body = json.dumps(
            json_body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()
        if not any(name.lower() == "content-type" for name in headers):
            headers = {**headers, "Content-Type": "application/json"}
        return cls("POST", url, headers, timeout, body)

    @classmethod
    def get(
        cls,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str],
        timeout: Timeout,
    ) -> Self:
        """A GET of ``url`` with ``params`` appended as its query."""
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        return cls("GET", url, headers, timeout)


class LineSplitter:
    """Splits a body's bytes into lines, fed chunk by chunk as they arrive; no I/O.

    A line ends at ``\\n``, ``\\r\\n`` or a lone ``\\r``, as in server-sent
    events; lines come without their endings, decoded as UTF-8 (bad bytes
    replaced). A line ending in ``\\r`` is given at once, and a ``\\n``
    opening the next chunk is then taken as the rest of its ending, not as an
    empty line. Bytes are split before decoding: no UTF-8 sequence contains
    ``\\r`` or ``\\n``, so a character split across chunks stays whole.
    """

    __slots__ = ("_after_cr", "_pending")

    def __init__(self) -> None:
        self._pending = b""
        self._after_cr = False

    def feed(self, chunk: bytes) -> list[str]:
        """The lines ``chunk`` completes, in order."""
        if not chunk:
            return []
        if self._after_cr:
            self._after_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._after_cr = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        if self._pending:
            lines[0] = self._pending + lines[0]
        self._pending = lines.pop()
        return [line.decode("utf-8", "replace") for line in lines]

    def flush(self) -> list[str]:
        """The last line, when the body ended without a line ending after it."""
        pending, self._pending = self._pending, b""
        return [pending.decode("utf-8", "replace")] if pending else []


class _LineBatches:
    """Async iteration over a body's lines, one list per read of whatever bytes arrived.

    One await per read, not per line: a streamed chunk is two lines (its
    ``data:`` line and the blank line that ends it), and a loop over lines that
    resumes a coroutine per line cost a busy worker a few µs a token.
    """

    __slots__ = ("_content", "_ended", "_splitter")

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content
        self._splitter = LineSplitter()
        self._ended = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> list[str]:
        while not self._ended:
            chunk = await self._content.readany()
            if not chunk:
                self._ended = True
                lines = self._splitter.flush()
            else:
                lines = self._splitter.feed(chunk)
            if lines:
                return lines
        raise StopAsyncIteration


class _Lines:
    """Async iteration over a body's lines, reading whatever bytes have arrived."""

    __slots__ = ("_content", "_ended", "_ready", "_splitter")

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content
        self._splitter = LineSplitter()
        self._ready: list[str] = []  # reversed: the next line is last
        self._ended = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str:
        while not self._ready:
            if self._ended:
                raise StopAsyncIteration
            chunk = await self._content.readany()
            if chunk:
                self._ready = self._splitter.feed(chunk)
            else:
                self._ended = True
                self._ready = self._splitter.flush()
            self._ready.reverse()
        return self._ready.pop()


class UpstreamResponse:
    """An upstream's answer, its body still to be read; open until released."""

    __slots__ = ("_response", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code: int = response.status
        self.headers: Mapping[str, str] = response.headers
        """Case-insensitive; the first value of a repeated header."""

    async def aread(self) -> bytes:
        """The whole body, decompressed."""
        return await self._response.read()

    def aiter_lines(self) -> AsyncIterator[str]:
        """The body's lines as they arrive (see :class:`LineSplitter`)."""
        return _Lines(self._response.content)

    def aiter_line_batches(self) -> AsyncIterator[list[str]]:
        """The body's lines as they arrive, a list per read (see :class:`_LineBatches`)."""
        return _LineBatches(self._response.content)

    def release(self) -> None:
        """Give the connection back to the pool (closed instead if the body was not read)."""
        self._response.release()


class UpstreamClient:
    """The process-wide upstream client: one aiohttp session, its pool shared by all hosts.

    Built by :func:`build_http_client`. The session is opened on first use, on
    the running loop, and closed by :meth:`aclose` (or ``async with``).
    """

    def __init__(self, *, max_connections: int) -> None:
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            limit_per_host=0,
            keepalive_timeout=_KEEPALIVE_SECONDS,
            ssl=ssl.create_default_context(cafile=certifi.where()),
        )
        # A cookie an upstream set on one key's call would ride along on every
        # other key's, so none is kept; the environment configures no proxy.
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
        )
        return self._session

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send ``request`` and return once its headers arrived, the body unread.

        Redirects are not followed. Raises aiohttp's exceptions; callers go
        through :func:`send_checked`, which maps them and releases the response.
        """
        session = self._session or self._open()
        response = await session.request(
            request.method,
            request.url,
            headers=request.headers,
            data=request.body,
            timeout=request.timeout.as_aiohttp(),
            allow_redirects=False,
        )
        return UpstreamResponse(response)

    async def aclose(self) -> None:
        """Close the session and its pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def build_http_client(*, max_connections: int) -> UpstreamClient:
    """The process-wide upstream client.

    ``max_connections`` caps open connections across all hosts; calls beyond it
    wait for a free one (bounded by the request's ``pool`` timeout). The
    client reads no proxy or certificate settings from the environment (relayq
    is configured through :class:`relayq.config.settings.Settings` alone; servers are
    verified against certifi's CA bundle, as httpx did) and keeps no cookies
    from one call to the next. Close it with ``await client.aclose()`` (or
    ``async with``) on the loop that used it.
    """
    return UpstreamClient(max_connections=max_connections)


@contextmanager
def transport_errors(provider: str) -> Iterator[None]:
    """Turn aiohttp failures raised inside into provider errors.

    Wrap every await that touches the network (sending, reading the body,
    iterating a stream). Errors already in our tree pass through untouched.
    """
    try:
        yield
    except TimeoutError as exc:  # aiohttp's ServerTimeoutError family is one too
        detail = f": {exc}" if str(exc) else ""
        raise ProviderTimeout(f"{provider}: timed out{detail}") from exc
    except aiohttp.ClientPayloadError as exc:
        if isinstance(exc.__cause__, ContentEncodingError):
            raise MalformedResponse(f"{provider}: undecodable response body: {exc}") from exc
        raise ProviderConnectionError(f"{provider}: connection failed: {exc}") from exc
    except aiohttp.ClientError as exc:
        raise ProviderConnectionError(f"{provider}: connection failed: {exc}") from exc


def decode_json(content: bytes | str, *, provider: str) -> Any:
    """A vendor's JSON body or event; anything else is a :class:`MalformedResponse`.

    orjson first (a fifth of ``json``'s time, per streamed chunk); ``json`` for
    what orjson refuses (NaN, lone surrogates). An integer past 64 bits comes as
    a float.
    """
    try:
        return orjson.loads(content)
    except ValueError:
        pass  # what orjson refuses and json takes: NaN, lone surrogates
    try:
        return json.loads(content)
    except ValueError as exc:
        raise MalformedResponse(f"{provider}: response is not JSON: {exc}") from exc


ErrorMapper = Callable[[int, Mapping[str, str], bytes], ProviderError]
"""Turns a non-2xx answer (status, headers, body) into the vendor's mapped error."""


@asynccontextmanager
async def send_checked(
    http: UpstreamClient, request: UpstreamRequest, *, provider: str, on_error: ErrorMapper
) -> AsyncIterator[UpstreamResponse]:
    """Send; raise ``on_error``'s error for a non-2xx answer, else yield the open response.

    Network failures while the caller reads the body inside the ``async with``
    are mapped to the error tree too, and the response is always released.
    """
    with transport_errors(provider):
        response = await http.send(request)
        try:
            if not 200 <= response.status_code < 300:
                content = await response.aread()
                raise on_error(response.status_code, response.headers, content)
            yield response
        finally:
            response.release()
