"""API keys as the admin API takes and shows them (``/v1/admin/keys``).

A key's secret is shown once, in the answer that makes it (:class:`KeyCreated`:
creating and rotating a key); no other answer, and no audit entry, carries the
secret or its hash.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from relayq.schemas.scopes import parse_scopes
from relayq.schemas.spans import MAX_LIFETIME_SECONDS, Lifetime

__all__ = [
    "BudgetPeriod",
    "KeyCreate",
    "KeyCreated",
    "KeyList",
    "KeyObject",
    "KeyRotate",
    "KeySource",
    "KeyUpdate",
]

_INT32 = 2**31 - 1
"""The columns are 32-bit integers on PostgreSQL."""
_LAST_TIME = 253_402_300_799.0
"""9999-12-31T23:59:59Z: later times cannot be written as ISO dates."""

Name = Annotated[str, Field(min_length=1, max_length=200)]
ModelName = Annotated[str, Field(min_length=1, max_length=200)]
Limit = Annotated[int, Field(gt=0, le=_INT32)]
Tokens = Annotated[int, Field(ge=0, le=_INT32)]
Dollars = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]
UnixTime = Annotated[float, Field(ge=0, le=_LAST_TIME, allow_inf_nan=False)]
OverlapSeconds = Annotated[float, Field(ge=0, le=MAX_LIFETIME_SECONDS, allow_inf_nan=False)]


class BudgetPeriod(StrEnum):
    """The UTC window a key's budget covers."""

    DAY = "day"
    MONTH = "month"


class KeySource(StrEnum):
    KEY = "key"
    """An API key with a secret."""
    JWT = "jwt"
    """The tenant of verified JWTs: it has no secret (and cannot be rotated)."""


class _KeyFields(BaseModel):
    """What a key may do and spend; create and update take the same fields."""

    model_config = ConfigDict(extra="forbid")

    scopes: list[str] | None = Field(default=None, max_length=10)
    """What the key may call (``jobs chat batches files read admin``); on create,
    omitted: every scope but ``admin``."""
    models: list[ModelName] | None = Field(default=None, max_length=1000)
    """The models (route names) the key may ask for; null: every model."""
    requests_per_minute: Limit | None = None
    max_concurrent_jobs: Limit | None = None
    tokens_per_minute: Limit | None = None
    """The key's limits; null: the API's defaults."""
    budget_period: BudgetPeriod | None = None
    budget_usd: Dollars | None = None
    budget_tokens: Tokens | None = None
    """What the key may spend per ``budget_period``; null: no limit of that kind."""
    expires_at: UnixTime | None = None
    """When the key stops working (Unix seconds); null: never."""
    expires_in: Lifetime | None = None
    """Instead of ``expires_at``: how long from now, as ``30d``, ``12h``, ``90m``."""

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(parse_scopes(value))

    @field_validator("models")
    @classmethod
    def _once_each(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(value))


class KeyCreate(_KeyFields):
    """The body of ``POST /v1/admin/keys``."""

    name: Name


class KeyUpdate(_KeyFields):
    """The body of ``PATCH /v1/admin/keys/{id}``: only the fields given change; a null
    clears a limit, a budget, the model allow-list or the expiry."""

    name: Name | None = None


class KeyRotate(BaseModel):
    """The body of ``POST /v1/admin/keys/{id}/rotate``."""

    model_config = ConfigDict(extra="forbid")

    overlap_seconds: OverlapSeconds = 0.0
    """How long the old secret keeps working beside the new one; 0: it stops at once."""


class KeyObject(BaseModel):
    """A key as the admin API shows it: never its secret or its hash."""

    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    source: KeySource
    hint: str | None
    """The secret's last characters (``...abcd``), to tell keys apart; null for a JWT tenant."""
    subject: str | None
    """A JWT tenant's ``issuer|tenant``."""
    scopes: list[str]
    models: list[str] | None
    requests_per_minute: int | None
    max_concurrent_jobs: int | None
    tokens_per_minute: int | None
    budget_period: BudgetPeriod | None
    budget_usd: float | None
    budget_tokens: int | None
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    """When a request last came with the key, to the minute."""
    revoked_at: float | None
    previous_secret_expires_at: float | None
    """After a rotation with an overlap: when the old secret stops working."""


class KeyCreated(KeyObject):
    """A key just made or rotated, with its secret: shown this once."""

    secret: str


class KeyList(BaseModel):
    """A page of keys, newest first."""

    object: Literal["list"] = "list"
    data: list[KeyObject]
    first_id: str | None
    last_id: str | None
    has_more: bool
