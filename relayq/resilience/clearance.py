"""A worker's own record of the deployments it may call without asking Redis first.

Before each call a job asks its deployment's rate limits, its provider's
cooldown and its circuit breaker (:meth:`relayq.resilience.resilience.Resilience.admit`):
a Redis round trip on the path of every job, half a millisecond or more of a
sync call's time to first token. For a deployment with no RPM or TPM limit the
answer nearly always repeats (the breaker is closed, no cooldown runs), and
asking changes nothing in Redis: a closed breaker's admission writes nothing.

So once Redis said so, the deployment is *clear* on this worker: its calls are
admitted here, with no round trip, for at most ``ttl`` seconds. Whatever would
make an admission refuse announces itself on one channel every worker listens
to (:attr:`relayq.redis.keys.RedisKeys.admission_channel`): the script that
opens a breaker and the one that starts a provider's cooldown publish there,
in the same step, and every listening worker forgets what it held clear. A
worker that is not listening (starting, or reconnecting after losing Redis)
holds nothing clear: it may have missed an announcement.

What an operator may notice: an opening reaches the other workers one pub/sub
message later, as an admission asked an instant before the opening was let
through before; and a worker that fails to hear one (a process from before
this module) keeps calling for up to ``ttl``. Calls still report to the
breaker as they end, so its counts stay whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio as aioredis

from relayq.redis.channels import listen
from relayq.redis.keys import RedisKeys

__all__ = ["Clearance", "listen_for_changes"]


class Clearance:
    """The deployments this worker may admit calls to by itself, each until a deadline."""

    def __init__(self, *, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._until: dict[str, float] = {}
        self._generation = 0
        self.listening = False
        """Whether announcements reach this worker now; nothing is clear while not."""

    @property
    def generation(self) -> int:
        """Changes whenever what is clear is forgotten: read it before asking Redis."""
        return self._generation

    def clear(self, deployment: str) -> bool:
        """Whether a call to ``deployment`` may be admitted here, now."""
        if not self.listening:
            return False
        until = self._until.get(deployment)
        return until is not None and self._clock() < until

    def note_clear(self, deployment: str, *, generation: int) -> None:
        """Redis admitted a call to ``deployment`` with nothing to hold it back.

        ``generation``: :attr:`generation` as it was before Redis was asked; if
        anything was forgotten since, the answer may predate an announcement
        and is not kept.
        """
        if self._ttl > 0 and self.listening and generation == self._generation:
            self._until[deployment] = self._clock() + self._ttl

    def hearing(self, since: float | None) -> None:
        """Announcements reach this worker from ``since`` on (None: no longer). What
        was clear before may have missed one: it is forgotten either way."""
        self.forget()
        self.listening = since is not None

    def forget(self) -> None:
        """Something changed (or may have): every deployment goes back to Redis."""
        self._until.clear()
        self._generation += 1


async def listen_for_changes(
    client: aioredis.Redis,
    *,
    key_prefix: str,
    clearance: Clearance,
    reconnect_delay: float = 1.0,
) -> None:
    """Keep ``clearance`` listening to announcements until cancelled.

    Any announcement forgets every deployment (they are rare: a breaker
    opening, a provider's 429); so does losing the channel.
    """
    await listen(
        client,
        RedisKeys(key_prefix).admission_channel,
        on_message=lambda _: clearance.forget(),
        listening=clearance.hearing,
        reconnect_delay=reconnect_delay,
    )
