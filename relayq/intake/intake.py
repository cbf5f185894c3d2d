"""Accepting jobs: resolve the route, write the row, then publish the message.

The row is committed before the message is sent (an outbox): if the broker
is down the job is kept, answered as queued, and published later by the
reconciler. A published message is marked so the reconciler leaves it be.

The sync lane is the exception: a caller that waits on its job (a plain
``POST /v1/chat/completions``) has it sent in its message, with no SQL before
the provider call; its worker stores the row. If the broker does not take the
message, nothing was stored and the caller is told at once (a 503).

A key with a budget reserves each job's worst case in the transaction that
stores its row (:mod:`relayq.store.spend`); a job that does not fit is refused
(:class:`OverBudget`) before anything is sent. Its sync calls therefore take
the stored path, row first: a reservation is only ever made with a row that
holds it, so a process that dies anywhere after leaves a job that ends (or
is recovered) and settles, never a reservation nobody will give back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel
from redis.exceptions import RedisError

from relayq.budgets.estimate import worst_case
from relayq.budgets.reservations import BudgetLimits, OverBudget, Reservation
from relayq.budgets.windows import window_of
from relayq.config.settings import Settings
from relayq.direct.lane import LaneSender
from relayq.direct.replies import Replies, Reply
from relayq.events.cancellation import publish_cancel
from relayq.events.log import EventLog, EventType, JobEvent, terminal_data
from relayq.execution.cache import ResponseCache, cache_ttl
from relayq.ids import new_id
from relayq.intake.inserts import JobInserts
from relayq.observability.tracing import current_traceparent
from relayq.queueing.broker import JobDetails
from relayq.queueing.outbox import JobMessage, Outbox
from relayq.redis.keys import RedisKeys
from relayq.redis.pipeline import CommandBatch
from relayq.resilience.key_limits import Decision, KeyLimits, request_tokens
from relayq.routing.router import Router, UnknownModel
from relayq.routing.state import RoutingState
from relayq.schemas.jobs import CallRequest, JobCreateBody, JobKind
from relayq.store import Database
from relayq.store.jobs import NewJob, cancel_job, create_job, get_job, queued_view
from relayq.store.models import Job

__all__ = [
    "BrokerUnavailable",
    "Intake",
    "KeyLimitValues",
    "KeyLimited",
    "KindNotServed",
    "OverBudget",
    "Submitted",
    "request_hash",
]

log = logging.getLogger(__name__)


def request_hash(body: BaseModel) -> str:
    """A digest of the full, normalised request body (a job's, a batch's), for idempotency."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class KeyLimitValues:
    """A key's limits in force: its own, or the API's defaults."""

    requests_per_minute: int | None
    max_concurrent_jobs: int | None
    tokens_per_minute: int | None = None


class KeyLimited(Exception):
    """The key is over one of its limits; ``decision`` says which and for how long;
    ``tokens``: the request's estimate (what a TPM limit counted)."""

    def __init__(
        self, decision: Decision, limits: KeyLimitValues, *, key_id: str = "", tokens: int = 0
    ) -> None:
        super().__init__(decision.limit)
        self.decision = decision
        self.limits = limits
        self.key_id = key_id
        self.tokens = tokens


class KindNotServed(Exception):
    """No deployment of the model's route serves the job's kind (embeddings, completions,
    images)."""

    def __init__(self, model: str, kind: JobKind) -> None:
        super().__init__(model)
        self.model = model
        self.kind = kind


class BrokerUnavailable(Exception):
    """A sync job's message was not taken; with no row stored, nothing will send it later."""


@dataclass
class _Admission:
    """A job's place within its key's limits: asked once, before it is stored or sent."""

    key_id: str
    job_id: str
    limits: KeyLimitValues | None
    budget: BudgetLimits | None = None
    counted: bool = False
    """Whether the job was counted as one of the key's unfinished jobs."""
    tokens: int = 0
    """The request's estimated tokens, when the key has a TPM limit (else 0: not counted)."""

    def limited(self, decision: Decision) -> KeyLimited:
        assert self.limits is not None
        return KeyLimited(decision, self.limits, key_id=self.key_id, tokens=self.tokens)


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool
    """False when an idempotency key returned an earlier job."""
    direct: bool = False
    """Sent in its message with no row yet (the sync lane): its row comes from the worker."""


