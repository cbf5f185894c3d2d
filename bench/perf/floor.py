"""The thinnest relay of relayq's shape: what fan-out costs before relayq's own code.

Two processes, as relayq has, on the same Valkey and mock upstream:

- ``python -m bench.perf.floor api``: ``POST /v1/jobs`` pushes the job on a
  Valkey list and answers its id; ``GET /v1/jobs/{id}/events`` follows it as
  SSE, in relayq's message format (:func:`relayq.events.log.stored_frame`), from
  one ``XREAD`` reader of one firehose stream per process, a message per
  event written to each follower.
- ``POST /v1/chat/completions`` (streamed) is its sync lane: the request goes
  on a Valkey list with the name of the API process's reply stream; the
  worker streams the call and appends the upstream's SSE lines to that stream
  as they come (as bytes, held only until the first words, as relayq holds a
  chunk that only names the speaker); the API process's one ``XREAD`` reader
  hands them to the waiting caller, who gets them as they are.
- ``python -m bench.perf.floor worker``: takes every job waiting on the list at
  once (a tick's claim, as relayq's worker takes the messages that came
  during its last claim), streams each call from the mock with a bare aiohttp
  client, and appends each chunk's text as a ``delta`` event, the events of
  a tick in one pipeline; a ``succeeded`` event ends each job. Jobs submitted
  under ``/together/`` are held until ``--together`` of them came and start
  at once: relayq's intake gathers a tick's jobs in one message and its worker
  claims them in one statement, so its jobs start in clumps (of 64 to 436 in
  the fan-out scenario), and this is the largest.

No SQL, no auth, no validation, limits, breaker, retries, events of any
other kind, or replay: what is left is the hops every design of this shape
pays per token (an HTTP read, a Redis append, a Redis read, an SSE write).
The fan-out and streaming scenarios run it beside relayq, so relayq's figure
and its floor come from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import aiohttp
import orjson
import redis.asyncio as aioredis
import uvloop
from aiohttp import web

from relayq.events.log import stored_frame

__all__ = ["main"]

_JOBS = "floor:jobs"
_TOGETHER = "floor:jobs-together"
_FIREHOSE = "floor:firehose"
_LANE = "floor:lane"


def _redis(url: str) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=100)
    return aioredis.Redis(connection_pool=pool)


Followers = dict[bytes, list[asyncio.Queue[bytes | None]]]


async def _entries(redis_url: str, stream: str) -> AsyncIterator[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry added to ``stream`` from now on, read by one ``XREAD`` loop."""
    reader = _redis(redis_url)
    position = "$"
    while True:
        replies = cast(
            list[Any], await reader.xread({stream: position}, block=2000, count=1000) or []
        )
        for _, entries in replies:
            position = entries[-1][0]
            for entry in entries:
                yield entry


async def _read_forever(redis_url: str, followers: Followers) -> None:
    """The process's one reader of the firehose: each entry to its job's followers."""
    async for entry_id, fields in _entries(redis_url, _FIREHOSE):
        queues = followers.get(fields[b"job"], ())
        if not queues:
            continue
        # relayq's frames name the job stream's entry; here the firehose's.
        job_json = json.dumps(fields[b"job"].decode()).encode()
        frame = stored_frame(entry_id, fields, job_json=job_json)
        for queue in queues:
            queue.put_nowait(frame.message)
            if frame.terminal:
                queue.put_nowait(None)


Callers = dict[bytes, asyncio.Queue[bytes | None]]


async def _read_replies(redis_url: str, stream: str, callers: Callers) -> None:
    """The process's one reader of its reply stream: each entry to its waiting caller."""
    async for _, fields in _entries(redis_url, stream):
        queue = callers.get(fields[b"job"])
        if queue is not None:
            queue.put_nowait(fields.get(b"sse"))


