"""The shared upstream client against real loopback servers, and its error mapping."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError

from relayq.config.settings import ProviderSettings
from relayq.providers.errors import (
    InvalidRequest,
    MalformedResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
)
from relayq.providers.http import (
    Timeout,
    UpstreamClient,
    UpstreamRequest,
    build_http_client,
    decode_json,
    request_timeout,
    send_checked,
    transport_errors,
)
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.server import ThreadedServer, closed_port

T = TypeVar("T")

PATIENT = Timeout(read=10, connect=10, pool=10)


class Gauge:
    """How many requests are being served at once, across servers; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1


class Upstream(ThreadedServer):
    """A server for the client's edge cases: slow, trickling, cut, compressed, redirecting."""

    def __init__(self, gauge: Gauge | None = None) -> None:
        super().__init__()
        self.gauge = gauge or Gauge()

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/hold", self._hold)
        app.router.add_get("/stall", self._stall)
        app.router.add_get("/trickle", self._trickle)
        app.router.add_get("/cut", self._cut)
        app.router.add_get("/gzip", self._gzip)
        app.router.add_get("/bad-gzip", self._bad_gzip)
        app.router.add_get("/redirect", self._redirect)
        app.router.add_get("/lines", self._lines)
        return app

    async def _hold(self, request: web.Request) -> web.Response:
        self.gauge.enter()
        try:
            await asyncio.sleep(float(request.query.get("seconds", "0.3")))
        finally:
            self.gauge.leave()
        return web.Response(text="held")

    async def _stall(self, request: web.Request) -> web.StreamResponse:
        """Silent for ``before`` seconds before the headers, then for ``during`` mid-body."""
        await asyncio.sleep(float(request.query.get("before", "0")))
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first\n")
        await asyncio.sleep(float(request.query.get("during", "0")))
        await response.write(b"second\n")
        await response.write_eof()
        return response

    async def _trickle(self, request: web.Request) -> web.StreamResponse:
        """Eight lines 0.1 s apart: longer in all than a read timeout of 0.3 s."""
        response = web.StreamResponse()
        await response.prepare(request)
        for index in range(8):
            await response.write(f"{index}\n".encode())
            await asyncio.sleep(0.1)
        await response.write_eof()
        return response

    async def _cut(self, request: web.Request) -> web.StreamResponse:
        """Promises 100 bytes, sends a line and hangs up."""
        response = web.StreamResponse(headers={"Content-Length": "100"})
        await response.prepare(request)
        await response.write(b"data: partial\n")
        assert request.transport is not None
        request.transport.close()
        return response

    async def _gzip(self, request: web.Request) -> web.Response:
        body = gzip.compress("one\r\ntwo\rthree\nfour, caf\u00e9".encode())
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    async def _bad_gzip(self, request: web.Request) -> web.Response:
        return web.Response(body=b"this is not gzip", headers={"Content-Encoding": "gzip"})

    async def _redirect(self, request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/gzip"})

    async def _lines(self, request: web.Request) -> web.StreamResponse:
        """Lines with every ending, sent in pieces that split endings and characters."""
        response = web.StreamResponse()
        await response.prepare(request)
        pieces = [b"a\r", b"\nb\r", b"\rc\n\n", b"d \xe2\x82", b"\xac\r", b"\n", b"tail"]
        for piece in pieces:
            await response.write(piece)
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response


class Refused(ProviderError):
    """What the tests' error mapper raises for a non-2xx answer."""


def refuse(status: int, headers: Mapping[str, str], content: bytes) -> ProviderError:
    return Refused(f"{status} {content.decode(errors='replace')}", status_code=status)


def run(action: Callable[[UpstreamClient], Awaitable[T]], *, max_connections: int = 4) -> T:
    async def go() -> T:
        async with build_http_client(max_connections=max_connections) as http:
            return await action(http)

    return asyncio.run(go())


async def fetch_text(
    http: UpstreamClient, url: str, *, limits: Timeout = PATIENT
) -> tuple[int, str]:
    request = UpstreamRequest.get(url, headers={}, timeout=limits)
    async with send_checked(http, request, provider="p", on_error=refuse) as response:
        return response.status_code, (await response.aread()).decode()


async def fetch_lines(http: UpstreamClient, url: str, *, limits: Timeout = PATIENT) -> list[str]:
    request = UpstreamRequest.get(url, headers={}, timeout=limits)
    async with send_checked(http, request, provider="p", on_error=refuse) as response:
        return [line async for line in response.aiter_lines()]


def test_client_talks_to_a_real_server() -> None:
    async def models(http: UpstreamClient) -> Any:
        request = UpstreamRequest.get(
            f"{server.base_url}/models", headers={"Authorization": "Bearer k"}, timeout=PATIENT
        )
        async with send_checked(http, request, provider="p", on_error=refuse) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("application/json")
            return json.loads(await response.aread())

    with FakeOpenAI(api_key="k") as server:
        payload = run(models)
    assert payload["data"][0]["object"] == "model"


def test_a_json_post_is_compact_utf8_labelled_json() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "caf\u00e9 \u2028"}]}
    request = UpstreamRequest.post_json(
        "http://x/v1", json_body=body, headers={"Accept": "a"}, timeout=PATIENT
    )
    assert request.method == "POST"
    assert request.body == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    assert b" " not in request.body.replace(" \u2028".encode(), b"")
    assert request.headers == {"Accept": "a", "Content-Type": "application/json"}
    own = UpstreamRequest.post_json(
        "http://x", json_body={}, headers={"content-type": "application/x"}, timeout=PATIENT
    )
    assert own.headers == {"content-type": "application/x"}
    with pytest.raises(ValueError, match="JSON"):
        UpstreamRequest.post_json(
            "http://x", json_body={"t": float("nan")}, headers={}, timeout=PATIENT
        )


