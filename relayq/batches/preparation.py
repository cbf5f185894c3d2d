"""Preparing a batch: validate every line of its input, then store its requests as jobs.

Runs on a worker (the ``batches`` queue), reading the input file from the
file storage as a stream. Requests are inserted, held, in the same
transaction that moves the batch from ``validating`` to ``in_progress``:
either every request is stored or none is, and a redelivered message finds
the batch no longer validating and does nothing. A batch with any bad line
fails with each one reported, and runs nothing. A line asking for a model
the batch's caller may not use (its key's model allow-list, or its JWT's
``models`` claim, kept on the batch as it was made) is a bad line too.

A key with a budget reserves the batch's worst case in that transaction too:
each request holds its own (settled as it ends), and the key's window takes
their sum in one conditional statement. A batch that does not fit fails with
``insufficient_quota`` and nothing of it is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from relayq.auth.caller import allows_model
from relayq.batches.notify import BatchNotifier
from relayq.batches.validation import LineValidator, ValidRequest
from relayq.budgets.estimate import worst_case
from relayq.budgets.reservations import BudgetLimits, OverBudget, Reservation
from relayq.budgets.windows import window_of
from relayq.config.settings import Settings
from relayq.files.storage import FileStorage, read_lines
from relayq.ids import id_sequence
from relayq.routing.router import Deployment, Router, RouteUnavailable, UnknownModel
from relayq.schemas.batches import BatchErrorItem, BatchErrors, BatchStatus, endpoint_kind
from relayq.schemas.jobs import JobKind, JobStatus
from relayq.store import Database
from relayq.store.batches import fail_batch, get_batch_by_id, insert_requests, start_batch
from relayq.store.models import ApiKey, Batch
from relayq.store.spend import reserve

__all__ = ["BatchPreparer", "Prepared"]

log = logging.getLogger(__name__)

_CHUNK = 1000


@dataclass(frozen=True)
class Prepared:
    status: BatchStatus
    total: int = 0


async def _chunks(lines: AsyncIterator[bytes], size: int) -> AsyncIterator[list[bytes]]:
    chunk: list[bytes] = []
    async for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Chooser:
    """Routes each request's model; a route's choice that needs no Redis is made per request.

    ``allowed``: the key's model allow-list (None: every model)."""

    def __init__(self, router: Router, allowed: frozenset[str] | None) -> None:
        self._router = router
        self.allowed = allowed
        self._unknown: set[str] = set()
        self._serving: dict[str, bool] = {}

    def serves(self, model: str, kind: JobKind) -> bool:
        """Whether ``model``'s route serves ``kind`` (asked once per model: a batch has
        one kind)."""
        if kind is JobKind.CHAT:
            return True
        if model not in self._serving:
            self._serving[model] = self._router.serves(model, kind)
        return self._serving[model]

    async def choose(self, model: str) -> Deployment | None:
        if model in self._unknown:
            return None
        try:
            return await self._router.choose(model)
        except UnknownModel:
            self._unknown.add(model)
            return None
        except RouteUnavailable:
            # Every deployment drained: the batch waits for one rather than fail.
            return await self._router.choose(model, drained_too=True)


class _Budgeting:
    """The worst case of a batch's requests, summed for its key's budget as rows are made."""

    def __init__(
        self, *, limits: BudgetLimits, key_id: str, router: Router, now: float, default: int
    ) -> None:
        self._limits = limits
        self._key_id = key_id
        self._router = router
        self._default = default
        self.window = window_of(limits.period, now)
        self.usd = 0.0
        self.tokens = 0

    def reserve_for(self, rows: list[dict[str, Any]]) -> None:
        """Add each request's worst case to its row (its own reservation) and to the sum."""
        for row in rows:
            found = self._router.route(row["route"])
            worst = worst_case(
                row["request"],
                route=found[1] if found is not None else None,
                default_max_output=self._default,
                batch=True,
                kind=row["kind"],
            )
            row.update(
                reserved_usd=worst.usd, reserved_tokens=worst.tokens, budget_window=self.window
            )
            self.usd += worst.usd
            self.tokens += worst.tokens

    def reservation(self) -> Reservation:
        return Reservation(self._key_id, self.window, self.usd, self.tokens, self._limits)


