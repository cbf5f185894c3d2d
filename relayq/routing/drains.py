"""Deployments an operator drained: routing gives them no new jobs.

An admin drains a deployment (``POST /v1/admin/deployments/{id}/drain``) to
take it out of service without editing the routing file: the router then
picks among the route's other deployments, and a route whose every
deployment is drained is unavailable (:class:`relayq.routing.router.RouteUnavailable`).
Jobs already assigned to it (queued or running) run there as before; a
failing job's fallback passes it over (:mod:`relayq.resilience.resilience`).

The drained set is one Redis hash
(:attr:`~relayq.redis.keys.RedisKeys.routing_drained`), changed only with an
announcement on :attr:`~relayq.redis.keys.RedisKeys.drains_channel` in the
same transaction. Each process keeps the set in memory (:class:`Drains`):
read once at start, and again on each announcement and each time its
listener (re)subscribes, so routing a job asks Redis nothing. The bound: a
change reaches a listening process one pub/sub message after it is made
(milliseconds). A process that lost Redis keeps the set it last read, and
reads it again as soon as its listener is back (it retries every second);
since it subscribes before it reads, no change falls between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from relayq.redis.cancelling import raise_if_cancelled
from relayq.redis.channels import listen
from relayq.redis.keys import RedisKeys

__all__ = ["Drains"]

log = logging.getLogger(__name__)


class Drains:
    """The drained deployments (``provider|model``), as this process last read them."""

    def __init__(self, redis: aioredis.Redis, *, key_prefix: str) -> None:
        self._redis = redis
        keys = RedisKeys(key_prefix)
        self._hash = keys.routing_drained
        self._channel = keys.drains_channel
        self._stale = asyncio.Event()
        self.drained: frozenset[str] = frozenset()
        """What routing skips; empty until first read."""

    async def refresh(self) -> frozenset[str]:
        """Read the drained set from Redis now."""
        self.drained = frozenset(_text(field) for field in await self._redis.hkeys(self._hash))
        return self.drained

    async def watch(self, *, retry_seconds: float = 1.0) -> None:
        """Follow the drained set until cancelled: read it again on each announcement and
        whenever the listener (re)subscribes; a failed read is tried again."""
        listener = asyncio.create_task(
            listen(
                self._redis,
                self._channel,
                on_message=lambda _: self._stale.set(),
                listening=self._listening,
                reconnect_delay=retry_seconds,
            )
        )
        try:
            while True:
                await self._stale.wait()
                self._stale.clear()
                try:
                    await self.refresh()
                    # redis-py may answer a read after its task was cancelled, the cancel
                    # lost: the loop would then wait for the next announcement forever.
                    raise_if_cancelled()
                except RedisError as exc:
                    log.warning("drained deployments not read (%s); retrying", exc)
                    await asyncio.sleep(retry_seconds)
                    self._stale.set()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    def _listening(self, since: float | None) -> None:
        if since is not None:  # subscribed: whatever changed before is read now
            self._stale.set()

    async def every(self) -> dict[str, float]:
        """Every drained deployment and when it was drained (wall clock), from Redis."""
        found = await self._redis.hgetall(self._hash)
        return {_text(k): float(v) for k, v in found.items()}

    async def drain(self, deployment: str, *, now: float) -> float | None:
        """Drain ``deployment`` (announced to every process); when it was drained before,
        if it was (it stays drained since then)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hget(self._hash, deployment)
            pipe.hsetnx(self._hash, deployment, repr(now))
            pipe.publish(self._channel, deployment)
            before, _, _ = await pipe.execute()
        self.drained = self.drained | {deployment}
        return None if before is None else float(before)

    async def resume(self, deployment: str) -> float | None:
        """Give ``deployment`` new jobs again (announced); when it had been drained, if
        it had."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hget(self._hash, deployment)
            pipe.hdel(self._hash, deployment)
            pipe.publish(self._channel, deployment)
            before, _, _ = await pipe.execute()
        self.drained = self.drained - {deployment}
        return None if before is None else float(before)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
