"""Delivering a webhook: claim the attempt, sign and send it, record it, schedule the next.

One :class:`Deliverer` lives on each worker process's event loop and runs
the ``relayq.deliver_webhook`` messages. It never waits for a retry: a
failed attempt records when the next one is due and publishes a message
with that countdown (in hops of at most ``max_countdown_seconds``, since
the Redis transport redelivers a message held longer than its visibility
timeout). A message that comes early is published again for the rest.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum

import httpx

from relayq.config.settings import WebhookSettings
from relayq.queueing.outbox import Outbox
from relayq.schemas.webhooks import DeliveryStatus
from relayq.store import Database
from relayq.store.deliveries import (
    DeliveryAttempt,
    DeliveryClaim,
    DeliveryOutcome,
    NotDue,
    claim_delivery,
    end_delivery,
    record_attempt,
)
from relayq.store.endpoints import ensure_secrets, get_endpoint_by_id
from relayq.store.unsent import Unsent, forget_enqueued
from relayq.webhooks.backoff import retry_delay
from relayq.webhooks.publishing import WebhookEnqueuer, mark_sent
from relayq.webhooks.signing import signed_headers
from relayq.webhooks.transport import Answer, post_webhook

__all__ = ["Deliverer", "DeliveryResult"]

log = logging.getLogger(__name__)

_LEASE_MARGIN = 30.0
"""Seconds a claim outlives the attempt's timeout before another worker may take it."""


class DeliveryResult(str, Enum):
    """What one delivery message came to."""

    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    """The attempt failed; the next one is scheduled."""
    FAILED = "failed"
    """Given up: out of attempts, 410 Gone, or the endpoint was disabled or deleted."""
    DEFERRED = "deferred"
    """The message came before the attempt was due; it was published again."""
    SKIPPED = "skipped"
    """A stale message: the delivery ended, moved on, or another worker holds it."""


class Deliverer:
    """Runs delivery messages with the process's database and receiver client."""

    def __init__(
        self,
        *,
        database: Database,
        client: httpx.AsyncClient,
        settings: WebhookSettings,
        enqueuer: WebhookEnqueuer,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._database = database
        self._client = client
        self._settings = settings
        self._enqueuer = enqueuer
        self._outbox = Outbox(database=database, enqueuer=enqueuer, clock=clock)
        self._clock = clock
        self._rng = rng

    async def deliver(self, delivery_id: str, run: int) -> DeliveryResult:
        """Make the attempt a message for ``delivery_id`` (token ``run``) stands for."""
        async with self._database.session() as session:
            claim = await claim_delivery(
                session,
                delivery_id=delivery_id,
                run=run,
                now=self._clock(),
                lease_seconds=self._settings.timeout_seconds + _LEASE_MARGIN,
            )
        if claim is None:
            return DeliveryResult.SKIPPED
        if isinstance(claim, NotDue):
            await self._publish(Unsent(delivery_id=delivery_id, run=run), claim.wait, confirm=False)
            return DeliveryResult.DEFERRED
        url = await self._destination(claim)
        if url is None:
            return DeliveryResult.FAILED
        started = self._clock()
        answer = await self._send(claim, url=url)
        now = self._clock()
        outcome = self._judge(claim, answer, now=now)
        attempt = DeliveryAttempt(
            url=url,
            status_code=answer.status_code,
            error=answer.error,
            latency_ms=answer.latency_ms,
            started_at=started,
        )
        async with self._database.session() as session:
            written = await record_attempt(
                session, claim=claim, attempt=attempt, outcome=outcome, now=now
            )
        if not written:
            return DeliveryResult.SKIPPED
        if outcome.status is DeliveryStatus.PENDING:
            assert outcome.next_attempt_at is not None
            wait = outcome.next_attempt_at - now
            await self._publish(Unsent(delivery_id=claim.id, run=claim.run), wait, confirm=True)
            return DeliveryResult.RETRYING
        return DeliveryResult(outcome.status.value)

    async def _destination(self, claim: DeliveryClaim) -> str | None:
        """The URL to call: the job's own, or the key endpoint's as it is now.

        A delivery to a key endpoint that was deleted or disabled since it
        was planned ends here, without an attempt.
        """
        if claim.endpoint_id is None:
            return claim.url
        async with self._database.session() as session:
            endpoint = await get_endpoint_by_id(session, endpoint_id=claim.endpoint_id)
            if endpoint is not None and endpoint.enabled:
                return endpoint.url
            reason = (
                "the key's webhook endpoint was deleted"
                if endpoint is None
                else f"the key's webhook endpoint is disabled: {endpoint.disabled_reason}"
            )
            await end_delivery(session, claim=claim, reason=reason, now=self._clock())
        return None

    async def _send(self, claim: DeliveryClaim, *, url: str) -> Answer:
        async with self._database.session() as session:
            secrets = await ensure_secrets(session, key_id=claim.key_id, now=self._clock())
        body = json.dumps(claim.payload, separators=(",", ":"), ensure_ascii=False).encode()
        headers = signed_headers(secrets, msg_id=claim.id, timestamp=int(self._clock()), body=body)
        return await post_webhook(
            self._client,
            url=url,
            body=body,
            headers=headers,
            timeout_seconds=self._settings.timeout_seconds,
            allow_private=self._settings.allow_private_destinations,
        )

    def _judge(self, claim: DeliveryClaim, answer: Answer, *, now: float) -> DeliveryOutcome:
        if answer.succeeded:
            return DeliveryOutcome(status=DeliveryStatus.SUCCEEDED)
        if answer.status_code == 410:
            when = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return DeliveryOutcome(
                status=DeliveryStatus.FAILED,
                reason="the endpoint answered 410 Gone",
                disable_endpoint=f"answered 410 Gone to delivery {claim.id} at {when}",
            )
        delay = retry_delay(
            self._settings, attempt=claim.run, retry_after=answer.retry_after, rng=self._rng
        )
        if delay is None:
            return DeliveryOutcome(
                status=DeliveryStatus.FAILED, reason=f"gave up after {claim.run} attempts"
            )
        return DeliveryOutcome(status=DeliveryStatus.PENDING, next_attempt_at=now + delay)

    async def _publish(self, unsent: Unsent, wait: float, *, confirm: bool) -> None:
        """Publish the next message for ``unsent`` with a countdown (at most one hop).

        ``confirm`` marks it enqueued; when the broker refuses, the mark is
        cleared so the reconciler sends it once due.
        """
        countdown = min(max(wait, 0.0), self._settings.max_countdown_seconds)
        sent = await self._outbox.send(
            [unsent],
            publish=lambda items: self._enqueuer.send_deliveries(items, countdown=countdown),
            mark=mark_sent if confirm else None,
            what="webhook deliveries",
        )
        if not sent:
            async with self._database.session() as session:
                await forget_enqueued(session, unsent=unsent)