class Intake:
    """Job submission and cancellation, shared by every route that makes jobs."""

    def __init__(
        self,
        *,
        settings: Settings,
        database: Database,
        outbox: Outbox,
        redis: aioredis.Redis,
        router: Callable[[], Router],
        state: RoutingState,
        cache: ResponseCache,
        events: EventLog,
        key_limits: KeyLimits | None = None,
        batch: CommandBatch | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock``: the wall clock jobs are stamped and their deadlines counted by."""
        self._settings = settings
        self._clock = clock
        self._database = database
        self._outbox = outbox
        self._inserts = JobInserts(database, clock=clock)
        self._redis = redis
        self._router = router
        self._state = state
        self._cache = cache
        self._events = events
        self._key_limits = key_limits
        batch = batch or CommandBatch(redis)
        self._keys = RedisKeys(settings.key_prefix)
        self._replies = Replies(batch, key_prefix=settings.key_prefix)
        self._lane = LaneSender(batch, key_prefix=settings.key_prefix)

    async def submit(
        self,
        *,
        key_id: str,
        body: JobCreateBody,
        idempotency_key: str | None = None,
        limits: KeyLimitValues | None = None,
        reply_to: str | None = None,
        job_id: str | None = None,
        request_id: str | None = None,
        budget: BudgetLimits | None = None,
    ) -> Submitted:
        """Store and enqueue a job, within the key's limits and ``budget``.

        With ``reply_to`` (a caller waits on the job: a sync chat completion)
        the job's runs send their deltas and end to that reply stream, and a
        plain job (no idempotency key, no cache) takes the sync lane: it goes
        in its message and its worker stores the row, so no SQL stands
        between the request and the provider call.

        ``job_id`` is the new job's id when the caller chose it (a caller
        waiting on replies listens for it before the job is sent).
        ``request_id`` (the HTTP request's) travels with the job's message, so
        its worker's log lines about the job carry it.

        Raises ``UnknownModel``, :class:`KindNotServed`, ``IdempotencyConflict``,
        :class:`KeyLimited`,
        :class:`OverBudget` or :class:`BrokerUnavailable`.
        """
        admission = _Admission(
            key_id=key_id, job_id=job_id or new_id("job"), limits=limits, budget=budget
        )
        try:
            submitted = await self._submit(
                body=body,
                idempotency_key=idempotency_key,
                reply_to=reply_to,
                admission=admission,
                request_id=request_id,
            )
        except BaseException:
            await self._release(admission)
            raise
        if not submitted.created or submitted.job.cached:
            await self._release(admission)  # no new unfinished job after all: no tokens used
        return submitted

    async def _admit(self, admission: _Admission) -> None:
        """Check the key's limits, counting the job as unfinished (raises KeyLimited)."""
        limits = admission.limits
        if limits is None or self._key_limits is None:
            return
        try:
            decision = await self._key_limits.admit(
                admission.key_id,
                admission.job_id,
                rpm=limits.requests_per_minute,
                max_concurrent=limits.max_concurrent_jobs,
                tpm=limits.tokens_per_minute,
                tokens=admission.tokens,
            )
        except RedisError as exc:  # limits need Redis; jobs do not: let it through
            log.warning("key limits not checked (Redis unavailable): %s", exc)
            return
        if not decision.allowed:
            raise admission.limited(decision)
        admission.counted = True

    async def _release(self, admission: _Admission, *, tokens: int | None = 0) -> None:
        """Uncount a counted job; ``tokens``: what it used (0: it never ran; None: unknown,
        its TPM estimate stays charged)."""
        if admission.counted and self._key_limits is not None:
            try:
                await self._key_limits.job_finished(
                    admission.key_id, admission.job_id, tokens=tokens
                )
            except RedisError as exc:
                log.warning("key count not released for %s: %s", admission.key_id, exc)

    async def _submit(
        self,
        *,
        body: JobCreateBody,
        idempotency_key: str | None,
        reply_to: str | None,
        admission: _Admission,
        request_id: str | None,
    ) -> Submitted:
        key_id, job_id = admission.key_id, admission.job_id
        router = self._router()
        call = body.call_request()
        kind = body.job_kind
        if admission.limits is not None and admission.limits.tokens_per_minute:
            admission.tokens = request_tokens(call)
        try:
            deployment = await router.choose(body.model)
        except UnknownModel:
            await self._admit(admission)  # a request all the same: it counts against the rate
            raise
        if not router.serves(body.model, kind):
            raise KindNotServed(body.model, kind)
        cache_key, ttl, cached = await self._cache_lookup(
            key_id=key_id, body=body, call=call, route=deployment.route
        )
        stored_request = call.model_dump(mode="json", exclude_none=True)
        new_job = NewJob(
            key_id=key_id,
            model=body.model,
            route=deployment.route,
            provider=deployment.provider,
            upstream_model=deployment.upstream_model,
            request=stored_request,
            priority=body.priority,
            metadata=body.metadata,
            idempotency_key=idempotency_key,
            request_hash=request_hash(body) if idempotency_key is not None else None,
            cache_key=cache_key,
            cache_ttl=ttl,
            cached=cached,
            webhook=body.webhook.model_dump(mode="json") if body.webhook else None,
            expires_at=body.deadline(self._clock()),
            deployment_index=deployment.index,
            id=job_id,
            reply_to=reply_to,
            kind=kind.value,
            reservation=self._reservation(admission, stored_request, deployment.route, kind),
        )
        if (
            reply_to is not None
            and idempotency_key is None
            and cache_key is None
            and new_job.reservation is None
        ):
            return await self._submit_direct(new_job, admission, request_id)
        await self._admit(admission)
        if idempotency_key is None and cached is None:
            job, created = await self._inserts.insert(new_job), True
        else:
            async with self._database.session() as session:
                job, created = await create_job(session, job=new_job, now=self._clock())
        if created and job.cached:
            await self._emit(job, EventType.SUCCEEDED, terminal_data(job))
        elif created:
            await self._emit(
                job,
                EventType.QUEUED,
                {"model": job.model, "provider": job.provider, "priority": job.priority},
            )
            await self._count_assigned(job)
            await self._publish(job, request_id)
        return Submitted(job=job, created=created)

    def _reservation(
        self, admission: _Admission, request: dict[str, Any], route: str, kind: JobKind
    ) -> Reservation | None:
        """The job's worst case as a reservation of its key's budget (None: no budget)."""
        budget = admission.budget
        if budget is None:
            return None
        found = self._router().route(route)
        worst = worst_case(
            request,
            route=found[1] if found is not None else None,
            default_max_output=self._settings.budgets.default_max_output_tokens,
            kind=kind.value,
        )
        return Reservation(
            key_id=admission.key_id,
            window=window_of(budget.period, self._clock()),
            usd=worst.usd,
            tokens=worst.tokens,
            limits=budget,
        )

    async def _submit_direct(
        self, job: NewJob, admission: _Admission, request_id: str | None
    ) -> Submitted:
        """The sync lane: the job travels in its message; the worker stores its row.

        The key's limits and the message's sending are one step (one script, one
        round trip): a refused call sends nothing.
        """
        now = self._clock()
        fields = dataclasses.asdict(job)
        del fields["reservation"]  # never one on this lane; a worker of before knows none
        if fields["kind"] == JobKind.CHAT.value:
            del fields["kind"]  # the default: a worker of before knows no kind
        message: dict[str, Any] = {"job": fields, "created_at": now}
        if request_id is not None:
            message["request_id"] = request_id
        traceparent = current_traceparent()  # the request's span, when tracing
        if traceparent is not None:
            message["traceparent"] = traceparent
        queue = self._settings.queue_for(job.provider)
        limits = admission.limits
        counted = self._count_assigned_to(job.provider, job.upstream_model, admission.job_id)
        try:
            if limits is None or self._key_limits is None:
                await asyncio.gather(counted, self._lane.send(queue, message))
                return Submitted(job=queued_view(job, now=now), created=True, direct=True)
            _, decision = await asyncio.gather(
                counted,
                self._key_limits.admit(
                    admission.key_id,
                    admission.job_id,
                    rpm=limits.requests_per_minute,
                    max_concurrent=limits.max_concurrent_jobs,
                    tpm=limits.tokens_per_minute,
                    tokens=admission.tokens,
                    then_add=self._lane.entry(queue, message),
                ),
            )
        except RedisError as exc:
            raise BrokerUnavailable(f"the queue did not take job {job.id}: {exc}") from exc
        if not decision.allowed:
            await self._uncount(job)
            raise admission.limited(decision)
        admission.counted = True
        return Submitted(job=queued_view(job, now=now), created=True, direct=True)

    async def _uncount(self, job: NewJob) -> None:
        """Give back the routing count of a job that was refused after all."""
        try:
            await self._state.finished(
                provider=job.provider, model=job.upstream_model, latency_ms=None
            )
        except RedisError as exc:  # only a routing hint; the reconciler recounts
            log.warning("in-flight count not given back for %s: %s", job.id, exc)

    async def _emit(self, job: Job, kind: EventType, data: dict[str, Any]) -> None:
        await self._events.emit(JobEvent(job_id=job.id, key_id=job.key_id, type=kind, data=data))

    async def _cache_lookup(
        self,
        *,
        key_id: str,
        body: JobCreateBody,
        call: CallRequest,
        route: str,
    ) -> tuple[str | None, float | None, dict[str, Any] | None]:
        """The job's cache entry and TTL (None when not cached), and a hit if any."""
        found = self._router().route(route)
        ttl = cache_ttl(found[1] if found else None, body.cache)
        if ttl is None:
            return None, None, None
        key = self._cache.key(key_id=key_id, route=route, request=call)
        return key, ttl, await self._cache.get(key)

    async def _count_assigned(self, job: Job) -> None:
        await self._count_assigned_to(job.provider, job.upstream_model, job.id)

    async def _count_assigned_to(self, provider: str, model: str, job_id: str) -> None:
        try:
            await self._state.assigned(provider=provider, model=model)
        except RedisError as exc:  # only a routing hint; the reconciler recounts
            log.warning("in-flight count not updated for %s: %s", job_id, exc)

    async def _publish(self, job: Job, request_id: str | None) -> None:
        # Not taken (the broker is down): the job stays unmarked; the reconciler publishes it.
        await self._outbox.publish_job(
            JobMessage(
                job_id=job.id,
                provider=job.provider,
                priority=job.priority,
                details=JobDetails(
                    request_id=request_id,
                    model=job.model,
                    key_id=job.key_id,
                    traceparent=current_traceparent(),  # the request's span, when tracing
                ),
            )
        )

    async def abandon(self, *, key_id: str, job_id: str, direct: bool) -> None:
        """The caller waiting on the job left: cancel it.

        A direct job may have no row yet: it is marked cancelled in Redis, so
        a worker that has not started it records it cancelled without a
        call, and one that is calling stops.
        """
        if not direct:
            await self.cancel(key_id=key_id, job_id=job_id)
            return
        try:
            await self._redis.set(
                self._keys.direct_cancelled(job_id),
                "1",
                ex=int(self._settings.chat.timeout_seconds) + 60,
            )
            await publish_cancel(self._redis, key_prefix=self._settings.key_prefix, job_id=job_id)
        except RedisError as exc:
            log.warning("abandoned job %s not cancelled (Redis unavailable): %s", job_id, exc)
        # Stored meanwhile? Then cancel the row too (a no-op when there is none yet).
        await self.cancel(key_id=key_id, job_id=job_id)

    async def cancel(self, *, key_id: str, job_id: str) -> tuple[Job | None, bool]:
        """Cancel a job; returns the job (None if not the key's) and whether it changed."""
        async with self._database.session() as session:
            job = await get_job(session, job_id=job_id, key_id=key_id)
            if job is None:
                return None, False
            changed = await cancel_job(session, job_id=job_id, key_id=key_id, now=self._clock())
            await session.refresh(job)
        if changed:
            # It may have been running: what it used is unknown, its estimate stays.
            await self._release(_Admission(key_id, job_id, None, counted=True), tokens=None)
            await self._emit(job, EventType.CANCELLED, terminal_data(job))
            if job.reply_to is not None:  # a caller waits on it (its worker may never run it)
                reply = Reply(job_id=job_id, type=EventType.CANCELLED.value, data={})
                await self._replies.send(job.reply_to, reply)
            # Even a job read as queued may have been claimed since: always signal.
            await publish_cancel(self._redis, key_prefix=self._settings.key_prefix, job_id=job_id)
        return job, changed
