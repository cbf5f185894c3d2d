"""What to do after a failed attempt: retry the deployment, fall back, or give up.

Pure policy, read from the error tree alone: the executor applies it by
re-queueing the job (with a countdown) or moving it to the next deployment of
its route, never by sleeping in a worker slot.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from relayq.config import RetrySettings
from relayq.providers.errors import (
    AuthenticationFailed,
    InvalidRequest,
    ModelNotFound,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)

__all__ = ["Decision", "Next", "RetrySettings", "backoff", "decide"]

OVERLOADED = 529


class Next(str, Enum):
    RETRY = "retry"
    """Call the same deployment again after ``delay``."""
    FALLBACK = "fallback"
    """This deployment failed for good for this job: try the route's next one."""
    FAIL = "fail"
    """No call can succeed (the request itself is at fault, or the budget is spent)."""


@dataclass(frozen=True)
class Decision:
    next: Next
    delay: float = 0.0
    reason: str = ""


def backoff(attempt: int, settings: RetrySettings, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, base·2^attempt))."""
    ceiling = min(settings.backoff_max_seconds, settings.backoff_base_seconds * 2 ** (attempt - 1))
    return (rng or random).uniform(0, ceiling)


def decide(
    error: ProviderError,
    *,
    attempts_on_deployment: int,
    attempts_total: int,
    settings: RetrySettings,
    rng: random.Random | None = None,
) -> Decision:
    """The next step after ``error`` on a job's ``attempts_on_deployment``-th call there."""
    if isinstance(error, InvalidRequest):
        return Decision(Next.FAIL, reason="the provider rejected the request itself")
    if attempts_total >= settings.max_attempts:
        return Decision(Next.FAIL, reason=f"{attempts_total} attempts made, the job's budget")
    if isinstance(error, AuthenticationFailed | ModelNotFound):
        return Decision(Next.FALLBACK, reason="this deployment cannot serve the request")
    if isinstance(error, ProviderUnavailable) and error.status_code == OVERLOADED:
        return Decision(Next.FALLBACK, reason="the provider is overloaded")
    if not error.retryable:
        return Decision(Next.FALLBACK, reason="not retryable on this deployment")
    if attempts_on_deployment >= settings.max_attempts_per_deployment:
        return Decision(
            Next.FALLBACK, reason=f"{attempts_on_deployment} attempts on this deployment"
        )
    delay = backoff(attempts_on_deployment, settings, rng)
    if isinstance(error, RateLimited) and error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return Decision(Next.RETRY, delay=delay, reason=error.code)
