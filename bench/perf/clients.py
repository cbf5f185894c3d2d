"""The load generators' HTTP calls, the same code for the direct call and for relayq.

An :class:`Endpoint` is where a chat completion is posted: the mock upstream
itself (the direct call, the ceiling) or relayq's ``/v1/chat/completions``.
Both are called through the same aiohttp code, so what differs between the two
figures of a pair is relayq alone. Job submission and event following are
relayq's own and live on :class:`RelayqJobs`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.perf.stack import BENCH_MODEL
from bench.perf.upstream import parse_stamps

__all__ = ["Endpoint", "RelayqJobs", "chat_body", "new_session"]


def chat_body(
    *, latency_ms: float = 0, tokens: int = 8, interval_ms: float = 0, stream: bool = False
) -> dict[str, Any]:
    """A chat request for the benchmark model, with the mock's controls."""
    body: dict[str, Any] = {
        "model": BENCH_MODEL,
        "messages": [{"role": "user", "content": "Say something."}],
        "bench": {"latency_ms": latency_ms, "tokens": tokens, "interval_ms": interval_ms},
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def new_session(*, limit: int = 0, timeout: float = 300.0) -> aiohttp.ClientSession:
    """A client session; ``limit`` 0 means no cap on connections."""
    # Idle connections are dropped after 2 s, before uvicorn's 5 s keep-alive closes
    # them from its side (reusing one the server is closing resets the call).
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, keepalive_timeout=2.0)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
    )


class CallFailed(Exception):
    """A call answered other than 200, or a stream ended before ``[DONE]``."""


@dataclass
class Endpoint:
    """``POST {url}`` for chat completions, with ``headers`` (relayq's key, or none)."""

    name: str
    url: str
    session: aiohttp.ClientSession
    headers: dict[str, str] = field(default_factory=dict)

    async def complete(self, body: dict[str, Any]) -> float:
        """A plain completion; returns its latency in seconds."""
        started = time.perf_counter()
        async with self.session.post(self.url, json=body, headers=self.headers) as response:
            content = await response.read()
            if response.status != 200:
                raise CallFailed(f"{self.name}: HTTP {response.status}: {content[:200]!r}")
        return time.perf_counter() - started

    async def stream(self, body: dict[str, Any]) -> tuple[float, float]:
        """A streamed completion read to ``[DONE]``: (time to first token, total), seconds."""
        started = time.perf_counter()
        first: float | None = None
        async with self.session.post(self.url, json=body, headers=self.headers) as response:
            if response.status != 200:
                raise CallFailed(f"{self.name}: HTTP {response.status}")
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    assert first is not None, "no token before [DONE]"
                    return first, time.perf_counter() - started
                if first is None and _has_content(data):
                    first = time.perf_counter() - started
        raise CallFailed(f"{self.name}: stream ended before [DONE]")

    async def stream_delays(self, body: dict[str, Any]) -> list[float]:
        """A streamed completion; per token, receive time minus the mock's write time."""
        delays: list[float] = []
        async with self.session.post(self.url, json=body, headers=self.headers) as response:
            if response.status != 200:
                raise CallFailed(f"{self.name}: HTTP {response.status}")
            async for line in response.content:
                received = time.time()
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    return delays
                delays.extend(received - stamp for stamp in _chunk_stamps(data))
        raise CallFailed(f"{self.name}: stream ended before [DONE]")


def _has_content(data: bytes) -> bool:
    chunk = json.loads(data)
    return any(choice.get("delta", {}).get("content") for choice in chunk.get("choices", []))


def _chunk_stamps(data: bytes) -> list[float]:
    chunk = json.loads(data)
    text = "".join(
        str(choice.get("delta", {}).get("content") or "") for choice in chunk.get("choices", [])
    )
    return parse_stamps(text)


@dataclass
class RelayqJobs:
    """relayq's jobs API: submit jobs and follow their events."""

    base_url: str
    session: aiohttp.ClientSession
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    async def submit(self, body: dict[str, Any]) -> str:
        """``POST /v1/jobs``; the new job's id."""
        async with self.session.post(
            f"{self.base_url}/v1/jobs", json=body, headers=self.headers
        ) as response:
            payload = await response.json()
            if response.status != 202:
                raise CallFailed(f"POST /v1/jobs: HTTP {response.status}: {payload}")
        return str(payload["id"])

    async def follow_delays(
        self, job_id: str, *, connected: list[float], ended: list[str]
    ) -> list[float]:
        """Follow ``GET /v1/jobs/{id}/events`` to the end; per token carried by a ``delta``
        event, receive time minus the mock's write time.

        The time the stream opened is appended to ``connected``, and the terminal
        event's type to ``ended`` (``broken`` if the server cut the stream, nothing
        if it ended without a terminal event); tokens written
        before the stream opened (replayed, not live) are left out.
        """
        delays: list[float] = []
        url = f"{self.base_url}/v1/jobs/{job_id}/events"
        async with self.session.get(url, headers=self.headers) as response:
            if response.status != 200:
                raise CallFailed(f"GET events: HTTP {response.status}")
            opened = time.time()
            connected.append(opened)
            try:
                await self._read_deltas(response, opened, delays, ended)
            except aiohttp.ClientPayloadError:
                ended.append("broken")  # the server cut the stream: counted, not raised
        return delays

    @staticmethod
    async def _read_deltas(
        response: aiohttp.ClientResponse, opened: float, delays: list[float], ended: list[str]
    ) -> None:
        event = ""
        async for line in response.content:
            received = time.time()
            if line.startswith(b"event: "):
                event = line[7:].strip().decode()
            elif line.startswith(b"data: ") and event == "delta":
                payload = json.loads(line[6:])
                stamps = parse_stamps(str(payload["data"].get("text", "")))
                delays.extend(received - s for s in stamps if s >= opened)
            elif line.startswith(b"data: ") and event in _TERMINAL:
                ended.append(event)
                return


_TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})
