"""What a delivery of a job's message shows in Celery: Flower, task events, the log.

A task's return value is all Celery knows of how it went, and any value is a
success: a job that failed used to show in Flower as SUCCESS, with the word
``'failed'`` as its result. So a delivery whose job did not succeed raises:

- the job failed, was cancelled, expired, or was cancelled or taken over
  while this delivery ran it (superseded): :class:`JobNotSucceeded`, which
  Celery records as FAILURE with the job's id and what became of it. The
  tasks declare it in ``throws``, so Celery logs it as expected, in one line
  without a traceback. The message is acknowledged as for any ending
  (``acks_late`` with ``task_acks_on_failure_or_timeout``): the job's own
  record already holds its outcome;
- the attempt failed and the job went back to its queue (to retry, to fall
  back, or to wait for a rate limit): Celery's :class:`~celery.exceptions.Retry`,
  raised without publishing anything (relayq's outbox already did), so the
  delivery shows as RETRY.

A delivery that finds its job already failed, cancelled (a job cancelled while
queued still has its message delivered) or expired comes to that end too
(``Executor._not_claimed``). What else a delivery came to (succeeded; skipped:
the job already succeeded, or a live lease holds it) is its return value, a
SUCCESS.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from celery.exceptions import Retry

from relayq.execution.executor import RunResult

__all__ = ["JobNotSucceeded", "shown", "shown_many"]

_NOT_SUCCEEDED = {
    RunResult.FAILED: "failed",
    RunResult.CANCELLED: "was cancelled",
    RunResult.EXPIRED: "expired before it ran",
    RunResult.SUPERSEDED: "was cancelled or taken over while this delivery ran it",
}
_BACK_IN_QUEUE = {RunResult.REQUEUED, RunResult.WAITING}


class JobNotSucceeded(Exception):
    """A delivery's job ended other than succeeded: Celery's FAILURE state."""


def shown(job_id: str, result: RunResult) -> str:
    """The task's return value for a delivery of ``job_id`` that came to ``result``;
    raises for a job that did not succeed (see the module's docstring)."""
    what = _NOT_SUCCEEDED.get(result)
    if what is not None:
        raise JobNotSucceeded(f"job {job_id} {what} ({result.value}): GET /v1/jobs/{job_id}")
    if result in _BACK_IN_QUEUE:
        raise Retry(f"job {job_id}: {result.value}, back in its queue")
    return result.value


def shown_many(results: Iterable[RunResult]) -> str:
    """:func:`shown` for an envelope's jobs: FAILURE if any did not succeed, the
    counts either way."""
    counts = Counter(results)
    summary = ", ".join(f"{count} {value.value}" for value, count in sorted(counts.items()))
    if any(result in _NOT_SUCCEEDED for result in counts):
        raise JobNotSucceeded(f"not every job succeeded: {summary}")
    return summary
