"""What a job does next: a pure function of what is known, applied elsewhere.

The executor asks at three points of a run, and applies the answer (a
:class:`Step`) with its effects: a store write, a publish through the outbox,
an event. Nothing here does I/O or keeps state, so every branch is tested on
its own (``tests/test_policy.py``).

1. :func:`before_call`, once the job is claimed: expire it (its deadline
   passed), wait (a message delivered before its countdown ended), or call.
2. :func:`after_admission`, once limits, breaker and caller were asked in one
   round trip: cancel (the sync caller left), wait (a rate limit), fall back
   (the deployment's breaker is open: no call is made), or call.
3. :func:`after_failure`, after a failed call, read from the error tree alone:
   retry the deployment after a backoff, fall back to the route's next
   deployment, or fail. A retry re-queues the job with a countdown; no worker
   slot sleeps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from relayq.config.routes import RetrySettings
from relayq.providers.errors import (
    AuthenticationFailed,
    InvalidRequest,
    ModelNotFound,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)

__all__ = [
    "Action",
    "RetrySettings",
    "Step",
    "after_admission",
    "after_failure",
    "backoff",
    "before_call",
]

OVERLOADED = 529
EARLY_TOLERANCE = 0.05
"""Seconds a message may come before its countdown ends and still be run."""


class Action(str, Enum):
    CALL = "call"
    """Call the deployment now."""
    WAIT = "wait"
    """Put the job back, due in ``delay`` seconds, on the same deployment."""
    RETRY = "retry"
    """Call the same deployment again after ``delay`` (a failed call came before)."""
    FALLBACK = "fallback"
    """This deployment cannot serve the job now: try the route's next one."""
    FAIL = "fail"
    """No call can succeed (the request itself is at fault, or the budget is spent)."""
    EXPIRE = "expire"
    """The job's deadline passed before it ran."""
    CANCEL = "cancel"
    """The caller waiting on it left before the call."""


@dataclass(frozen=True, slots=True)
class Step:
    action: Action
    delay: float = 0.0
    reason: str = ""


CALL = Step(Action.CALL)


def before_call(*, now: float, expires_at: float | None, not_before: float | None) -> Step:
    """A claimed job's first step: expire, wait for its countdown, or call."""
    if expires_at is not None and now >= expires_at:
        return Step(Action.EXPIRE, reason="the job's deadline passed before it ran")
    if not_before and now < not_before - EARLY_TOLERANCE:
        # Delivered before its countdown ended (a long wait sent in hops).
        return Step(Action.WAIT, delay=not_before - now, reason="not yet due")
    return CALL


def after_admission(*, caller_left: bool, wait: float, breaker_allows: bool) -> Step:
    """The step once the call's admission is known: its limits, its breaker, its caller."""
    if caller_left:
        return Step(Action.CANCEL, reason="the caller left before the call")
    if wait > 0:
        return Step(Action.WAIT, delay=wait, reason="rate limit")
    if not breaker_allows:
        return Step(Action.FALLBACK, reason="circuit breaker open, no call made")
    return CALL


def backoff(attempt: int, settings: RetrySettings, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, base·2^attempt))."""
    ceiling = min(settings.backoff_max_seconds, settings.backoff_base_seconds * 2 ** (attempt - 1))
    return (rng or random).uniform(0, ceiling)


def after_failure(
    error: ProviderError,
    *,
    attempts_on_deployment: int,
    attempts_total: int,
    settings: RetrySettings,
    rng: random.Random | None = None,
) -> Step:
    """The next step after ``error`` on a job's ``attempts_on_deployment``-th call there."""
    if isinstance(error, InvalidRequest):
        return Step(Action.FAIL, reason="the provider rejected the request itself")
    if attempts_total >= settings.max_attempts:
        return Step(Action.FAIL, reason=f"{attempts_total} attempts made, the job's budget")
    if isinstance(error, AuthenticationFailed | ModelNotFound):
        return Step(Action.FALLBACK, reason="this deployment cannot serve the request")
    if isinstance(error, ProviderUnavailable) and error.status_code == OVERLOADED:
        return Step(Action.FALLBACK, reason="the provider is overloaded")
    if not error.retryable:
        return Step(Action.FALLBACK, reason="not retryable on this deployment")
    if attempts_on_deployment >= settings.max_attempts_per_deployment:
        return Step(Action.FALLBACK, reason=f"{attempts_on_deployment} attempts on this deployment")
    delay = backoff(attempts_on_deployment, settings, rng)
    if isinstance(error, RateLimited) and error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return Step(Action.RETRY, delay=delay, reason=error.code)
