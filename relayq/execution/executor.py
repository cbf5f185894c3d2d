"""Running one job: claim it, call its provider, record the attempt and outcome.

One :class:`Executor` lives on each worker process's event loop and runs
hundreds of jobs concurrently. It also keeps the leases of its running jobs
alive and stops a job's call when the job is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError

from relayq.config.prices import job_cost
from relayq.direct.pending_rows import PendingRows
from relayq.direct.replies import Replies, Reply
from relayq.events.log import EventLog, EventType, JobEvent
from relayq.execution.cache import ResponseCache
from relayq.execution.deltas import Delta, DeltaPublisher, EventPublisher, EventsDelta
from relayq.execution.image_files import ImageFiles
from relayq.execution.ledger import JobLedger
from relayq.execution.responses import (
    ResponseAnswer,
    chat_request,
    native_answer,
    stream_native,
    translated,
)
from relayq.observability import tracing
from relayq.observability.logs import logged_with
from relayq.observability.metrics import WorkerMetrics
from relayq.providers.assembly import CompletionAssembler
from relayq.providers.base import Provider
from relayq.providers.errors import (
    MalformedResponse,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
)
from relayq.providers.text_stream import TextAssembler
from relayq.recovery.handback import Taken
from relayq.resilience.key_limits import KeyLimits
from relayq.resilience.policy import Action, after_admission, before_call
from relayq.resilience.resilience import Admission, Resilience, deployment_id
from relayq.routing.state import RoutingState
from relayq.schemas.chat import ChatCompletion, ChatCompletionRequest
from relayq.schemas.completions import TextCompletion, TextCompletionRequest
from relayq.schemas.embeddings import EmbeddingRequest, EmbeddingResponse
from relayq.schemas.images import ImageGenerationRequest, ImagesResponse
from relayq.schemas.jobs import CallRequest, JobKind, JobStatus
from relayq.schemas.responses import ResponsesRequest
from relayq.store import Database
from relayq.store.attempts import AttemptRecord
from relayq.store.claims import Claim, release_claim, renew_leases
from relayq.store.jobs import DirectRun, NewJob
from relayq.store.outcomes import Finished, Outcome
from relayq.store.retries import expire_claimed

__all__ = ["Executor", "RunResult"]

log = logging.getLogger(__name__)
outcomes = logging.getLogger("relayq.jobs")
"""One line per job that ended, with what an operator asks of it (never its text)."""


class RunResult(str, Enum):
    """What a delivery of a job's message came to."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    """Not ours to run: already succeeded, or held by a live lease (a job found already
    failed, cancelled or expired comes to that end instead)."""
    SUPERSEDED = "superseded"
    """Ran, but the job had meanwhile been cancelled or taken over."""
    EXPIRED = "expired"
    REQUEUED = "requeued"
    """Failed here and went back to a queue: to retry, or to the next deployment."""
    WAITING = "waiting"
    """Went back to its queue to wait for a rate limit or its countdown."""


_ENDED_UNSUCCESSFULLY = {
    JobStatus.FAILED: RunResult.FAILED,
    JobStatus.CANCELLED: RunResult.CANCELLED,
    JobStatus.EXPIRED: RunResult.EXPIRED,
}
"""A job found already ended this way: its delivery shows the same end."""


@dataclass
class _Running:
    """One run of a job on this worker (a retry of the same job is another run)."""

    claim: Claim
    task: asyncio.Task[object] | None
    cancelled: bool = False
    called_at: float | None = None
    """``perf_counter`` when the provider call began (None: no call yet)."""
    deltas: DeltaPublisher | EventPublisher | None = None
    admission: Admission | None = None
    """The call's admission, told how it went once the caller has its answer."""
    check_caller: bool = False
    """Ask, with the admission, whether the caller waiting on this run left."""
    announced: asyncio.Future[None] | None = None
    """The run's ``started`` event, still to be waited for before its terminal one."""

    def latency_ms(self) -> float:
        return 0.0 if self.called_at is None else (time.perf_counter() - self.called_at) * 1000


class BreakerOpen(ProviderUnavailable):
    """The deployment's circuit breaker refused the call (none was made): fall back."""

    code = "breaker_open"
    retryable = False
    provider_side = False


async def _together(*steps: Awaitable[Any]) -> list[Any]:
    """Run ``steps`` at once and wait for all of them; then raise the first failure.

    Unlike a bare :func:`asyncio.gather`, no step is left running when another fails.
    """
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _total_tokens(usage: dict[str, Any] | None) -> int | None:
    """The tokens a call's reported usage counts (None when it reported none)."""
    if not usage:
        return None
    total = usage.get("total_tokens")
    if total is None:
        total = (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0)
    return int(total)


def _failed(code: str, message: str) -> Outcome:
    return Outcome(status=JobStatus.FAILED, error={"code": code, "message": message})


