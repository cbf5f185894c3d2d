"""When to try a delivery again: the retry schedule, full jitter, and Retry-After.

Pure: the settings, the attempt number and the receiver's Retry-After in,
seconds out, the randomness injected.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from relayq.config.settings import WebhookSettings

__all__ = ["retry_delay"]


def retry_delay(
    settings: WebhookSettings,
    *,
    attempt: int,
    retry_after: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float | None:
    """Seconds until the attempt after ``attempt`` (1-based), or None: give up.

    The wait is the schedule's step for that retry, of which the ``jitter``
    share is drawn at random (full jitter: anywhere in ``[0, step]``), so
    deliveries failing together do not retry together. A Retry-After from
    the receiver is a floor: the next attempt is never earlier than asked
    (up to ``max_retry_after_seconds``).
    """
    if attempt < 1 or attempt > len(settings.retry_schedule):
        return None
    step = settings.retry_schedule[attempt - 1]
    delay = step * (1 - settings.jitter * rng())
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.max_retry_after_seconds))
    return delay
