"""Keeping jobs moving when providers misbehave: limits, breakers, retries, fallback.

Before a call, a job must get through its deployment's global rate limits
(and its provider's 429 cooldown) and circuit breaker. After a failed call,
:func:`relayq.resilience.policy.after_failure` says whether to retry the deployment, fall back
to the route's next deployment, or fail. Every wait is a re-queue with a
countdown: no worker slot is held while a job waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from redis.exceptions import RedisError

from relayq.config.prices import ModelPrice
from relayq.config.routes import DeploymentSettings, RoutingConfig
from relayq.events.log import EventLog, EventType, JobEvent
from relayq.observability.logs import log_fields
from relayq.observability.metrics import WorkerMetrics
from relayq.observability.tracing import current_traceparent
from relayq.providers.errors import ProviderError
from relayq.queueing.broker import Enqueuer, JobDetails
from relayq.queueing.outbox import JobMessage, Outbox
from relayq.resilience.breaker import BreakerState, CircuitBreaker, Permit
from relayq.resilience.clearance import Clearance
from relayq.resilience.policy import Action, RetrySettings, after_failure
from relayq.resilience.ratelimit import RateLimiter, estimate_tokens
from relayq.routing.drains import Drains
from relayq.schemas.jobs import CallRequest
from relayq.store import Database
from relayq.store.attempts import AttemptRecord, list_attempts
from relayq.store.claims import Claim
from relayq.store.retries import Placement, requeue_job

__all__ = ["Admission", "Resilience", "deployment_id"]

log = logging.getLogger(__name__)


def deployment_id(provider: str, model: str) -> str:
    return f"{provider}|{model}"


_CLEAR = Permit(allowed=True, state=BreakerState.CLOSED)
"""What a closed breaker answers; given here when the deployment is clear."""


@dataclass(frozen=True)
class Admission:
    """Whether a claimed job may call its provider now."""

    wait: float = 0.0
    """Seconds to wait for the rate limits (0: go)."""
    permit: Permit | None = None
    tokens: int = 0
    """Tokens charged against the deployment's TPM (corrected after the call)."""


