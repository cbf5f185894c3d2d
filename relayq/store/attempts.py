"""Attempts: one row per provider call a job's runs made, kept whatever the outcome."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.store.claims import Claim
from relayq.store.models import Attempt

__all__ = [
    "AttemptRecord",
    "add_attempts",
    "attempt_row",
    "attempt_values",
    "list_attempts",
]

_ADD_ATTEMPT = insert(cast(Table, Attempt.__table__))


@dataclass(frozen=True, kw_only=True)
class AttemptRecord:
    provider: str
    upstream_model: str
    status: str
    latency_ms: float
    error: dict[str, Any] | None = None


def attempt_values(*, claim: Claim, attempt: AttemptRecord, now: float) -> dict[str, Any]:
    """An ``attempts`` row's columns."""
    return {
        "job_id": claim.job_id,
        "run": claim.run,
        "provider": attempt.provider,
        "upstream_model": attempt.upstream_model,
        "status": attempt.status,
        "latency_ms": attempt.latency_ms,
        "error": attempt.error,
        "created_at": now,
    }


def attempt_row(*, claim: Claim, attempt: AttemptRecord, now: float) -> Attempt:
    """An ``attempts`` row, for the session's unit of work (see :func:`add_attempts`)."""
    return Attempt(**attempt_values(claim=claim, attempt=attempt, now=now))


async def add_attempts(session: AsyncSession, *, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (:func:`attempt_values`' columns) in one statement, not committed.

    A Core ``INSERT`` on the session's connection, built once: the hot path's
    attempts skip the ORM's unit of work (see :mod:`relayq.store.claims`).
    """
    connection = await session.connection()
    await connection.execute(_ADD_ATTEMPT, list(rows))


async def list_attempts(session: AsyncSession, *, job_id: str) -> list[Attempt]:
    """The job's attempts, oldest first."""
    query = select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.id)
    return list((await session.execute(query)).scalars())
