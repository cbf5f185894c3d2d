"""How many limiter and breaker decisions per second one process gets from a local Redis.

Usage: ``python bench/limits_bench.py [--url redis://127.0.0.1:6379/15] [--calls 20000]``.
Each figure is a bounded loop of real calls (one Lua script round trip each),
one at a time and with many in flight on one event loop. Only a Redis on
loopback is accepted; the keys written are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlparse

import redis.asyncio as aioredis

from relayq.config.settings import BreakerSettings
from relayq.resilience.breaker import CircuitBreaker
from relayq.resilience.key_limits import KeyLimits
from relayq.resilience.ratelimit import RateLimiter

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


async def measure(call: Callable[[int], Awaitable[object]], *, calls: int, in_flight: int) -> float:
    """Calls per second of ``call`` over ``calls`` calls, ``in_flight`` at a time."""
    per_task = calls // in_flight

    async def worker(offset: int) -> None:
        for i in range(per_task):
            await call(offset + i)

    start = time.perf_counter()
    await asyncio.gather(*(worker(n * per_task) for n in range(in_flight)))
    return per_task * in_flight / (time.perf_counter() - start)


async def main(url: str, calls: int) -> None:
    client = aioredis.Redis.from_url(url)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    limiter = RateLimiter(client, key_prefix=prefix)
    breaker = CircuitBreaker(client, key_prefix=prefix, settings=BreakerSettings())
    keys = KeyLimits(client, key_prefix=prefix)
    deployments = [f"bench|model-{n}" for n in range(16)]

    async def rate_acquire(i: int) -> float:
        d = deployments[i % len(deployments)]
        return await limiter.acquire(d, rpm=10**9, tpm=10**12, tokens=500, provider="bench")

    async def breaker_acquire(i: int) -> object:
        return await breaker.acquire(deployments[i % len(deployments)])

    async def key_admit(i: int) -> object:
        return await keys.admit(f"key-{i % 16}", f"job-{i}", rpm=10**9, max_concurrent=None)

    try:
        await client.ping()
        for name, call in [
            ("RateLimiter.acquire (RPM+TPM+cooldown)", rate_acquire),
            ("CircuitBreaker.acquire (closed)", breaker_acquire),
            ("KeyLimits.admit (RPM+concurrency)", key_admit),
        ]:
            await measure(call, calls=min(calls, 500), in_flight=1)  # load scripts, warm up
            for in_flight in (1, 64):
                rate = await measure(call, calls=calls, in_flight=in_flight)
                print(f"{name:42} {in_flight:3} in flight: {rate:9,.0f} calls/s")
    finally:
        stale = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if stale:
            await client.delete(*stale)
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--calls", type=int, default=20_000)
    options = parser.parse_args()
    if urlparse(options.url).hostname not in LOOPBACK:
        parser.error("this benchmark only runs against a Redis on loopback")
    if not 64 <= options.calls <= 1_000_000:
        parser.error("--calls must be between 64 and 1,000,000")
    asyncio.run(main(options.url, options.calls))