async def _stream(
    provider: Provider,
    request: ChatCompletionRequest | TextCompletionRequest,
    model: str,
    deltas: DeltaPublisher | None,
) -> ChatCompletion | TextCompletion:
    """Stream the call, publishing deltas as they come; the whole answer at the end.

    Only runs whose text someone reads as it comes stream: the others ask the
    upstream for the whole answer, one body to parse instead of a chunk per token.
    A legacy completion streams its ``text_completion`` chunks the same way
    (:mod:`relayq.providers.text_stream`).
    """
    assembler: CompletionAssembler | TextAssembler
    if isinstance(request, TextCompletionRequest):
        assembler = TextAssembler()
        chunks = provider.stream_text(request, model=model)
    else:
        assembler = CompletionAssembler()
        chunks = provider.stream(request, model=model)
    try:
        async for chunk in chunks:
            assembler.add(chunk)
            if deltas is not None:
                deltas.add(chunk)  # its send is queued now, before the next chunk is parsed
    except BaseException:
        if deltas is not None:  # no delta may follow the run's end
            await deltas.abandon()
        raise
    finally:
        # Release the upstream connection now, also when cancelled mid-stream.
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
    if deltas is not None:
        await deltas.flush()
    try:
        return assembler.completion()
    except ValueError as exc:
        raise MalformedResponse(f"{provider.name}: the stream carried no chunks") from exc


Answer = ChatCompletion | EmbeddingResponse | TextCompletion | ImagesResponse | ResponseAnswer
"""What the provider answers, by the job's kind."""

_REQUEST_MODELS: dict[str, type[CallRequest]] = {
    JobKind.CHAT.value: ChatCompletionRequest,
    JobKind.EMBEDDINGS.value: EmbeddingRequest,
    JobKind.COMPLETIONS.value: TextCompletionRequest,
    JobKind.IMAGES.value: ImageGenerationRequest,
    JobKind.RESPONSES.value: ResponsesRequest,
}


def _call_request(claim: Claim) -> CallRequest:
    """The claim's stored request, parsed as its kind's (raises ValidationError)."""
    return _REQUEST_MODELS.get(claim.kind, ChatCompletionRequest).model_validate(claim.request)


Sink = DeltaPublisher | EventPublisher
"""Where a run's text goes as it comes: chunks, or a native responses run's events."""


async def _ask(
    provider: Provider, request: CallRequest, model: str, deltas: Sink | None, *, job_id: str
) -> Answer:
    """The provider's answer: embeddings, images, a legacy completion, a response, or a
    chat completion (streamed when someone reads its text as it comes)."""
    if isinstance(request, ResponsesRequest):
        return await _respond(provider, request, model, deltas, job_id=job_id)
    assert not isinstance(deltas, EventPublisher)
    if isinstance(request, EmbeddingRequest):
        return await provider.embed(request, model=model)
    if isinstance(request, ImageGenerationRequest):
        return await provider.generate_images(request, model=model)
    if deltas is not None:
        return await _stream(provider, request, model, deltas)
    # Nobody reads its text as it comes: ask for the whole.
    if isinstance(request, TextCompletionRequest):
        return await provider.complete_text(request, model=model)
    return await provider.complete(request, model=model)


async def _respond(
    provider: Provider, request: ResponsesRequest, model: str, deltas: Sink | None, *, job_id: str
) -> ResponseAnswer:
    """A responses job's answer (:mod:`relayq.execution.responses`): natively, streamed as
    the upstream's events when someone reads them; else over chat, streamed as chunks."""
    if provider.native_responses:
        if isinstance(deltas, EventPublisher):
            return await stream_native(provider, request, model=model, events=deltas)
        return native_answer(await provider.respond(request, model=model))
    chat = chat_request(request)
    if isinstance(deltas, DeltaPublisher):
        completion = await _stream(provider, chat, model, deltas)
    else:
        completion = await provider.complete(chat, model=model)
    assert isinstance(completion, ChatCompletion)
    return translated(completion, request=request, job_id=job_id)


def _provider_failure(
    claim: Claim, exc: ProviderError, started: float | None
) -> tuple[Outcome, AttemptRecord]:
    error: dict[str, Any] = {
        **exc.to_dict(),
        "provider": claim.provider,
        "model": claim.upstream_model,
    }
    attempt = AttemptRecord(
        provider=claim.provider,
        upstream_model=claim.upstream_model,
        status="failed" if started is not None else "skipped",
        latency_ms=(time.perf_counter() - started) * 1000 if started is not None else 0.0,
        error=error,
    )
    return Outcome(status=JobStatus.FAILED, error=error), attempt


def _terminal_data(outcome: Outcome) -> dict[str, Any]:
    return {
        "status": outcome.status.value,
        "response": outcome.response,
        "usage": outcome.usage,
        "error": outcome.error,
    }


def _waits(claim: Claim, now: float) -> tuple[float | None, float | None]:
    """Seconds from the job's acceptance to this run's claim, and to ``now`` (its end)."""
    created, claimed = claim.created_at, claim.claimed_at
    if not created:
        return None, None
    return (claimed - created if claimed else None), now - created


