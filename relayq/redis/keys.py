"""Every Redis key and pub/sub channel relayq reads or writes: the map of what is in Redis.

relayq's own keys all start with ``RELAYQ_KEY_PREFIX`` (``relayq`` unless set)
and a colon; :class:`RedisKeys` names them, each with what it holds, its type
and who writes and reads it. No other module formats a key (a test checks).
Keys are cheap to name: a job's keys are one f-string each, and the classes
that use a fixed key name it once, when they are built.

Celery's Redis transport keeps its own keys, outside the prefix and separated
only by the database number: a list per queue and priority step
(:func:`priority_lists`), the delivered and unacknowledged messages
(:data:`CELERY_UNACKED`, :data:`CELERY_UNACKED_INDEX`, guarded by
``unacked_mutex``) and each queue's bindings (``_kombu.binding.<queue>``, a
set). relayq reads the first three to find the messages a dead worker held,
and counts the lists' lengths for ``/metrics``; the queue names come from the
settings (``llm.<provider>``, ``webhooks``, ``batches``).

Deployments are named ``provider|model``
(:func:`relayq.resilience.resilience.deployment_id`), worker processes by
their instance id, API processes by a random hex id.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CELERY_UNACKED",
    "CELERY_UNACKED_INDEX",
    "PRIORITY_STEPS",
    "RedisKeys",
    "priority_lists",
]

CELERY_UNACKED = "unacked"
"""Hash, Celery's Redis transport's: delivery tag → a delivered message not yet
acknowledged. Read at a hand-back (:mod:`relayq.recovery.handback`)."""

CELERY_UNACKED_INDEX = "unacked_index"
"""Zset, Celery's Redis transport's: delivery tag scored by its delivery time. Read at a
hand-back, for the messages delivered since a dead process started."""

PRIORITY_STEPS = range(10)
"""The broker's priority steps: Redis holds a list per queue and step
(:func:`relayq.queueing.broker.create_celery` configures them)."""


def priority_lists(queue: str) -> list[str]:
    """Lists, Celery's Redis transport's: ``queue``'s waiting messages, one list per
    priority step (``queue``, ``queue:1`` … ``queue:9``; step 0 first). Written by every
    publisher (the API, the reconciler, a hand-back), popped by the workers; their
    lengths are ``/metrics``' queue depths, and a hand-back reads them."""
    return [queue if step == 0 else f"{queue}:{step}" for step in PRIORITY_STEPS]


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """relayq's keys and channels under one prefix (``settings.key_prefix``)."""

    prefix: str

    # Job events (relayq/events/)

    def events(self, job_id: str) -> str:
        """Stream: one job's events, for replay (an entry's id is its SSE id). Appended
        by the process that emits the event (the API at intake, the worker as the
        job runs) through :class:`relayq.events.log.EventLog`; read by the API's
        event hub and ``GET /v1/jobs/{id}/events``. Expires after the job's end."""
        return f"{self.prefix}:events:{job_id}"

    @property
    def firehose(self) -> str:
        """Stream: every job's events, live, capped (about 100,000 entries). Appended
        with each job's stream; read by each API process's event hub alone."""
        return f"{self.prefix}:event-firehose"

    @property
    def cancel_channel(self) -> str:
        """Channel: the id of a job to stop now. Published by the API at a cancel;
        heard by every worker, which stops that job's provider call if it runs it."""
        return f"{self.prefix}:cancel"

    # The sync lane (relayq/direct/)

    def lane(self, queue: str) -> str:
        """Stream: sync calls' messages bound for a provider ``queue``. Added by the API
        (in the script that admits the call); read by the workers in one consumer group
        (``relayq``), each entry acknowledged and deleted once its job ended."""
        return f"{self.prefix}:lane:{queue}"

    @property
    def lane_pattern(self) -> str:
        """A ``SCAN`` pattern matching every lane stream (a hand-back looks in each)."""
        return self.lane("*")

    def replies(self, process: str) -> str:
        """Stream: the deltas and answers of the sync calls that API ``process`` waits on.
        Added by the workers running them; read by that API process alone; expires an
        hour after its last reply."""
        return f"{self.prefix}:replies:{process}"

    def direct_fence(self, job_id: str) -> str:
        """String: set by the first worker to take a sync job's message, so a redelivery
        goes the way of a stored job. Expires after a day."""
        return f"{self.prefix}:direct:{job_id}"

    def direct_cancelled(self, job_id: str) -> str:
        """String: set by the API when a sync job's caller left before its call; the
        worker that takes the job then records it cancelled without calling."""
        return f"{self.prefix}:direct-cancelled:{job_id}"

    # Limits, breakers, routing (relayq/resilience/, relayq/routing/)

    def rate_rpm(self, deployment: str) -> str:
        """String: a deployment's requests-per-minute GCRA state (the next arrival
        time). Written and read by the rate limiter's scripts, in every worker."""
        return f"{self.prefix}:ratelimit:{deployment}:rpm"

    def rate_tpm(self, deployment: str) -> str:
        """String: a deployment's tokens-per-minute GCRA state, as :meth:`rate_rpm`."""
        return f"{self.prefix}:ratelimit:{deployment}:tpm"

    def cooldown(self, provider: str) -> str:
        """String: until when every call to ``provider`` waits (a 429's Retry-After).
        Set by the worker that got the 429; read by every worker's admission."""
        return f"{self.prefix}:ratelimit:cooldown:{provider}"

    def breaker(self, deployment: str) -> str:
        """Hash: a deployment's circuit breaker (state, counts, probes). Changed only
        by the breaker's scripts, in every worker; read by the API's admin routes and
        ``/metrics`` (reset by an admin); forgotten after a day untouched."""
        return f"{self.prefix}:breaker:{deployment}"

    @property
    def admission_channel(self) -> str:
        """Channel: a breaker opened or a cooldown started (published by those
        scripts); every worker forgets the deployments it held clear."""
        return f"{self.prefix}:admission"

    def key_rpm(self, key_id: str) -> str:
        """String: an API key's requests-per-minute GCRA state. Written and read by the
        API's intake (:class:`relayq.resilience.key_limits.KeyLimits`)."""
        return f"{self.prefix}:key_limits:rpm:{key_id}"

    def key_tpm(self, key_id: str, window: str) -> str:
        """String (a counter): the tokens an API key used in one window of its
        tokens-per-minute limit (``window``: the window's number since the epoch). Charged
        with each admitted request's estimate by the API's intake, corrected with the
        reported usage at the job's end by the worker; expires two windows after it began."""
        return f"{self.prefix}:key_limits:tpm:{key_id}:{window}"

    @property
    def key_tpm_reserved(self) -> str:
        """Hash: ``job_id key_id`` (as :attr:`key_members`) → ``<tokens> <window key>``:
        the estimate an unfinished job charged to its key's tokens per minute. Added by the
        API's intake (keys with a TPM limit only), read and removed with the job's count at
        its end, so the window is corrected to the tokens it really used."""
        return f"{self.prefix}:key_limits:tpm_reserved"

    @property
    def key_running(self) -> str:
        """Hash: API key id → its unfinished jobs. Moved with :attr:`key_members` by the
        API (intake) and the worker (a job's end); repaired by the reconciler."""
        return f"{self.prefix}:key_limits:running"

    @property
    def key_members(self) -> str:
        """Zset: ``key_id|job_id`` of every unfinished job, scored by when it was last
        checked; the reconciler releases those whose job ended."""
        return f"{self.prefix}:key_limits:members"

    @property
    def routing_in_flight(self) -> str:
        """Hash: ``provider|model`` → unfinished jobs. Incremented by the API when it
        assigns a job, decremented by the worker at its end, replaced by the
        reconciler with SQL's count."""
        return f"{self.prefix}:routing:in_flight"

    @property
    def routing_latency(self) -> str:
        """Hash: ``provider|model`` → moving average of successful calls' latency (ms).
        Written by the workers; read by the API's latency routing."""
        return f"{self.prefix}:routing:latency_ms"

    @property
    def routing_drained(self) -> str:
        """Hash: ``provider|model`` → when an operator drained it (wall clock): deployments
        routing gives no new jobs. Written by the admin API (drain, resume); read by every
        process's :class:`relayq.routing.drains.Drains` at start and on each announcement."""
        return f"{self.prefix}:routing:drained"

    @property
    def drains_channel(self) -> str:
        """Channel: :attr:`routing_drained` changed (published by the admin API in the same
        transaction); every API and worker process reads the hash again."""
        return f"{self.prefix}:routing:drains"

    def cache(self, key_id: str, digest: str) -> str:
        """String: a cached answer (JSON ``{response, usage}``) for one API key and a
        request's digest. Written by the worker; read by the API's intake."""
        return f"{self.prefix}:cache:{key_id}:{digest}"

    # Worker processes and recovery (relayq/recovery/, relayq/observability/)

    @property
    def workers(self) -> str:
        """Hash: worker instance → its last beat (wall clock). Written by each worker's
        heartbeat; read by live workers' sweep for silent ones."""
        return f"{self.prefix}:workers"

    def alive(self, instance: str) -> str:
        """String: present while worker ``instance`` beats (expires after three silent
        beats). Set by its heartbeat; checked by the sweep."""
        return f"{self.prefix}:alive:{instance}"

    @property
    def consumers(self) -> str:
        """Hash: worker instance → what it consumes (queues, host, last beat, JSON).
        Written by each heartbeat; read by ``/readyz`` and ``relayq health worker``."""
        return f"{self.prefix}:consumers"

    def taken(self, instance: str) -> str:
        """Hash: the jobs (a sync job's message as value) and ``webhook:<id>`` deliveries
        worker ``instance`` took and has not finished. Written by that worker; read and
        deleted when it is handed back."""
        return f"{self.prefix}:taken:{instance}"

    def handing_back(self, instance: str) -> str:
        """String (a lock): the live worker handing back silent worker ``instance``."""
        return f"{self.prefix}:handing-back:{instance}"

    @property
    def reconciler_lock(self) -> str:
        """String (a lock): the worker process running the reconciler's passes."""
        return f"{self.prefix}:reconciler"

    # Batches (relayq/batches/)

    @property
    def batch_scheduler_lock(self) -> str:
        """String (a lock): the worker process running the batch scheduler."""
        return f"{self.prefix}:batch-scheduler"

    @property
    def batch_activity(self) -> str:
        """String (a counter): moved when a batch starts (by the worker that validated it)
        or is cancelled (by the API); read by the batch scheduler, which skips its passes
        while the counter stands still."""
        return f"{self.prefix}:batches:activity"