async def _serve_api(port: int, redis_url: str) -> None:
    redis = _redis(redis_url)
    followers: Followers = {}
    callers: Callers = {}
    reply_stream = f"floor:replies:{uuid.uuid4().hex}"

    async def chat(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        job_id = f"job_{uuid.uuid4().hex}"
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        callers[job_id.encode()] = queue
        try:
            message = {"id": job_id, "reply_to": reply_stream, "body": body}
            await redis.rpush(_LANE, orjson.dumps(message))
            first = await queue.get()  # the first words, before the answer starts
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            sse = first
            while sse is not None:
                await response.write(sse)
                sse = await queue.get()
            await response.write_eof()
            return response
        finally:
            del callers[job_id.encode()]

    async def submit(request: web.Request) -> web.Response:
        body = await request.read()
        job_id = f"job_{uuid.uuid4().hex}"
        jobs = _TOGETHER if request.path.startswith("/together/") else _JOBS
        await redis.rpush(jobs, orjson.dumps({"id": job_id, "body": orjson.loads(body)}))
        return web.json_response({"id": job_id}, status=202)

    async def follow(request: web.Request) -> web.StreamResponse:
        job = request.match_info["job_id"].encode()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        followers.setdefault(job, []).append(queue)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        try:
            await response.prepare(request)
            ended = False
            while not ended:
                # What came meanwhile goes in one write, as relayq's followers take it.
                messages = [await queue.get()]
                while not queue.empty():
                    messages.append(queue.get_nowait())
                ended = messages[-1] is None
                await response.write(b"".join(m for m in messages if m is not None))
            await response.write_eof()
        finally:
            followers[job].remove(queue)
            if not followers[job]:
                del followers[job]
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    for prefix in ("", "/together"):
        app.router.add_post(f"{prefix}/v1/jobs", submit)
        app.router.add_get(f"{prefix}/v1/jobs/{{job_id}}/events", follow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    readers = [
        asyncio.create_task(_read_forever(redis_url, followers)),
        asyncio.create_task(_read_replies(redis_url, reply_stream, callers)),
    ]
    try:
        await asyncio.Event().wait()
    finally:
        for reader in readers:
            reader.cancel()
        await runner.cleanup()


class _Appends:
    """The stream entries of a tick, added in one pipeline (no timer: the first goes at
    once, what comes while it is in flight goes next)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._queued: list[tuple[str, dict[Any, Any], bool]] = []
        self._sender: asyncio.Task[None] | None = None

    def add(self, stream: str, fields: dict[Any, Any], *, stamped: bool = False) -> None:
        """Queue an entry of ``fields`` for ``stream``; ``stamped``: with the time it is
        sent as ``ts`` (as relayq's events carry)."""
        self._queued.append((stream, fields, stamped))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())

    async def _send(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            async with self._redis.pipeline(transaction=False) as pipe:
                for stream, fields, stamped in batch:
                    entry = {**fields, "ts": repr(time.time())} if stamped else fields
                    pipe.xadd(stream, entry, maxlen=100_000, approximate=True)
                await pipe.execute()


def _event(appends: _Appends, job_id: str, kind: bytes, data: bytes) -> None:
    appends.add(_FIREHOSE, {"job": job_id, "type": kind, "data": data}, stamped=True)


async def _stream(
    session: aiohttp.ClientSession, upstream: str, job: dict[str, Any], appends: _Appends
) -> None:
    async with session.post(f"{upstream}/chat/completions", json=job["body"]) as response:
        pending = b""
        async for data in response.content.iter_any():
            lines = (pending + data).split(b"\n")
            pending = lines.pop()
            for line in lines:
                if not line.startswith(b"data: {"):
                    continue
                chunk = orjson.loads(line[6:])
                choices = chunk.get("choices") or []
                text = "".join((c.get("delta") or {}).get("content") or "" for c in choices)
                if text:
                    _event(appends, job["id"], b"delta", orjson.dumps({"text": text}))
    _event(appends, job["id"], b"succeeded", b"{}")


_WORDS = b'"content":"'


def _has_words(lines: bytes) -> bool:
    """Whether these SSE lines carry text (the mock's chunks, as it writes them)."""
    at = lines.find(_WORDS)
    while at != -1:
        if lines[at + len(_WORDS) : at + len(_WORDS) + 1] != b'"':
            return True
        at = lines.find(_WORDS, at + 1)
    return False


async def _relay(
    session: aiohttp.ClientSession, upstream: str, job: dict[str, Any], appends: _Appends
) -> None:
    """Relay a sync call's SSE lines to its caller's reply stream; an entry without
    ``sse`` ends the answer."""
    stream, job_id = job["reply_to"], job["id"]
    held = b""  # lines before the first words, which go with them
    opened = False
    async with session.post(f"{upstream}/chat/completions", json=job["body"]) as response:
        pending = b""
        async for data in response.content.iter_any():
            complete, _, pending = (pending + data).rpartition(b"\n")
            if not complete:
                continue
            lines = held + complete + b"\n"
            held = b""
            if not opened and not _has_words(lines):
                held = lines
                continue
            opened = True
            appends.add(stream, {"job": job_id, "sse": lines})
    if held:
        appends.add(stream, {"job": job_id, "sse": held})
    appends.add(stream, {"job": job_id})


async def _serve_worker(redis_url: str, upstream: str, together: int) -> None:
    redis = _redis(redis_url)
    appends = _Appends(redis)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    running: set[asyncio.Task[None]] = set()
    held: list[bytes] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        while True:
            first = await redis.blpop([_LANE, _JOBS, _TOGETHER], timeout=1)
            if first is None:
                continue
            key, raw = cast(tuple[bytes, bytes], first)
            rest = cast(list[bytes], await redis.lpop(key, 1000) or [])
            if key == _TOGETHER.encode():
                # Held until ``together`` came, then started at once: the clumps
                # relayq's intake and claims make, at their largest.
                held += [raw, *rest]
                if len(held) < together:
                    continue
                taken, held = held, []
            elif key == _LANE.encode():
                for message in [raw, *rest]:
                    call = _relay(session, upstream, orjson.loads(message), appends)
                    task = asyncio.create_task(call)
                    running.add(task)
                    task.add_done_callback(running.discard)
                continue
            else:
                taken = [raw, *rest]
            for job in taken:
                task = asyncio.create_task(_stream(session, upstream, orjson.loads(job), appends))
                running.add(task)
                task.add_done_callback(running.discard)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["api", "worker"])
    parser.add_argument("--redis", required=True)
    parser.add_argument("--upstream", help="the mock's /v1 URL (worker)")
    parser.add_argument("--port", type=int, help="where the API listens (api)")
    parser.add_argument(
        "--together", type=int, default=500, help="jobs under /together/ start this many at once"
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        if args.role == "api":
            uvloop.run(_serve_api(args.port, args.redis))
        else:
            uvloop.run(_serve_worker(args.redis, args.upstream, args.together))


if __name__ == "__main__":
    main()