def _log_outcome(
    claim: Claim,
    outcome: Outcome,
    attempt: AttemptRecord | None,
    *,
    waited: float | None,
    age: float | None,
    cost: float | None,
) -> None:
    """The job's one line at its end (logger ``relayq.jobs``): who, where, how it went, how
    long it waited and took, what it used. Never its prompt or answer."""
    usage = outcome.usage or {}
    outcomes.info(
        "job %s %s",
        claim.job_id,
        outcome.status.value,
        extra={
            "job_id": claim.job_id,
            "batch_id": claim.batch_id,
            "key_id": claim.key_id,
            # The model asked for (a route, or one of its aliases' route) and the
            # deployment that ran the last attempt.
            "model": claim.route,
            "provider": claim.provider,
            "upstream_model": claim.upstream_model,
            "deployment": deployment_id(claim.provider, claim.upstream_model),
            "status": outcome.status.value,
            "attempts": claim.attempts + (1 if attempt is not None else 0),
            "queue_wait_ms": _ms(waited) if waited is not None else None,
            "call_ms": round(attempt.latency_ms, 1) if attempt is not None else None,
            "age_ms": _ms(age) if age is not None else None,
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "error_code": (outcome.error or {}).get("code"),
            # At the price of the deployment that served it; None without a price.
            "cost_usd": cost,
        },
    )


def _ms(seconds: float) -> float:
    return round(max(seconds, 0.0) * 1000, 1)


def _logged_for(job_id: str, request_id: str | None) -> contextlib.AbstractContextManager[None]:
    if request_id is None:
        return logged_with(job_id=job_id)
    return logged_with(job_id=job_id, request_id=request_id)


def _attempt_span(
    claim: Claim, traceparent: str | None
) -> contextlib.AbstractContextManager[tracing.Span | None]:
    """The span of one attempt at the job (a run that claimed it), continuing the trace
    its message carried; a null context when tracing is off."""
    if not tracing.enabled():
        return tracing.NO_SPAN
    attributes: dict[str, str | int] = {
        "relayq.job.id": claim.job_id,
        "relayq.model": claim.route,
        "relayq.provider": claim.provider,
        "relayq.upstream_model": claim.upstream_model,
        "relayq.attempt": claim.attempts + 1,
        "relayq.run": claim.run,
    }
    if claim.batch_id is not None:
        attributes["relayq.batch.id"] = claim.batch_id
    return tracing.span("job attempt", kind="consumer", parent=traceparent, attributes=attributes)


def _attempt_ended(span: tracing.Span, result: RunResult) -> None:
    span.set_attribute("relayq.outcome", result.value)
    if result is RunResult.FAILED:
        tracing.failed(span, result.value)


def _call_span(claim: Claim) -> contextlib.AbstractContextManager[tracing.Span | None]:
    """The span of one provider call (a child of its attempt's); a null context when
    tracing is off. Named as OpenTelemetry's GenAI conventions name a chat (or an
    embeddings) call."""
    if not tracing.enabled():
        return tracing.NO_SPAN
    operation = {
        "embeddings": "embeddings",
        "completions": "text_completion",
        "images": "image_generation",
    }.get(claim.kind, "chat")
    return tracing.span(
        f"{operation} {claim.upstream_model}",
        kind="client",
        attributes={
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": claim.upstream_model,
            "relayq.provider": claim.provider,
            "relayq.stream": bool(claim.request.get("stream")),
        },
    )


def _call_answered(span: tracing.Span, completion: Answer) -> None:
    if isinstance(completion, ResponseAnswer):
        counted = completion.usage or {}
        span.set_attribute("gen_ai.response.model", completion.model)
        span.set_attribute("gen_ai.usage.input_tokens", int(counted.get("prompt_tokens") or 0))
        span.set_attribute("gen_ai.usage.output_tokens", int(counted.get("completion_tokens") or 0))
        return
    if isinstance(completion, ImagesResponse):  # names no model
        usage = completion.job_usage()
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        return
    span.set_attribute("gen_ai.response.model", completion.model)
    if isinstance(completion, EmbeddingResponse):
        span.set_attribute("gen_ai.usage.input_tokens", completion.usage.prompt_tokens)
    elif completion.usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", completion.usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", completion.usage.completion_tokens)


_ROW_STORED_WITHIN = 0.05
"""The longest a direct job's row waits for its caller to hear from the job (seconds)."""
_CANCEL_KEPT_SECONDS = 120.0
"""How long a cancel heard for a job not running here is kept (past any lane wait)."""
_CANCELS_KEPT = 10_000
"""Past this many kept cancels, the expired ones are dropped."""
_CLOCK_MARGIN_SECONDS = 1.0