def test_a_get_carries_its_params_as_the_query() -> None:
    request = UpstreamRequest.get(
        "http://x/models", params={"a": "b c/=", "n": 3}, headers={}, timeout=PATIENT
    )
    assert request.url == "http://x/models?a=b+c%2F%3D&n=3"
    more = UpstreamRequest.get("http://x/m?k=1", params={"p": "t"}, headers={}, timeout=PATIENT)
    assert more.url == "http://x/m?k=1&p=t"
    assert UpstreamRequest.get("http://x/m", headers={}, timeout=PATIENT).url == "http://x/m"


def test_a_cookie_an_upstream_sets_is_not_sent_on_later_calls() -> None:
    """One client carries every key's calls: what an upstream set for one call stays there."""

    async def two_calls(http: UpstreamClient) -> list[int]:
        statuses = []
        for _ in range(2):
            request = UpstreamRequest.post_json(
                f"{server.base_url}/chat/completions",
                json_body={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": "Bearer k"},
                timeout=PATIENT,
            )
            async with send_checked(http, request, provider="p", on_error=refuse) as response:
                await response.aread()
                statuses.append(response.status_code)
        return statuses

    with FakeOpenAI(api_key="k") as server:
        server.script(Reply(headers={"Set-Cookie": "__cf_bm=abc123; Path=/; HttpOnly"}))
        statuses = run(two_calls)
        calls = [r for r in server.requests if r.method == "POST"]
    assert statuses == [200, 200]
    assert len(calls) == 2
    assert all("cookie" not in {name.lower() for name in call.headers} for call in calls)


def test_redirects_are_not_followed() -> None:
    with Upstream() as server, pytest.raises(Refused) as refused:
        run(lambda http: fetch_text(http, f"{server.origin}/redirect"))
    assert refused.value.status_code == 302


def test_a_gzipped_body_is_decompressed_for_reading_whole_and_by_lines() -> None:
    async def both(http: UpstreamClient) -> tuple[tuple[int, str], list[str]]:
        url = f"{server.origin}/gzip"
        return await fetch_text(http, url), await fetch_lines(http, url)

    with Upstream() as server:
        (status, text), lines = run(both)
    assert (status, text) == (200, "one\r\ntwo\rthree\nfour, caf\u00e9")
    assert lines == ["one", "two", "three", "four, caf\u00e9"]


def test_a_body_that_cannot_be_decompressed_is_malformed() -> None:
    with Upstream() as server, pytest.raises(MalformedResponse, match="undecodable"):
        run(lambda http: fetch_text(http, f"{server.origin}/bad-gzip"))


def test_lines_arrive_split_on_every_ending_whatever_the_reads() -> None:
    with Upstream() as server:
        lines = run(lambda http: fetch_lines(http, f"{server.origin}/lines"))
    assert lines == ["a", "b", "", "c", "", "d \u20ac", "tail"]


def test_line_batches_give_the_same_lines_one_list_per_read() -> None:
    """The streamed adapters read a list of lines per read (one await per read, not per
    line): the same lines, split the same way, whatever the reads."""

    async def batches(http: UpstreamClient) -> list[list[str]]:
        request = UpstreamRequest.get(f"{server.origin}/lines", headers={}, timeout=PATIENT)
        async with send_checked(http, request, provider="p", on_error=refuse) as response:
            return [lines async for lines in response.aiter_line_batches()]

    with Upstream() as server:
        read = run(batches)
    assert [line for lines in read for line in lines] == ["a", "b", "", "c", "", "d \u20ac", "tail"]
    assert all(read)  # a read that completes no line gives no empty list


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b'{"a": [1, "caf\xc3\xa9"]}', {"a": [1, "caf\u00e9"]}),
        ('{"n": NaN}', {"n": float("nan")}),  # refused by orjson, taken by json
        # Past 64 bits an integer comes as a float (orjson's way; no vendor sends one).
        ('{"n": 123456789012345678901234567890}', {"n": 1.2345678901234568e29}),
        ('{"s": "\\ud800"}', {"s": "\ud800"}),
    ],
)
def test_json_bodies_decode_as_the_standard_library_decodes_them_but_huge_integers(
    body: bytes | str, value: object
) -> None:
    decoded = decode_json(body, provider="p")
    assert json.dumps(decoded) == json.dumps(value)


def test_a_body_that_is_not_json_is_malformed() -> None:
    with pytest.raises(MalformedResponse, match="p: response is not JSON"):
        decode_json(b"data: {", provider="p")


