"""ORM tables. API schemas live apart from these, in :mod:`relayq.jobs`."""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["ApiKey", "Attempt", "Base", "Job"]


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON}


class ApiKey(Base):
    """A caller's credential. Only the SHA-256 of the secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))
    """The key's last characters, to tell keys apart in listings."""
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, default=None)


class Job(Base):
    """One completion job and its outcome.

    ``run`` counts claims: each worker that takes the job increments it and
    writes the outcome only while it still matches (a fencing token), so a
    job is finished once however many workers ran it.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    status: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(200))
    route: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(100))
    upstream_model: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    priority: Mapped[int] = mapped_column(Integer)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    request_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    cached: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Answered from the response cache, without a provider call."""
    cache_key: Mapped[str | None] = mapped_column(String(200), default=None)
    cache_ttl: Mapped[float | None] = mapped_column(Float, default=None)
    """Where and for how long to cache a successful answer (None: not cached)."""
    run: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    enqueued_at: Mapped[float | None] = mapped_column(Float, default=None)
    started_at: Mapped[float | None] = mapped_column(Float, default=None)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, default=None)

    __table_args__ = (
        UniqueConstraint("key_id", "idempotency_key", name="uq_jobs_key_idempotency"),
        Index("ix_jobs_key_id_id", "key_id", "id"),
        Index("ix_jobs_status_enqueued", "status", "enqueued_at"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
    )


class Attempt(Base):
    """One call to a provider on behalf of a job."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    run: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(100))
    upstream_model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    latency_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[float] = mapped_column(Float)
