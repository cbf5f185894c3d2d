"""Direct jobs' rows, stored once their caller has heard from them.

A sync call's job comes in its message, with no row (:mod:`relayq.direct.lane`),
and the worker stores its row beside the call. Stored as the message arrived,
the INSERT's work (SQLAlchemy's statement on the loop, the database's thread
or server) fell in the very milliseconds between the message and the call's
first token: most of a millisecond of a streamed call's time to first token
(docs/benchmarks.md). So a row is stored once the caller has heard from its
job (its first delta or its answer, which carry the job id), or ``within``
seconds after the message came, whichever is first; anything that needs the
row before that (an outcome, a retry, an expiry, a hand-back) stores it at
once. A lookup of the job in its call's first milliseconds may not find it
(docs/api.md says so). The run's ``started`` event waits the same way
(:meth:`PendingRows.when_heard`): emitted before the call, it too fell in
those milliseconds; its followers see it once the row exists.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from relayq.store.jobs import DirectRun

__all__ = ["PendingRows"]


@dataclass
class _Row:
    direct: DirectRun | None
    """None: already stored (the job's redelivery stored it before its run)."""
    stored: asyncio.Future[bool] | None = None
    deadline: asyncio.TimerHandle | None = field(default=None, repr=False)
    waiting: list[Callable[[], None]] = field(default_factory=list)


class PendingRows:
    """The rows of the direct jobs this worker runs, each stored once, when first needed."""

    def __init__(self, store: Callable[[DirectRun], Awaitable[bool]], *, within: float) -> None:
        """``store``: writes a row (True if it was new); ``within``: the longest wait."""
        self._store = store
        self._within = within
        self._rows: dict[str, _Row] = {}

    def add(self, job_id: str, direct: DirectRun) -> None:
        """``job_id``'s row is to be stored: when heard, when needed, or after ``within``."""
        row = self._rows[job_id] = _Row(direct)
        row.deadline = asyncio.get_running_loop().call_later(self._within, self.heard, job_id)

    def add_stored(self, job_id: str) -> None:
        """``job_id``'s row was stored already, by this run."""
        row = self._rows[job_id] = _Row(None)
        row.stored = asyncio.get_running_loop().create_future()
        row.stored.set_result(True)

    def heard(self, job_id: str) -> None:
        """The caller heard from ``job_id`` (or its time is up): store its row now."""
        row = self._rows.get(job_id)
        if row is not None:
            self._start(row)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._rows

    def when_heard(
        self, job_id: str, action: Callable[[], Awaitable[None]]
    ) -> asyncio.Future[None]:
        """Run ``action`` once ``job_id``'s row is being stored (at once if it is, or if
        the job is not one of these); its future."""
        row = self._rows.get(job_id)
        if row is None or row.stored is not None:
            return asyncio.ensure_future(action())
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def run() -> None:
            running = asyncio.ensure_future(action())
            running.add_done_callback(lambda ran: _settle(done, ran))

        row.waiting.append(run)
        return done

    async def stored(self, job_id: str) -> bool:
        """Store ``job_id``'s row if it is not yet; whether this run stored it (the
        run owns the job). Raises what the store raised."""
        return await asyncio.shield(self._start(self._rows[job_id]))

    async def settle(self, job_id: str) -> None:
        """The run is over: its row is stored (now, if nothing needed it before) and
        forgotten here. Raises what a store still under way raises."""
        stored = self._start(self._rows.pop(job_id))
        if not stored.done():
            await stored

    def _start(self, row: _Row) -> asyncio.Future[bool]:
        if row.stored is None:
            assert row.direct is not None
            row.stored = asyncio.ensure_future(self._store(row.direct))
            waiting, row.waiting = row.waiting, []
            for run in waiting:
                run()
        if row.deadline is not None:
            row.deadline.cancel()
            row.deadline = None
        return row.stored


def _settle(done: asyncio.Future[None], ran: asyncio.Future[None]) -> None:
    if done.done():
        return
    if ran.cancelled():
        done.cancel()
    elif (error := ran.exception()) is not None:
        done.set_exception(error)
    else:
        done.set_result(None)