def test_the_read_timeout_bounds_the_wait_for_headers() -> None:
    timeout = Timeout(read=0.2, connect=5, pool=5)
    started = time.monotonic()
    with Upstream() as server, pytest.raises(ProviderTimeout):
        run(lambda http: fetch_text(http, f"{server.origin}/stall?before=3", limits=timeout))
    assert time.monotonic() - started < 2


def test_the_read_timeout_bounds_silence_within_the_body() -> None:
    timeout = Timeout(read=0.2, connect=5, pool=5)
    with Upstream() as server, pytest.raises(ProviderTimeout):
        run(lambda http: fetch_lines(http, f"{server.origin}/stall?during=3", limits=timeout))


def test_there_is_no_total_deadline_while_bytes_keep_coming() -> None:
    timeout = Timeout(read=0.3, connect=0.3, pool=0.3)
    started = time.monotonic()
    with Upstream() as server:
        lines = run(lambda http: fetch_lines(http, f"{server.origin}/trickle", limits=timeout))
    assert lines == [str(index) for index in range(8)]
    assert time.monotonic() - started > 0.6


def test_the_pool_is_capped_across_hosts_and_calls_beyond_it_wait() -> None:
    gauge = Gauge()

    async def six(http: UpstreamClient) -> list[tuple[int, str]]:
        urls = [f"{server.origin}/hold" for server in (first, second) for _ in range(3)]
        return await asyncio.gather(*(fetch_text(http, url) for url in urls))

    with Upstream(gauge) as first, Upstream(gauge) as second:
        answers = run(six, max_connections=2)
    assert answers == [(200, "held")] * 6
    assert gauge.most == 2


def test_the_pool_timeout_bounds_the_wait_for_a_free_connection() -> None:
    async def second_waits(http: UpstreamClient) -> None:
        holding = asyncio.create_task(fetch_text(http, f"{server.origin}/hold?seconds=2"))
        await asyncio.sleep(0.2)
        impatient = Timeout(read=5, connect=5, pool=0.2)
        try:
            await fetch_text(http, f"{server.origin}/hold?seconds=0", limits=impatient)
        finally:
            holding.cancel()

    started = time.monotonic()
    with Upstream() as server, pytest.raises(ProviderTimeout):
        run(second_waits, max_connections=1)
    assert time.monotonic() - started < 1.5


def test_a_refused_connection_is_a_connection_error() -> None:
    with pytest.raises(ProviderConnectionError):
        run(lambda http: fetch_text(http, f"http://127.0.0.1:{closed_port()}/"))


def test_a_body_cut_short_is_a_connection_error() -> None:
    with Upstream() as server, pytest.raises(ProviderConnectionError):
        run(lambda http: fetch_lines(http, f"{server.origin}/cut"))


def test_the_client_closes_and_may_close_twice() -> None:
    async def use_then_close() -> None:
        http = build_http_client(max_connections=1)
        assert await fetch_text(http, f"{server.origin}/hold?seconds=0") == (200, "held")
        await http.aclose()
        await http.aclose()

    with Upstream() as server:
        asyncio.run(use_then_close())


def test_request_timeout_comes_from_the_provider_settings() -> None:
    timeout = request_timeout(ProviderSettings(type="x", read_timeout=30, connect_timeout=2))
    assert (timeout.read, timeout.connect, timeout.pool) == (30, 2, 30)
    assert timeout.as_aiohttp() == aiohttp.ClientTimeout(
        total=None, connect=30, sock_read=30, sock_connect=2
    )


def raised_from(exc: BaseException, cause: BaseException | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as raised, transport_errors("p"):
        raise exc from cause
    assert raised.value.__cause__ is exc
    return raised.value


@pytest.mark.parametrize(
    ("exc", "cause", "error_type"),
    [
        (aiohttp.SocketTimeoutError("slow"), None, ProviderTimeout),
        (aiohttp.ConnectionTimeoutError("slow"), None, ProviderTimeout),
        (aiohttp.ServerTimeoutError("slow"), None, ProviderTimeout),
        (TimeoutError(), None, ProviderTimeout),
        (aiohttp.ServerDisconnectedError(), None, ProviderConnectionError),
        (aiohttp.ClientConnectionError("no"), None, ProviderConnectionError),
        (aiohttp.ClientConnectionResetError("reset"), None, ProviderConnectionError),
        (aiohttp.ClientPayloadError("cut"), None, ProviderConnectionError),
        (
            aiohttp.ClientPayloadError("gzip"),
            ContentEncodingError("gzip"),
            MalformedResponse,
        ),
        (aiohttp.ClientOSError(111, "refused"), None, ProviderConnectionError),
        (aiohttp.InvalidURL("nowhere"), None, ProviderConnectionError),
    ],
)
def test_transport_errors_are_mapped(
    exc: BaseException, cause: BaseException | None, error_type: type[ProviderError]
) -> None:
    assert type(raised_from(exc, cause)) is error_type


def test_provider_errors_pass_through() -> None:
    with pytest.raises(InvalidRequest), transport_errors("p"):
        raise InvalidRequest("no")
