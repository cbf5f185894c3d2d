"""A misbehaving OpenAI-compatible upstream on loopback, for chaos runs.

It answers ``POST /v1/chat/completions`` (streamed when asked, as relayq's
workers ask for streamed jobs; else the whole answer) after a latency drawn
from a range, and fails a seeded random share of calls: HTTP 500, 429 with
Retry-After, a stall longer than the caller's read timeout, a body or stream
cut before its end, a malformed body or event. It records when
each call arrived, so a run can count requests per minute as the vendor sees
them.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from dataclasses import dataclass

from aiohttp import web

from tests.fakes.server import ThreadedServer

__all__ = ["FaultMix", "FlakyUpstream"]


@dataclass(frozen=True)
class FaultMix:
    error_500: float = 0.30
    rate_limit_429: float = 0.10
    stall: float = 0.05
    cut: float = 0.05
    malformed: float = 0.05
    retry_after_seconds: int = 1
    stall_seconds: float = 5.0
    min_latency_ms: int = 50
    max_latency_ms: int = 300


class FlakyUpstream(ThreadedServer):
    """Use as a context manager; point an ``openai_compatible`` provider at :attr:`base_url`."""

    def __init__(self, mix: FaultMix | None = None, *, seed: int = 11) -> None:
        super().__init__()
        self.mix = mix or FaultMix()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.arrivals: list[float] = []
        self.outcomes: dict[str, int] = {}

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    def _draw(self) -> tuple[str, float]:
        mix = self.mix
        with self._lock:
            self.arrivals.append(time.time())
            roll = self._rng.random()
            latency = self._rng.uniform(mix.min_latency_ms, mix.max_latency_ms) / 1000
        kind = "ok"
        for name, share in (
            ("500", mix.error_500),
            ("429", mix.rate_limit_429),
            ("stall", mix.stall),
            ("cut", mix.cut),
            ("malformed", mix.malformed),
        ):
            if roll < share:
                kind = name
                break
            roll -= share
        with self._lock:
            self.outcomes[kind] = self.outcomes.get(kind, 0) + 1
        return kind, latency

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        kind, latency = self._draw()
        await asyncio.sleep(latency)
        if kind == "500":
            return web.json_response(
                {"error": {"message": "upstream exploded", "type": "server_error"}}, status=500
            )
        if kind == "429":
            return web.json_response(
                {"error": {"message": "slow down", "type": "rate_limit_error"}},
                status=429,
                headers={"retry-after": str(self.mix.retry_after_seconds)},
            )
        if kind == "stall":
            await asyncio.sleep(self.mix.stall_seconds)
        if not body.get("stream"):
            return await self._whole(request, body, kind)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        words = ["fine", " answer", " from", " upstream"]
        for index, word in enumerate(words):
            if kind == "cut" and index == 2:
                assert request.transport is not None
                request.transport.close()  # the connection drops mid-stream
                return response
            chunk = {
                "id": "chatcmpl-flaky",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body.get("model", "flaky"),
                "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
            }
            line = "{not json" if kind == "malformed" and index == 1 else json.dumps(chunk)
            await response.write(f"data: {line}\n\n".encode())
        done = {
            "id": "chatcmpl-flaky",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "flaky"),
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
        usage = {
            **done,
            "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
        }
        await response.write(f"data: {json.dumps(done)}\n\ndata: {json.dumps(usage)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    def most_in_any_minute(self) -> int:
        """The most calls that arrived within any 60 s window."""
        return self.most_in_any(60.0)

    def most_in_any(self, seconds: float) -> int:
        """The most calls that arrived within any window of ``seconds``."""
        times = sorted(self.arrivals)
        most, start = 0, 0
        for end, arrived in enumerate(times):
            while arrived - times[start] >= seconds:
                start += 1
            most = max(most, end - start + 1)
        return most

    async def _whole(
        self, request: web.Request, body: dict[str, object], kind: str
    ) -> web.StreamResponse:
        """A whole ``chat.completion``; ``cut`` drops the connection halfway through the
        body, ``malformed`` sends a body that is not JSON."""
        completion = {
            "id": "chatcmpl-flaky",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "flaky"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "fine answer from upstream"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
        }
        content = b"{not json" if kind == "malformed" else json.dumps(completion).encode()
        if kind != "cut":
            return web.Response(body=content, content_type="application/json")
        response = web.StreamResponse(headers={"content-type": "application/json"})
        response.content_length = len(content)
        await response.prepare(request)
        await response.write(content[: len(content) // 2])
        assert request.transport is not None
        request.transport.close()  # the connection drops mid-body
        return response
