"""Redis clients for processes with many concurrent users (hundreds of SSE streams).

redis-py's default pool raises "Too many connections" past 100 at once; a
blocking pool makes a burst wait for a free connection instead.

Commands are packed by hiredis, in C: redis-py's asyncio client does so itself
from 8.2 (before, it packed them in Python, argument by argument: 13 us for an
event's eleven arguments, against 2.7 us, and relayq sends a dozen commands per
job; this module swapped in a packing connection class until then).
"""

from __future__ import annotations

import redis.asyncio as aioredis

__all__ = ["shared_redis"]


def shared_redis(
    url: str,
    *,
    max_connections: int = 256,
    wait_seconds: float = 20.0,
    socket_timeout: float = 5.0,
) -> aioredis.Redis:
    """A client whose pool waits (up to ``wait_seconds``) when all connections are busy.

    ``socket_timeout`` bounds every read: a blocking command (``XREAD
    BLOCK``) must block for less than it.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=wait_seconds, socket_timeout=socket_timeout
    )
    # from_pool: closing the client closes its pool's connections too.
    return aioredis.Redis.from_pool(pool)
