"""The direct call's memory: a bare asyncio + aiohttp client holding N calls in flight.

``python -m bench.perf.probe --upstream URL --calls N --latency-ms L`` runs in a
process of its own (so nothing else sits in its memory), warms up, reads its
RSS, starts N calls (whole completions, the call relayq's worker makes for a
job nobody streams) that the mock holds for L ms, waits until the
mock reports them in flight, reads its RSS again and prints both as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

import aiohttp

from bench.perf.clients import Endpoint, chat_body, new_session
from bench.perf.machine import process_rss_mb

__all__ = ["main", "rss_now", "upstream_in_flight"]


def rss_now(pid: int, *, samples: int = 5, gap: float = 0.2) -> float:
    """The median of a few RSS readings of ``pid`` (MiB)."""
    readings = []
    for index in range(samples):
        if index:
            time.sleep(gap)
        readings.append(process_rss_mb(pid))
    return statistics.median(readings)


async def upstream_in_flight(session: aiohttp.ClientSession, upstream_url: str) -> int:
    """Calls the mock is holding right now."""
    origin = upstream_url.rsplit("/v1", 1)[0]
    async with session.get(f"{origin}/stats") as response:
        return int((await response.json())["in_flight"])


async def _probe(upstream_url: str, calls: int, latency_ms: float) -> dict[str, float]:
    import os

    pid = os.getpid()
    async with new_session() as session:
        endpoint = Endpoint("direct", f"{upstream_url}/chat/completions", session)
        warm = chat_body(latency_ms=0)
        await asyncio.gather(*(endpoint.complete(warm) for _ in range(100)))
        idle = await asyncio.to_thread(rss_now, pid)
        body = chat_body(latency_ms=latency_ms)
        tasks = [asyncio.create_task(endpoint.complete(body)) for _ in range(calls)]
        deadline = time.monotonic() + latency_ms / 1000
        while await upstream_in_flight(session, upstream_url) < calls:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        in_flight = await upstream_in_flight(session, upstream_url)
        loaded = await asyncio.to_thread(rss_now, pid)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"idle_mb": idle, "loaded_mb": loaded, "in_flight": float(in_flight)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.probe")
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=20000)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_probe(args.upstream, args.calls, args.latency_ms))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
