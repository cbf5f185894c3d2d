"""New jobs of concurrent requests stored together: one transaction per batch.

Each ``POST /v1/jobs`` used to take a session, flush one row and commit on
its own. Under load those fixed costs (a pool checkout, the ORM's flush, a
commit, on SQLite a write of the log) outweighed the row itself.
:class:`JobInserts` stores the plain jobs of every request queued meanwhile
in one multi-row ``INSERT`` and one commit (a
:class:`relayq.coalescing.Coalescer`: no timer, so a request alone goes at
once). If the batch fails, every request in it gets the error; none of its
jobs was stored. A job refused by its key's budget is refused alone: the
reservation is a conditional statement of its own in the same transaction,
and only the jobs whose reservation fits are inserted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from relayq.budgets.reservations import OverBudget
from relayq.coalescing import Coalescer
from relayq.store import Database
from relayq.store.jobs import NewJob, insert_jobs
from relayq.store.models import Job

__all__ = ["JobInserts"]


class JobInserts:
    """Stores queued jobs without idempotency key or cached answer, in batches."""

    def __init__(self, database: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._database = database
        self._clock = clock
        self._coalescer: Coalescer[NewJob, Job | OverBudget] = Coalescer(self._insert)

    @property
    def transactions(self) -> int:
        """Transactions committed (for tests and metrics)."""
        return self._coalescer.batches

    async def insert(self, job: NewJob) -> Job:
        """Store ``job``, queued; its row once its batch is committed.

        Raises :class:`OverBudget` when its reservation does not fit (not stored)."""
        stored = await self._coalescer.submit(job)
        if isinstance(stored, OverBudget):
            raise stored
        return stored

    async def _insert(self, jobs: list[NewJob]) -> list[Job | OverBudget]:
        async with self._database.session() as session:
            return await insert_jobs(session, jobs=jobs, now=self._clock())
