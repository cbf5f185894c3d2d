"""A worker's claims and outcomes, written a tick at a time.

Each job used to take its own session, statement and commit to be claimed,
and again to record its outcome: at hundreds of jobs in flight those fixed
costs (a pool checkout, a round trip to the database's thread or server, a
commit, on SQLite a write of the log) were the largest share of a worker's
CPU. :class:`JobLedger` claims the jobs of every message received meanwhile
in one ``UPDATE … WHERE id IN (…) RETURNING``, and records the outcomes of
the jobs that ended meanwhile in one transaction (each a
:class:`relayq.coalescing.Coalescer`: no timer, so a job alone goes at once).

The guards stay per job: a claim takes only a queued job or one whose lease
lapsed, an outcome is written only while its claim's ``run`` still holds the
job. A job id that comes twice in one tick (a redelivered message) is
claimed once; the second delivery is told it is not its to run.

A sync chat completion's job comes in its message, before any row
(:class:`relayq.store.jobs.DirectRun`): its row is stored as running in the
tick after its call began, beside the call rather than before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from relayq.coalescing import Coalescer
from relayq.schemas.jobs import JobStatus
from relayq.store import Database
from relayq.store.attempts import AttemptRecord
from relayq.store.claims import Claim, claim_jobs
from relayq.store.jobs import DirectRun, job_status, store_running
from relayq.store.outcomes import Finish, Finished, Outcome, finish_jobs

__all__ = ["JobLedger"]


class JobLedger:
    """Claims and finishes a worker's jobs in shared transactions, one tick at a time."""

    def __init__(
        self,
        database: Database,
        *,
        lease_seconds: float,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``owner``: this worker process's instance id, recorded with each claim."""
        self._database = database
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._clock = clock
        self._claims: Coalescer[str, Claim | None] = Coalescer(self._claim)
        self._finishes: Coalescer[Finish, Finished] = Coalescer(self._finish)
        self._stores: Coalescer[DirectRun, bool] = Coalescer(self._store)

    @property
    def transactions(self) -> int:
        """Claim and outcome transactions committed (for tests and metrics)."""
        return self._claims.batches + self._finishes.batches + self._stores.batches

    async def claim(self, job_id: str) -> Claim | None:
        """Take ``job_id`` for running; None if it is not (or no longer) ours to run."""
        return await self._claims.submit(job_id)

    async def status(self, job_id: str) -> JobStatus | None:
        """``job_id``'s stored status (one query, not batched: for the rare delivery that
        found its job not claimable)."""
        async with self._database.session() as session:
            return await job_status(session, job_id=job_id)

    async def finish(
        self,
        claim: Claim,
        outcome: Outcome,
        attempt: AttemptRecord | None,
    ) -> Finished:
        """Record ``claim``'s attempt and, if the claim still holds the job, its outcome
        (its cost booked to its key's budget if it reserved one)."""
        finish = Finish(claim=claim, outcome=outcome, attempt=attempt)
        return await self._finishes.submit(finish)

    async def store(self, direct: DirectRun) -> bool:
        """Store a direct job's row as running its first run; False if it was stored before."""
        return await self._stores.submit(direct)

    async def _claim(self, job_ids: list[str]) -> list[Claim | None]:
        async with self._database.session() as session:
            claims = await claim_jobs(
                session,
                job_ids=job_ids,
                now=self._clock(),
                lease_seconds=self._lease_seconds,
                owner=self._owner,
            )
        # pop: a second delivery of one job in the same tick is not given the claim too.
        return [claims.pop(job_id, None) for job_id in job_ids]

    async def _finish(self, finishes: list[Finish]) -> list[Finished]:
        async with self._database.session() as session:
            return await finish_jobs(session, finishes=finishes, now=self._clock())

    async def _store(self, runs: list[DirectRun]) -> list[bool]:
        async with self._database.session() as session:
            stored = await store_running(
                session,
                runs=runs,
                now=self._clock(),
                lease_seconds=self._lease_seconds,
                owner=self._owner,
            )
        # A job id twice in one tick: only its first delivery is the first run.
        firsts = {direct.job.id: index for index, direct in reversed(list(enumerate(runs)))}
        return [
            direct.job.id in stored and firsts[direct.job.id] == index
            for index, direct in enumerate(runs)
        ]