class Executor:
    """Runs jobs on one event loop with the process's providers and database."""

    def __init__(
        self,
        *,
        database: Database,
        providers: dict[str, Provider],
        lease_seconds: float,
        max_in_flight: int = 1000,
        routing_state: RoutingState | None = None,
        cache: ResponseCache | None = None,
        events: EventLog | None = None,
        resilience: Resilience | None = None,
        metrics: WorkerMetrics | None = None,
        key_limits: KeyLimits | None = None,
        replies: Replies | None = None,
        taken: Taken | None = None,
        owner: str | None = None,
        image_files: ImageFiles | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``owner`` and ``taken``: this process's instance id, recorded with its claims,
        and its record of the jobs it took (what its supervisor hands back if it dies).
        ``image_files``: where generated images' bytes go (without it, they stay in the
        job's answer)."""
        self._database = database
        self._providers = providers
        self._routing_state = routing_state
        self._cache = cache
        self._events = events
        self._resilience = resilience
        self._metrics = metrics
        self._key_limits = key_limits
        self._replies = replies
        self._lease_seconds = lease_seconds
        self._clock = clock
        self._taken = taken
        self._image_files = image_files
        self._ledger = JobLedger(database, lease_seconds=lease_seconds, owner=owner, clock=clock)
        # Envelopes bring many jobs per message: the worker's concurrency bounds its
        # jobs in flight, not Celery's prefetch. A job waits for a slot before its claim.
        self._slots = asyncio.Semaphore(max_in_flight)
        # Keyed by run, not job: a retry that lands here while the failed run is
        # still winding down is another entry, which that run's cleanup leaves be.
        self._running: dict[tuple[str, int], _Running] = {}
        # Direct jobs whose row is stored beside their call: a write that needs
        # the row (an outcome, a retry, an expiry) has it stored first.
        self._rows = PendingRows(self._ledger.store, within=_ROW_STORED_WITHIN)
        # Cancels heard for jobs not running here (yet): a sync job's caller may
        # leave before its message is read. Job id -> when it is forgotten.
        self._cancels_heard: dict[str, float] = {}
        self._cancels_heard_since: float | None = None

    @property
    def in_flight(self) -> int:
        """Runs calling (or about to call) their provider now."""
        return len(self._running)

    @property
    def transactions(self) -> int:
        """Claim and outcome transactions committed (for tests and metrics)."""
        return self._ledger.transactions

    async def run(
        self, job_id: str, *, request_id: str | None = None, traceparent: str | None = None
    ) -> RunResult:
        """Run ``job_id`` if it is ours to run; record what happened exactly once.

        Every line logged meanwhile names the job, and ``request_id`` (the HTTP
        request that made it) when its message carried one. When tracing, the
        attempt's span continues ``traceparent`` (its message's).
        """
        with _logged_for(job_id, request_id):
            async with self._took(job_id), self._slots:
                return await self._run(job_id, traceparent)

    @contextlib.asynccontextmanager
    async def _took(
        self, job_id: str, message: dict[str, Any] | None = None
    ) -> AsyncIterator[None]:
        """Keep ``job_id`` in this process's record of taken jobs while it is here."""
        if self._taken is None:
            yield
            return
        async with self._taken.holding(job_id, message):
            yield

    async def _run(self, job_id: str, traceparent: str | None) -> RunResult:
        claim = await self._ledger.claim(job_id)
        if claim is None:
            return await self._not_claimed(job_id)
        with _attempt_span(claim, traceparent) as span:
            result = await self._before_call(claim)
            if result is None:
                result = await self._attempt(claim)
            if span is not None:
                _attempt_ended(span, result)
            return result

    async def _not_claimed(self, job_id: str) -> RunResult:
        """What a delivery whose job was not ours to run came to: the job's own end when it
        ended other than succeeded (cancelled while queued, say), so that monitors never
        show that job's task as a success; else skipped (it succeeded, or a live lease
        holds it)."""
        status = await self._ledger.status(job_id)
        return _ENDED_UNSUCCESSFULLY.get(status, RunResult.SKIPPED) if status else RunResult.SKIPPED

    async def run_direct(self, message: dict[str, Any], *, recorded: bool = False) -> RunResult:
        """Run a sync job that came in its message, with no row yet (the sync lane).

        The call starts at once; the row is stored as running in the ledger's
        next tick, beside it. A redelivered message (the fence is set) goes the
        way of any stored job, :meth:`run`, where the row decides; if there is
        no row (the first delivery's worker died before storing it), it stores
        the row first and is the job's first run.

        ``recorded``: the message came on the sync lane, whose pending entries
        keep the record that this process took it (the process's own taken
        record is not written), and which delivers an entry once unless it is
        handed back or taken over, both of which mark it ``redelivered``. So a
        lane message not so marked is the job's first delivery: no fence is
        needed, and whether its caller left is asked with the call's admission,
        in the same round trip.
        """
        job_id = str(message["job"]["id"])
        with _logged_for(job_id, message.get("request_id")):
            if recorded:
                async with self._slots:
                    return await self._run_direct(message, fresh=not message.get("redelivered"))
            async with self._took(job_id, message), self._slots:
                return await self._run_direct(message, fresh=False)

    async def _run_direct(self, message: dict[str, Any], *, fresh: bool) -> RunResult:
        job = NewJob(**message["job"])
        assert job.id is not None
        assert self._replies is not None
        if fresh:
            first, caller_left = True, False
        elif message.get("redelivered"):
            first, caller_left = False, False
        else:
            first, caller_left = await self._replies.first_delivery(job.id)
        created_at = float(message["created_at"])
        direct = DirectRun(job=job, created_at=created_at)
        if first:
            self._rows.add(job.id, direct)
        elif await self._ledger.store(direct):
            # Delivered again, and no row: the first delivery's worker died before
            # storing it. This delivery is the job's first run.
            self._rows.add_stored(job.id)
        else:
            return await self._run(job.id, message.get("traceparent"))
        claim = Claim(
            job_id=job.id,
            key_id=job.key_id,
            run=1,
            provider=job.provider,
            upstream_model=job.upstream_model,
            request=job.request,
            route=job.route,
            priority=job.priority,
            deployment_index=job.deployment_index,
            first_deployment=job.deployment_index,
            expires_at=job.expires_at,
            reply_to=job.reply_to,
            created_at=created_at,
            claimed_at=time.time(),
            kind=job.kind,
        )
        try:
            with _attempt_span(claim, message.get("traceparent")) as span:
                result: RunResult | None
                if caller_left:
                    result = await self._end(claim, Outcome(status=JobStatus.CANCELLED), None)
                else:
                    result = await self._before_call(claim)
                if result is None:
                    result = await self._attempt(
                        claim, check_caller=fresh and not self._hears_cancels_since(created_at)
                    )
                if span is not None:
                    _attempt_ended(span, result)
                return result
        finally:
            await self._rows.settle(job.id)

    async def _stored(self, claim: Claim) -> bool:
        """Whether ``claim``'s row exists for this run (a direct job's, once stored)."""
        if claim.run != 1 or claim.job_id not in self._rows:
            return True
        try:
            return await self._rows.stored(claim.job_id)
        except Exception:
            log.exception("job %s: its row was not stored; its outcome is lost", claim.job_id)
            raise

    async def _before_call(self, claim: Claim) -> RunResult | None:
        """Expire it, or put it back to wait, or None: the job may be called now."""
        now = self._clock()
        step = before_call(now=now, expires_at=claim.expires_at, not_before=claim.not_before)
        if step.action is Action.EXPIRE:
            if not await self._stored(claim):
                return RunResult.SUPERSEDED
            async with self._database.session() as session:
                expired = await expire_claimed(session, claim=claim, now=now)
            if not expired:
                return RunResult.SUPERSEDED
            outcome = Outcome(
                status=JobStatus.EXPIRED, error={"code": "expired", "message": step.reason}
            )
            await self._reply(claim, outcome.status.value, _terminal_data(outcome))
            await self._emit(claim, EventType.EXPIRED, _terminal_data(outcome))
            await self._record_finish(claim, outcome, None)
            return RunResult.EXPIRED
        if step.action is Action.WAIT and self._resilience is not None:
            if not await self._stored(claim):
                return RunResult.SUPERSEDED
            await self._resilience.wait_turn(claim, step.delay, step.reason)
            return RunResult.WAITING
        return None

    async def _attempt(self, claim: Claim, *, check_caller: bool = False) -> RunResult:
        running = _Running(claim=claim, task=asyncio.current_task(), check_caller=check_caller)
        self._running[(claim.job_id, claim.run)] = running
        try:
            result = await self._call(running)
        except asyncio.CancelledError:
            if not running.cancelled:
                raise
            result = (
                Outcome(status=JobStatus.CANCELLED),
                AttemptRecord(
                    provider=claim.provider,
                    upstream_model=claim.upstream_model,
                    status="cancelled",
                    latency_ms=running.latency_ms(),
                ),
            )
        finally:
            del self._running[(claim.job_id, claim.run)]
        if isinstance(result, RunResult):
            return result
        return await self._end(claim, *result, running=running)

    async def _end(
        self,
        claim: Claim,
        outcome: Outcome,
        attempt: AttemptRecord | None,
        *,
        running: _Running | None = None,
    ) -> RunResult:
        """Answer the waiting caller first; then the outcome is recorded (the next
        tick's write) while the breaker hears of the call; then its effects.

        The effects of one end go together: the breaker's success beside the SQL
        write, then the terminal event, routing counts, the key's count and the
        cache entry. Queued on the loop at once, their Redis commands share one
        pipeline (:class:`~relayq.redis.pipeline.CommandBatch`), so the jobs of a
        clump that ends together cost two pipelines, not five in a row.
        """
        await self._reply(claim, outcome.status.value, _terminal_data(outcome))
        self._rows.heard(claim.job_id)  # the answer went first; the row follows it
        outcome = self._priced(claim, outcome)
        recording = self._finish(claim, outcome, attempt)
        if (
            self._resilience is not None
            and running is not None
            and running.admission is not None
            and outcome.status is JobStatus.SUCCEEDED
        ):
            heard = self._resilience.succeeded(claim, running.admission, outcome.usage)
            _, finished = await _together(heard, recording)
        else:
            finished = await recording
        if running is not None and running.announced is not None:
            await running.announced  # the started event goes before the terminal one
        if not finished:
            return RunResult.SUPERSEDED
        await _together(
            self._emit(
                claim,
                EventType(outcome.status.value),
                _terminal_data(outcome),
                deliveries=finished.deliveries,
            ),
            self._record_finish(claim, outcome, attempt),
            self._remember(claim, outcome),
        )
        return RunResult(outcome.status.value)

    async def _finish(
        self, claim: Claim, outcome: Outcome, attempt: AttemptRecord | None
    ) -> Finished | None:
        """Write the outcome (fenced by the run); None if this run no longer owns the job."""
        if not await self._stored(claim):
            return None
        return await self._ledger.finish(claim, outcome, attempt)

    async def _hand_back(self, claim: Claim) -> None:
        """Put ``claim``'s job back in the queue, unconfirmed: the reconciler sends it."""
        if not await self._stored(claim):
            return
        async with self._database.session() as session:
            released = await release_claim(session, claim=claim)
        log.warning("job %s handed back (%s)", claim.job_id, "queued" if released else "moved on")

    async def _reply(self, claim: Claim, kind: str, data: dict[str, Any]) -> None:
        """Tell the caller waiting on ``claim``'s job, if one does."""
        if self._replies is not None and claim.reply_to is not None:
            await self._replies.send(
                claim.reply_to, Reply(job_id=claim.job_id, type=kind, data=data)
            )
            self._rows.heard(claim.job_id)

    def _delta_sink(
        self, claim: Claim, *, native: bool = False
    ) -> DeltaPublisher | EventPublisher | None:
        """Where this run's text goes as it comes: its waiting caller, else its followers.
        ``native``: a responses run on a deployment that speaks Responses, whose text is
        the upstream's Responses events, not chunks."""
        replies, stream = self._replies, claim.reply_to
        if replies is not None and stream is not None:
            if not claim.request.get("stream"):
                return None  # the caller waits for the whole answer: no text before it

            options = claim.request.get("stream_options")
            # A responses job's chunks become Responses events in its API process, whose
            # response.completed reports the usage the chunks end with.
            include_usage = claim.kind == JobKind.RESPONSES.value or (
                isinstance(options, dict) and bool(options.get("include_usage"))
            )

            # Each delta names its run: an API process that has written one run's text
            # ends the stream if another's comes, whichever reply reaches it first. A
            # native run's say they are Responses events, written as they are.
            run: dict[str, Any] = (
                {"run": claim.run, "events": True} if native else {"run": claim.run}
            )

            def send(sse: bytes) -> asyncio.Future[None]:
                # The caller's own SSE lines: its API process writes them as they are.
                reply = Reply(job_id=claim.job_id, type="delta", data=run, sse=sse)
                sent = replies.send_soon(stream, [reply])
                sent.add_done_callback(heard)  # the row's store waits for the words
                return sent

            def heard(_: asyncio.Future[None]) -> None:
                self._rows.heard(claim.job_id)

            if native:
                return EventPublisher(lambda delta: send(delta.sse()))
            return DeltaPublisher(lambda delta: send(delta.sse(include_usage=include_usage)))
        events = self._events
        # Only a job created with ``stream: true`` sends its text as it comes (as
        # OpenAI's background responses keep their stream's events only then);
        # any other has its whole answer in its terminal event, at a fraction of
        # the cost (an event per gathered chunk, each written to two streams).
        # A batch's requests have no one following their text.
        if events is None or claim.batch_id is not None or not claim.request.get("stream"):
            return None

        def emit(delta: Delta | EventsDelta) -> asyncio.Future[None]:
            event = JobEvent(
                job_id=claim.job_id,
                key_id=claim.key_id,
                type=EventType.DELTA,
                data=delta.event_data(),
            )
            return events.queue_deltas([event])

        return EventPublisher(emit) if native else DeltaPublisher(emit)

    async def _emit(
        self,
        claim: Claim,
        kind: EventType,
        data: dict[str, Any],
        *,
        deliveries: tuple[str, ...] | None = None,
    ) -> None:
        if self._events is not None:
            event = JobEvent(
                job_id=claim.job_id,
                key_id=claim.key_id,
                type=kind,
                data=data,
                deliveries=deliveries,
            )
            await self._events.emit(event)

    async def _remember(self, claim: Claim, outcome: Outcome) -> None:
        """Cache a successful answer when the job asked for it."""
        if (
            self._cache is None
            or claim.cache_key is None
            or claim.cache_ttl is None
            or outcome.status is not JobStatus.SUCCEEDED
            or outcome.response is None
        ):
            return
        await self._cache.put(
            claim.cache_key, response=outcome.response, usage=outcome.usage, ttl=claim.cache_ttl
        )

    def _priced(self, claim: Claim, outcome: Outcome) -> Outcome:
        """``outcome`` with its usage's cost at the price of the deployment that served
        it (:mod:`relayq.config.prices`); None without usage or price."""
        if not outcome.usage or self._resilience is None:
            return outcome
        price = self._resilience.price_of(claim)
        if price is None:
            return outcome
        cost = job_cost(price, outcome.usage, batch=claim.batch_id is not None)
        # To a ten-billionth of a dollar: no float noise (1.0799999999999998e-05) stored.
        return replace(outcome, cost_usd=None if cost is None else round(cost, 10))

    async def _record_finish(
        self, claim: Claim, outcome: Outcome, attempt: AttemptRecord | None
    ) -> None:
        """The job ended: the log, routing strategies, the key's concurrency and metrics
        hear of it."""
        waited, age = _waits(claim, time.time())
        batch = claim.batch_id is not None
        cost = outcome.cost_usd
        _log_outcome(claim, outcome, attempt, waited=waited, age=age, cost=cost)
        if self._metrics is not None:
            usage = outcome.usage or {}
            self._metrics.job_finished(
                status=outcome.status.value,
                model=claim.route,
                provider=claim.provider,
                key_id=claim.key_id,
                queue_wait=waited,
                age=age,
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
                batch=batch,
                cost=cost,
            )
        latency = attempt.latency_ms if outcome.status is JobStatus.SUCCEEDED and attempt else None
        counts: list[Awaitable[None]] = []
        if self._routing_state is not None:
            counts.append(
                self._routing_state.finished(
                    provider=claim.provider, model=claim.upstream_model, latency_ms=latency
                )
            )
        if self._key_limits is not None and claim.batch_id is None:
            # Its reported tokens replace what its key's TPM window reserved for it.
            counts.append(
                self._key_limits.job_finished(
                    claim.key_id, claim.job_id, tokens=_total_tokens(outcome.usage)
                )
            )
        try:
            await _together(*counts)
        except RedisError as exc:  # hints only; the reconciler recounts both
            log.warning("routing state or key count not updated for %s: %s", claim.job_id, exc)

    async def _call(self, running: _Running) -> tuple[Outcome, AttemptRecord | None] | RunResult:
        """One call to the provider, or a :class:`RunResult` if the job was re-queued."""
        claim = running.claim
        provider = self._providers.get(claim.provider)
        if provider is None:
            message = f"provider {claim.provider!r} is not configured on this worker"
            return _failed("provider_not_configured", message), None
        try:
            request = _call_request(claim)
        except ValidationError as exc:
            return _failed("invalid_stored_request", str(exc)), None
        admitted = await self._admission(running, request)
        if not isinstance(admitted, Admission):
            return admitted
        admission = admitted
        # Beside the call, not before it: its commands are queued before any delta's.
        # A direct job's waits for its row (relayq/direct/pending_rows.py): off the path
        # to its caller's first token.
        announced = self._rows.when_heard(
            claim.job_id,
            functools.partial(
                self._emit,
                claim,
                EventType.STARTED,
                {"provider": claim.provider, "model": claim.upstream_model, "run": claim.run},
            ),
        )
        native = claim.kind == JobKind.RESPONSES.value and provider.native_responses
        deltas = running.deltas = self._delta_sink(claim, native=native)
        started = running.called_at = time.perf_counter()
        completion: Answer | None = None
        try:
            # Its span ends before a failure is handled: a retry is the attempt's child.
            with _call_span(claim) as span:
                async with asyncio.timeout(provider.settings.total_timeout):
                    completion = await _ask(
                        provider, request, claim.upstream_model, deltas, job_id=claim.job_id
                    )
                if span is not None:
                    _call_answered(span, completion)
            if isinstance(completion, ImagesResponse) and self._image_files is not None:
                # Bytes that do not decode fail the call (MalformedResponse), as any bad answer.
                completion = await self._image_files.keep(
                    completion, job_id=claim.job_id, key_id=claim.key_id
                )
        except TimeoutError:
            too_long = ProviderTimeout(
                f"{claim.provider}: no complete answer within {provider.settings.total_timeout} s"
            )
            return await self._failure(running, too_long, admission, started=started)
        except ProviderError as exc:
            return await self._failure(running, exc, admission, started=started)
        finally:
            if completion is None:  # no answer: the run announces itself now
                self._rows.heard(claim.job_id)
                await announced
            else:  # after its answer (see _end)
                running.announced = announced
        latency_ms = (time.perf_counter() - started) * 1000
        usage: dict[str, Any] | None
        if isinstance(completion, ResponseAnswer):
            usage, response = completion.usage, completion.response
        elif isinstance(completion, ImagesResponse):
            usage = completion.job_usage().model_dump(mode="json")
            response = completion.model_dump(mode="json", exclude_none=True)
        else:
            usage = completion.usage.model_dump(mode="json") if completion.usage else None
            response = completion.model_dump(mode="json", exclude_none=True)
        running.admission = admission
        attempt = AttemptRecord(
            provider=claim.provider,
            upstream_model=claim.upstream_model,
            status="succeeded",
            latency_ms=latency_ms,
        )
        self._observe(claim, attempt)
        return Outcome(status=JobStatus.SUCCEEDED, response=response, usage=usage), attempt

    async def _admission(
        self, running: _Running, request: CallRequest
    ) -> Admission | tuple[Outcome, AttemptRecord | None] | RunResult:
        """The call's admission, or what the job does instead of the call (the policy's
        :func:`~relayq.resilience.policy.after_admission`, applied)."""
        claim = running.claim
        admission = Admission()
        caller_left = self._cancel_heard(claim.job_id)
        if self._resilience is not None or running.check_caller or caller_left:
            try:
                admission, left = await self._admit(running, request)
            except RedisError:
                # Limits and breaker need Redis. A live worker that cannot go on
                # hands its claim back at once, rather than leave the job to its lease.
                await self._hand_back(claim)
                raise
            step = after_admission(
                caller_left=caller_left or left,
                wait=admission.wait if self._resilience is not None else 0.0,
                breaker_allows=admission.permit is None or admission.permit.allowed,
            )
            if step.action is Action.CANCEL:
                if self._resilience is not None:
                    await self._resilience.unused(claim, admission)
                return Outcome(status=JobStatus.CANCELLED), None
            if step.action is Action.WAIT and self._resilience is not None:
                if not await self._stored(claim):
                    return RunResult.SUPERSEDED
                if await self._resilience.wait_turn(claim, step.delay, step.reason) and (
                    self._metrics is not None
                ):
                    self._metrics.rate_limited(provider=claim.provider, wait=step.delay)
                return RunResult.WAITING
            if step.action is Action.FALLBACK and admission.permit is not None:
                if self._metrics is not None:
                    deployment = deployment_id(claim.provider, claim.upstream_model)
                    self._metrics.breaker_rejections.inc(deployment)
                # No call was made: the breaker's refusal goes the way of a failed
                # call's error (not retryable here), so the job falls back.
                error = BreakerOpen(
                    f"{claim.provider}/{claim.upstream_model}: circuit breaker "
                    f"{admission.permit.state.value}, no call made"
                )
                return await self._failure(running, error, admission, started=None)
        return admission

    async def _admit(self, running: _Running, request: CallRequest) -> tuple[Admission, bool]:
        """The call's admission (limits, breaker) and whether its caller left, in one
        round trip's time at most: both are asked in the same tick, side by side, and
        a deployment clear here needs no round trip at all."""
        claim = running.claim
        resilience, replies = self._resilience, self._replies
        here = resilience.admit_here(claim) if resilience else Admission()

        async def admission() -> Admission:
            if here is not None:
                return here
            assert resilience is not None
            return await resilience.admit(claim, request)

        if not running.check_caller or replies is None:
            return await admission(), False  # no tasks to gather on the common path
        if here is not None:
            return here, await replies.caller_left(claim.job_id)
        return await asyncio.gather(admission(), replies.caller_left(claim.job_id))

    async def _failure(
        self,
        running: _Running,
        error: ProviderError,
        admission: Admission,
        *,
        started: float | None,
    ) -> tuple[Outcome, AttemptRecord] | RunResult:
        claim = running.claim
        outcome, attempt = _provider_failure(claim, error, started)
        self._observe(claim, attempt)
        if self._resilience is None:
            return outcome, attempt
        if started is not None:
            await self._resilience.failed_call(claim, admission, error)
        if not await self._stored(claim):
            return RunResult.SUPERSEDED
        deltas_sent = running.deltas is not None and running.deltas.text_sent
        final = await self._resilience.after_failure(claim, error, attempt, deltas_sent=deltas_sent)
        if final is None:
            # Another attempt follows: text this one sent is void, and a caller
            # already holding some must not be given a second attempt's as one answer.
            await self._reply(
                claim,
                EventType.ATTEMPT_FAILED.value,
                {
                    "attempt": claim.attempts + 1,
                    "deltas_sent": deltas_sent,
                    "error": attempt.error,
                },
            )
            return RunResult.REQUEUED
        return Outcome(status=JobStatus.FAILED, error=final), attempt

    def _observe(self, claim: Claim, attempt: AttemptRecord) -> None:
        metrics = self._metrics
        if metrics is None:
            return
        metrics.attempt(
            provider=claim.provider,
            model=claim.upstream_model,
            status=attempt.status,
            seconds=attempt.latency_ms / 1000,
        )
        if attempt.status == "failed":
            code = str((attempt.error or {}).get("code", "unknown"))
            metrics.provider_errors.inc(claim.provider, code)

    def cancel(self, job_id: str) -> bool:
        """Stop ``job_id``'s provider call if this executor is running it; else keep the
        cancel for a while, in case the job comes here next (a sync job whose caller
        left before its message was read)."""
        stopped = False
        for (running_job, _), running in list(self._running.items()):
            if running_job == job_id and running.task is not None:
                running.cancelled = True
                running.task.cancel()
                stopped = True
        if not stopped:
            now = time.monotonic()
            if len(self._cancels_heard) >= _CANCELS_KEPT:
                self._cancels_heard = {j: t for j, t in self._cancels_heard.items() if t > now}
            self._cancels_heard[job_id] = now + _CANCEL_KEPT_SECONDS
        return stopped

    def hearing_cancels(self, since: float | None) -> None:
        """Every cancel signal reaches :meth:`cancel` since ``since`` (wall clock); None:
        the listener is down. Told by whoever runs the listener."""
        self._cancels_heard_since = since

    def _cancel_heard(self, job_id: str) -> bool:
        """Whether a cancel of ``job_id`` came while it was not running here."""
        until = self._cancels_heard.pop(job_id, None)
        return until is not None and until > time.monotonic()

    def _hears_cancels_since(self, created_at: float) -> bool:
        """Whether every cancel of a job created at ``created_at`` (the API's clock)
        has reached :meth:`cancel`: the listener was up before it, with a margin
        for the clocks of two machines."""
        since = self._cancels_heard_since
        return since is not None and created_at > since + _CLOCK_MARGIN_SECONDS

    async def renew_leases(self) -> None:
        """Extend the leases of every job in flight, in one statement."""
        claims = [running.claim for running in self._running.values()]
        if not claims:
            return
        async with self._database.session() as session:
            await renew_leases(session, claims=claims, until=self._clock() + self._lease_seconds)

    async def keep_leases(self) -> None:
        """Renew leases every third of their length, until cancelled."""
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            try:
                await self.renew_leases()
            except Exception:
                log.exception("lease renewal failed; retrying")
