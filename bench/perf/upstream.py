"""The fast mock upstream: OpenAI chat completions on loopback, in a process of its own.

``POST /v1/chat/completions`` answers a plain ``chat.completion`` or, with
``stream: true``, ``chat.completion.chunk`` events ending in ``data: [DONE]``
(with a usage chunk when ``stream_options.include_usage`` asks for one).
Each request steers the mock with an extra body field, which relayq passes
upstream untouched like any field it does not know::

    "bench": {"latency_ms": 1000, "tokens": 8, "interval_ms": 0}

``latency_ms`` is the wait before the answer (before the first token when
streaming), ``tokens`` the number of content pieces and ``interval_ms`` the
wait between two streamed pieces. Every streamed piece's text is the Unix
time at which the mock wrote it (``"1700000000.123456 "``), so a reader of
the stream, direct or through relayq's events, measures delivery delay as
its receive time minus that stamp (same host, same clock).

Run it with ``python -m bench.perf.upstream --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from aiohttp import web

__all__ = ["STAMP_FORMAT", "make_app", "parse_stamps", "serve"]

STAMP_FORMAT = "{:.6f} "
"""How each streamed piece carries the time it was written."""

_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache"}


def parse_stamps(text: str) -> list[float]:
    """The write times carried by streamed text (pieces as :data:`STAMP_FORMAT`)."""
    stamps: list[float] = []
    for piece in text.split():
        try:
            stamps.append(float(piece))
        except ValueError:
            continue
    return stamps


def _controls(body: dict[str, Any]) -> tuple[float, int, float]:
    raw = body.get("bench")
    controls: dict[str, Any] = raw if isinstance(raw, dict) else {}
    latency = float(controls.get("latency_ms", 0)) / 1000
    tokens = max(1, int(controls.get("tokens", 8)))
    interval = float(controls.get("interval_ms", 0)) / 1000
    return latency, tokens, interval


def _usage(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": 8, "completion_tokens": tokens, "total_tokens": 8 + tokens}


def _completion(model: str, tokens: int) -> dict[str, Any]:
    now = time.time()
    text = "".join(STAMP_FORMAT.format(now) for _ in range(tokens))
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": int(now),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(tokens),
    }


def _chunk(model: str, delta: dict[str, Any], finish: str | None) -> bytes:
    payload = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def _stream(
    request: web.Request, *, model: str, tokens: int, interval: float, usage: bool
) -> web.StreamResponse:
    response = web.StreamResponse(headers=_HEADERS)
    await response.prepare(request)
    await response.write(_chunk(model, {"role": "assistant", "content": ""}, None))
    for index in range(tokens):
        if index and interval:
            await asyncio.sleep(interval)
        piece = STAMP_FORMAT.format(time.time())
        await response.write(_chunk(model, {"content": piece}, None))
    tail = _chunk(model, {}, "stop")
    if usage:
        payload = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [],
            "usage": _usage(tokens),
        }
        tail += b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    await response.write(tail + b"data: [DONE]\n\n")
    await response.write_eof()
    return response


class _Stats:
    def __init__(self) -> None:
        self.in_flight = 0
        self.served = 0


_STATS = web.AppKey("stats", _Stats)


async def _chat(request: web.Request) -> web.StreamResponse:
    stats = request.app[_STATS]
    stats.in_flight += 1
    try:
        return await _answer(request)
    finally:
        stats.in_flight -= 1
        stats.served += 1


async def _answer(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    latency, tokens, interval = _controls(body)
    model = str(body.get("model", "bench"))
    if latency:
        await asyncio.sleep(latency)
    if not body.get("stream"):
        return web.json_response(_completion(model, tokens))
    options = body.get("stream_options") or {}
    usage = bool(isinstance(options, dict) and options.get("include_usage"))
    return await _stream(request, model=model, tokens=tokens, interval=interval, usage=usage)


async def _stats(request: web.Request) -> web.Response:
    stats = request.app[_STATS]
    return web.json_response({"in_flight": stats.in_flight, "served": stats.served})


async def _models(_: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "bench", "object": "model"}]})


def make_app() -> web.Application:
    """The mock upstream's routes under ``/v1``, and ``GET /stats`` (calls in flight, served)."""
    app = web.Application()
    app[_STATS] = _Stats()
    app.router.add_get("/stats", _stats)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/v1/models", _models)
    return app


async def serve(port: int) -> None:
    """Serve on 127.0.0.1:``port`` until cancelled."""
    # A caller that goes away cancels its call here, so /stats counts live calls only.
    runner = web.AppRunner(make_app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    # A big backlog: hundreds of callers connect at once.
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.upstream")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    import uvloop  # comes with uvicorn[standard]; the mock should cost its callers little

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
