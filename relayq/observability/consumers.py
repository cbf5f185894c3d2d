"""What each worker process consumes, as its heartbeat last said: for readiness probes.

Each beat (relayq/recovery/handback.py) writes the process's record into one hash;
``GET /readyz`` and ``relayq health worker`` read it. Kept apart from the
recovery code, which needs the store and Celery, so that a container's probe
(run every few seconds) imports Redis's client and nothing heavier.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import orjson
import redis.asyncio as aioredis

from relayq.redis.keys import RedisKeys

__all__ = ["Consumer", "consumers", "last_seen"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Consumer:
    """A worker process as its last beat described it."""

    instance: str
    host: str
    """Its hostname (``socket.gethostname()``): a container probe asks for its own."""
    queues: tuple[str, ...]
    """Every queue its Celery worker consumes (provider queues, webhooks, batches)."""
    beat_at: float
    """When it last beat, ``time.time()`` on its host: readers compare it with their own
    clock, so hosts' clocks must agree to well within the readiness window."""

    def encode(self) -> bytes:
        return orjson.dumps({"host": self.host, "queues": self.queues, "at": self.beat_at})

    @classmethod
    def decode(cls, instance: str, raw: bytes) -> Consumer:
        """Raises ``ValueError``, ``KeyError`` or ``TypeError`` for a record it cannot read."""
        record = orjson.loads(raw)
        return cls(
            instance=instance,
            host=str(record["host"]),
            queues=tuple(str(queue) for queue in record["queues"]),
            beat_at=float(record["at"]),
        )


async def consumers(redis: aioredis.Redis, *, key_prefix: str) -> list[Consumer]:
    """Every worker process that beat and has not since left or been handed back, however
    long ago its last beat: one ``HGETALL``, cheap enough for a probe every few seconds."""
    records = cast(dict[bytes, bytes], await redis.hgetall(RedisKeys(key_prefix).consumers))
    found: list[Consumer] = []
    for instance, raw in records.items():
        try:
            found.append(Consumer.decode(instance.decode(), raw))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("consumer record of %s unreadable: %s", instance, exc)
    return found


def last_seen(found: Iterable[Consumer], queues: Iterable[str]) -> dict[str, float | None]:
    """Each of ``queues``' latest beat from a process consuming it; None if none did."""
    seen: dict[str, float | None] = dict.fromkeys(queues)
    for consumer in found:
        for queue in consumer.queues:
            if queue not in seen:
                continue
            previous = seen[queue]
            if previous is None or consumer.beat_at > previous:
                seen[queue] = consumer.beat_at
    return seen
