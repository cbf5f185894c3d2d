"""How a delivery's outcome shows in Celery (worker/outcomes.py): never a success for a
job that did not succeed. Flower's view of it is tested on the dev stack
(tests/test_dev_stack.py)."""

from __future__ import annotations

import pytest
from celery.exceptions import Retry

from relayq.execution.executor import RunResult
from worker.outcomes import JobNotSucceeded, shown, shown_many


@pytest.mark.parametrize("result", [RunResult.SUCCEEDED, RunResult.SKIPPED])
def test_a_delivery_that_did_its_work_is_a_success(result: RunResult) -> None:
    assert shown("job_1", result) == result.value


@pytest.mark.parametrize(
    ("result", "what"),
    [
        (RunResult.FAILED, "failed"),
        (RunResult.CANCELLED, "was cancelled"),
        (RunResult.EXPIRED, "expired before it ran"),
        (RunResult.SUPERSEDED, "was cancelled or taken over"),
    ],
)
def test_a_job_that_did_not_succeed_is_a_failure_that_names_it(
    result: RunResult, what: str
) -> None:
    with pytest.raises(JobNotSucceeded, match=f"^job job_1 {what}") as raised:
        shown("job_1", result)
    assert "GET /v1/jobs/job_1" in str(raised.value)


@pytest.mark.parametrize("result", [RunResult.REQUEUED, RunResult.WAITING])
def test_a_job_back_in_its_queue_is_a_retry(result: RunResult) -> None:
    with pytest.raises(Retry, match=f"job job_1: {result.value}, back in its queue"):
        shown("job_1", result)


def test_an_envelope_is_a_success_only_if_none_of_its_jobs_failed() -> None:
    fine = [RunResult.SUCCEEDED, RunResult.REQUEUED, RunResult.SUCCEEDED]
    assert shown_many(fine) == "1 requeued, 2 succeeded"
    failed = r"^not every job succeeded: 1 failed, 2 succeeded$"
    with pytest.raises(JobNotSucceeded, match=failed):
        shown_many([RunResult.SUCCEEDED, RunResult.FAILED, RunResult.SUCCEEDED])