class Resilience:
    def __init__(
        self,
        *,
        database: Database,
        enqueuer: Enqueuer,
        limiter: RateLimiter,
        breaker: CircuitBreaker,
        retry: RetrySettings,
        routing: Callable[[], RoutingConfig],
        events: EventLog | None,
        max_countdown: float,
        clearance: Clearance | None = None,
        metrics: WorkerMetrics | None = None,
        drains: Drains | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clearance``: the deployments this worker may admit calls to by itself;
        ``metrics``: where its retries, fallbacks and cooldowns are counted;
        ``drains``: the deployments a fallback skips (an operator drained them)."""
        self._database = database
        self._drains = drains
        self._metrics = metrics
        self._clearance = clearance
        self._outbox = Outbox(database=database, enqueuer=enqueuer, clock=clock)
        self._limiter = limiter
        self._breaker = breaker
        self._retry = retry
        self._routing = routing
        self._events = events
        self._max_countdown = max_countdown
        self._clock = clock

    def _deployments(self, claim: Claim) -> list[DeploymentSettings]:
        route = self._routing().routes.get(claim.route)
        return list(route.deployments) if route is not None else []

    def _deployment(self, claim: Claim) -> DeploymentSettings | None:
        deployments = self._deployments(claim)
        if claim.deployment_index < len(deployments):
            current = deployments[claim.deployment_index]
            if (current.provider, current.model) == (claim.provider, claim.upstream_model):
                return current
        return None

    def price_of(self, claim: Claim) -> ModelPrice | None:
        """The price of the deployment ``claim`` runs on, if the routing file or relayq's
        defaults give one (:meth:`relayq.config.routes.RoutingConfig.price_of`)."""
        deployment = self._deployment(claim)
        return self._routing().price_of(deployment) if deployment is not None else None

    def admit_here(self, claim: Claim) -> Admission | None:
        """The call's admission without asking Redis, if its deployment is clear here
        (no RPM or TPM limit, breaker closed, no cooldown: :mod:`relayq.resilience.clearance`);
        None if Redis must be asked (:meth:`admit`)."""
        if self._clearance is None:
            return None
        deployment = self._deployment(claim)
        if deployment is not None and (deployment.rpm or deployment.tpm):
            return None
        if not self._clearance.clear(deployment_id(claim.provider, claim.upstream_model)):
            return None
        return Admission(permit=_CLEAR)

    async def admit(
        self,
        claim: Claim,
        request: CallRequest,
    ) -> Admission:
        """Rate limits and the breaker, asked in one round trip (one pipeline).

        A wait for the limits wins: the breaker's permit is then given back
        unused (a half-open probe frees its slot). An answer with nothing to
        hold the deployment back, when it has no limits, makes it clear here.
        """
        deployment = self._deployment(claim)
        rpm = deployment.rpm if deployment else None
        tpm = deployment.tpm if deployment else None
        tokens = estimate_tokens(request) if tpm else 0
        key = deployment_id(claim.provider, claim.upstream_model)
        generation = self._clearance.generation if self._clearance is not None else 0
        wait, permit = await asyncio.gather(
            self._limiter.acquire(key, rpm=rpm, tpm=tpm, tokens=tokens, provider=claim.provider),
            self._breaker.acquire(key),
        )
        if wait > 0:
            await self._breaker.release(key, permit)
            return Admission(wait=wait)
        if (
            self._clearance is not None
            and not rpm
            and not tpm
            and permit.allowed
            and permit.state is BreakerState.CLOSED
        ):
            self._clearance.note_clear(key, generation=generation)
        return Admission(permit=permit, tokens=tokens)

    async def unused(self, claim: Claim, admission: Admission) -> None:
        """No call was made under ``admission`` after all (its caller left)."""
        if admission.permit is not None:
            key = deployment_id(claim.provider, claim.upstream_model)
            await self._breaker.release(key, admission.permit)

    async def succeeded(self, claim: Claim, admission: Admission, usage: Any) -> None:
        key = deployment_id(claim.provider, claim.upstream_model)
        try:
            if admission.permit is not None:
                await self._breaker.record(key, success=True, permit=admission.permit)
            deployment = self._deployment(claim)
            if deployment is not None and deployment.tpm and isinstance(usage, dict):
                actual = int(usage.get("total_tokens") or 0)
                await self._limiter.correct(
                    key, tpm=deployment.tpm, estimated=admission.tokens, actual=actual
                )
        except RedisError as exc:
            log.warning("breaker/limits not updated for %s: %s", claim.job_id, exc)

    async def failed_call(self, claim: Claim, admission: Admission, error: ProviderError) -> None:
        """Tell the breaker (provider-side failures only) and honour a 429's wait."""
        key = deployment_id(claim.provider, claim.upstream_model)
        try:
            if admission.permit is not None:
                await self._breaker.record(
                    key, success=not error.provider_side, permit=admission.permit
                )
            retry_after = getattr(error, "retry_after", None)
            if error.code == "rate_limited" and retry_after:
                await self._limiter.cool_down(claim.provider, float(retry_after))
                if self._metrics is not None:
                    self._metrics.cooldowns.inc(claim.provider)
        except RedisError as exc:
            log.warning("breaker/cooldown not updated for %s: %s", claim.job_id, exc)

    async def wait_turn(self, claim: Claim, delay: float, reason: str) -> bool:
        """Re-queue without an attempt: the job waits for a limit or its countdown."""
        placement = Placement(
            provider=claim.provider,
            upstream_model=claim.upstream_model,
            deployment_index=claim.deployment_index,
            deployment_attempts=claim.deployment_attempts,
        )
        return await self._requeue(claim, placement, delay=delay, attempt=None, reason=reason)

    async def after_failure(
        self,
        claim: Claim,
        error: ProviderError,
        attempt: AttemptRecord,
        *,
        deltas_sent: bool = False,
    ) -> dict[str, Any] | None:
        """Retry or fall back (re-queued: None), or the error to fail the job with.

        The ``attempt_failed`` event numbers the attempt and says whether its
        text went out (``deltas_sent``): a follower holding that text discards it.
        """
        decision = after_failure(
            error,
            attempts_on_deployment=claim.deployment_attempts + 1,
            attempts_total=claim.attempts + 1,
            settings=self._retry,
        )
        await self._emit(
            claim,
            EventType.ATTEMPT_FAILED,
            {
                "attempt": claim.attempts + 1,
                "deltas_sent": deltas_sent,
                "provider": claim.provider,
                "model": claim.upstream_model,
                "error": attempt.error,
                "next": decision.action.value,
                "reason": decision.reason,
            },
        )
        if decision.action is Action.RETRY:
            placement = Placement(
                provider=claim.provider,
                upstream_model=claim.upstream_model,
                deployment_index=claim.deployment_index,
                deployment_attempts=claim.deployment_attempts + 1,
            )
            # Not moved means the job was cancelled or taken over meanwhile:
            # either way this run has nothing more to write.
            moved = await self._requeue(
                claim, placement, delay=decision.delay, attempt=attempt, reason="retry"
            )
            if moved and self._metrics is not None:
                self._metrics.retries.inc(claim.provider)
            return None
        if decision.action is Action.FALLBACK and await self._fall_back(
            claim, attempt, decision.reason
        ):
            return None
        return await self._final_error(claim, error, attempt)

    async def _fall_back(self, claim: Claim, attempt: AttemptRecord, reason: str) -> bool:
        """Move the job to its route's next deployment; False once all were tried.

        The next is the one after the current in the route's order, wrapping
        around, up to the one the route's strategy first chose; drained
        deployments are passed over.
        """
        deployments = self._deployments(claim)
        if not deployments:
            return False
        drained = self._drains.drained if self._drains is not None else frozenset()
        index = (claim.deployment_index + 1) % len(deployments)
        while index != claim.first_deployment:
            target = deployments[index]
            if deployment_id(target.provider, target.model) not in drained:
                break
            index = (index + 1) % len(deployments)
        else:
            return False
        placement = Placement(
            provider=target.provider,
            upstream_model=target.model,
            deployment_index=index,
            deployment_attempts=0,
        )
        await self._emit(
            claim,
            EventType.FALLBACK,
            {
                "from": {"provider": claim.provider, "model": claim.upstream_model},
                "to": {"provider": target.provider, "model": target.model},
                "reason": reason,
            },
        )
        moved = await self._requeue(claim, placement, delay=0.0, attempt=attempt, reason="fallback")
        if moved and self._metrics is not None:
            self._metrics.fallbacks.inc(claim.provider, target.provider)
        return True

    async def _final_error(
        self, claim: Claim, error: ProviderError, attempt: AttemptRecord
    ) -> dict[str, Any]:
        async with self._database.session() as session:
            earlier = await list_attempts(session, job_id=claim.job_id)
        calls: list[dict[str, Any]] = [
            {
                "provider": a.provider,
                "model": a.upstream_model,
                "status": a.status,
                "error": a.error,
            }
            for a in earlier
        ]
        calls.append(
            {
                "provider": attempt.provider,
                "model": attempt.upstream_model,
                "status": attempt.status,
                "error": attempt.error,
            }
        )
        summary = "; ".join(
            f"{c['provider']}/{c['model']}: {(c['error'] or {}).get('code', c['status'])}"
            for c in calls
        )
        return {
            **error.to_dict(),
            "provider": claim.provider,
            "model": claim.upstream_model,
            "message": f"{error.message} (after {len(calls)} attempt(s): {summary})",
            "attempts": calls,
        }

    async def _requeue(
        self,
        claim: Claim,
        placement: Placement,
        *,
        delay: float,
        attempt: AttemptRecord | None,
        reason: str,
    ) -> bool:
        now = self._clock()
        async with self._database.session() as session:
            moved = await requeue_job(
                session,
                claim=claim,
                placement=placement,
                not_before=now + delay,
                attempt=attempt,
                now=now,
            )
        if not moved:
            return False
        # Long waits are sent in hops below the broker's visibility timeout;
        # a job delivered before its time is put back for the rest.
        # Not taken: the reconciler sends it once the wait is over.
        await self._outbox.send_job(
            JobMessage(
                job_id=claim.job_id,
                provider=placement.provider,
                priority=claim.priority,
                countdown=min(delay, self._max_countdown),
                details=JobDetails(
                    # The run's request id (relayq/observability/logs.py): the next
                    # run's lines carry it.
                    request_id=cast("str | None", log_fields().get("request_id")),
                    model=claim.route,
                    key_id=claim.key_id,
                    # The attempt's span, when tracing: the next attempt is its child.
                    traceparent=current_traceparent(),
                ),
            )
        )
        return True

    async def _emit(self, claim: Claim, kind: EventType, data: dict[str, Any]) -> None:
        if self._events is not None:
            await self._events.emit(
                JobEvent(job_id=claim.job_id, key_id=claim.key_id, type=kind, data=data)
            )