class BatchPreparer:
    def __init__(
        self,
        *,
        database: Database,
        storage: FileStorage,
        router: Callable[[], Router],
        settings: Settings,
        notifier: BatchNotifier,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self._storage = storage
        self._router = router
        self._settings = settings
        self._notifier = notifier
        self._clock = clock

    async def prepare(self, batch_id: str) -> Prepared | None:
        """Validate and store the batch's requests; None if it was not validating."""
        async with self._database.session() as session:
            batch = await get_batch_by_id(session, batch_id=batch_id)
        if batch is None or batch.status != BatchStatus.VALIDATING.value:
            return None
        allowed = None if batch.models is None else frozenset(batch.models)
        validator = LineValidator(
            endpoint=batch.endpoint, max_errors=self._settings.batches.max_errors
        )
        try:
            prepared = await self._store(batch, validator, allowed)
        except FileNotFoundError:
            validator.error(
                None,
                "file_not_found",
                f"The input file '{batch.input_file_id}' was deleted before the batch ran.",
                "input_file_id",
            )
            prepared = None
        if prepared is not None:
            return prepared
        return await self._fail(batch, validator)

    async def _store(
        self, batch: Batch, validator: LineValidator, allowed: frozenset[str] | None
    ) -> Prepared | None:
        """Insert every request, held; None (and nothing stored) if any line is bad.

        A chunk's insert runs while the next chunk is checked: SQL and the
        checks (CPU, in a thread, off the loop other jobs run on) overlap.
        """
        now = self._clock()
        chooser = _Chooser(self._router(), allowed)
        ids = id_sequence("job", now=now)
        max_lines = self._settings.files.max_lines
        total = 0
        line = 1
        inserting: asyncio.Task[None] | None = None
        async with self._database.session() as session:
            if not await start_batch(session, batch_id=batch.id, now=now):
                await session.rollback()
                return Prepared(status=BatchStatus(batch.status))
            budgeting = await self._budgeting(session, batch, now)
            try:
                async for chunk in _chunks(read_lines(self._storage, batch.input_file_id), _CHUNK):
                    valid = await asyncio.to_thread(validator.check_lines, line, chunk)
                    line += len(chunk)
                    total += len(valid)
                    rows = await self._rows(batch, valid, validator, chooser, ids, now)
                    if budgeting is not None:
                        budgeting.reserve_for(rows)
                    if total > max_lines:
                        validator.error(
                            None,
                            "too_many_requests",
                            f"The batch has more than {max_lines} requests; split it into "
                            f"batches of at most {max_lines}.",
                        )
                        break
                    if inserting is not None:
                        await inserting
                    if not validator.error_count:
                        inserting = asyncio.create_task(insert_requests(session, rows))
                if inserting is not None:
                    await inserting
            finally:
                if inserting is not None and not inserting.done():
                    inserting.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await inserting
            if validator.error_count or total == 0:
                await session.rollback()
                if total == 0 and not validator.error_count:
                    validator.error(None, "empty_file", "The input file has no requests.")
                return None
            if budgeting is not None and not await self._reserve(session, budgeting, validator):
                return None
            batch_row = await session.get(Batch, batch.id)
            assert batch_row is not None
            batch_row.total = total
            await session.commit()
        log.info("batch %s in progress with %d requests", batch.id, total)
        return Prepared(status=BatchStatus.IN_PROGRESS, total=total)

    async def _reserve(
        self, session: AsyncSession, budgeting: _Budgeting, validator: LineValidator
    ) -> bool:
        """Take the batch's worst case from its key's budget; False (all rolled back and the
        error recorded) when it does not fit."""
        reservation = budgeting.reservation()
        refused = await reserve(session, reservation)
        if refused is None:
            return True
        await session.rollback()
        validator.error(None, "insufficient_quota", OverBudget(reservation, refused).describe())
        return False

    async def _budgeting(
        self, session: AsyncSession, batch: Batch, now: float
    ) -> _Budgeting | None:
        """The batch's budget bookkeeping, if its key has a budget."""
        key = await session.get(ApiKey, batch.key_id)
        limits = (
            BudgetLimits.of(key.budget_period, key.budget_usd, key.budget_tokens)
            if key is not None
            else None
        )
        if limits is None:
            return None
        return _Budgeting(
            limits=limits,
            key_id=batch.key_id,
            router=self._router(),
            now=now,
            default=self._settings.budgets.default_max_output_tokens,
        )

    async def _rows(
        self,
        batch: Batch,
        valid: list[ValidRequest],
        validator: LineValidator,
        chooser: _Chooser,
        ids: Iterator[str],
        now: float,
    ) -> list[dict[str, Any]]:
        """The job rows of a chunk's valid requests, routed (none once any line is bad)."""
        kind = endpoint_kind(batch.endpoint)
        rows = []
        for request in valid:
            deployment = await chooser.choose(request.model)
            if deployment is None:
                validator.error(
                    request.line,
                    "model_not_found",
                    f"Line {request.line}: the model '{request.model}' does not exist "
                    f"or you do not have access to it.",
                    "body.model",
                )
            elif not allows_model(chooser.allowed, request.model, deployment.route):
                allowed = ", ".join(sorted(chooser.allowed or ())) or "none"
                validator.error(
                    request.line,
                    "model_not_allowed",
                    f"Line {request.line}: this key may not use the model '{request.model}'. "
                    f"Models it may use: {allowed}.",
                    "body.model",
                )
            elif not chooser.serves(request.model, kind):
                validator.error(
                    request.line,
                    "model_not_supported",
                    f"Line {request.line}: the model '{request.model}' does not serve "
                    f"{kind.value}: none of its deployments is on a provider that does.",
                    "body.model",
                )
            elif not validator.error_count:
                rows.append(self._row(batch, request, deployment, next(ids), now))
        return rows

    def _row(
        self, batch: Batch, request: ValidRequest, deployment: Deployment, job_id: str, now: float
    ) -> dict[str, Any]:
        # By column name: the insert is on the table (the ORM attribute is metadata_).
        return {
            "id": job_id,
            "key_id": batch.key_id,
            "status": JobStatus.QUEUED.value,
            "kind": endpoint_kind(batch.endpoint).value,
            "model": request.model,
            "route": deployment.route,
            "provider": deployment.provider,
            "upstream_model": deployment.upstream_model,
            "request": request.body,
            "priority": batch.priority,
            "metadata": {},
            "deployment_index": deployment.index,
            "first_deployment": deployment.index,
            "expires_at": batch.expires_at,
            "run": 0,
            "created_at": now,
            "batch_id": batch.id,
            "custom_id": request.custom_id,
            "held": True,
        }

    async def _fail(self, batch: Batch, validator: LineValidator) -> Prepared:
        # Models are checked after their chunk's lines: put every error in line order.
        validator.errors.sort(key=lambda e: (e.line is None, e.line or 0))
        if validator.error_count > len(validator.errors):
            validator.errors.append(
                BatchErrorItem(
                    code="too_many_errors",
                    message=f"{validator.error_count} lines have errors; the first "
                    f"{len(validator.errors)} are listed.",
                )
            )
        errors = BatchErrors(data=validator.errors).model_dump(mode="json")
        now = self._clock()
        async with self._database.session() as session:
            failed = await fail_batch(session, batch_id=batch.id, errors=errors, now=now)
            if failed:
                await self._notifier.plan(session, batch_id=batch.id, now=now)
            await session.commit()
        if failed:
            await self._notifier.publish(batch.id)
            log.info("batch %s failed validation: %d errors", batch.id, validator.error_count)
        return Prepared(status=BatchStatus.FAILED)
