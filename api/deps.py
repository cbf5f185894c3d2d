"""Request dependencies: services, database sessions and the caller's key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import APIError
from api.services import Services
from relayq.config.settings import Settings
from relayq.intake.intake import KeyLimitValues
from relayq.store.keys import find_active_key
from relayq.store.models import ApiKey

__all__ = ["AdminKeyDep", "KeyDep", "ServicesDep", "SessionDep", "key_limits"]


# Dependencies are coroutines: FastAPI runs a plain function in its thread pool,
# a hop to a thread and back on every request.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    async with services.database.session() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_NO_KEY = (
    "You didn't provide an API key. Send it in the Authorization header as "
    "'Authorization: Bearer YOUR_KEY'. Create one with 'relayq keys create --name NAME'."
)


async def get_key(
    request: Request,
    services: ServicesDep,
    authorization: Annotated[str | None, Header()] = None,
) -> ApiKey:
    """The caller's active key, from ``Authorization: Bearer <key>``; its id goes in the
    request's access log line."""
    if not authorization:
        raise APIError(401, _NO_KEY, code="missing_api_key", headers=_CHALLENGE)
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise APIError(
            401,
            "Malformed Authorization header: expected 'Bearer YOUR_KEY'.",
            code="invalid_authorization_header",
            headers=_CHALLENGE,
        )
    secret = secret.strip()

    async def load() -> ApiKey | None:
        async with services.database.session() as session:
            return await find_active_key(session, secret=secret)

    key = await services.keys.find(secret, load)
    if key is None:
        hint = secret[-4:]
        raise APIError(
            401,
            f"Incorrect API key provided: ...{hint}. It is unknown or revoked.",
            code="invalid_api_key",
            headers=_CHALLENGE,
        )
    request.state.key_id = key.id
    return key


KeyDep = Annotated[ApiKey, Depends(get_key)]


def key_limits(key: ApiKey, settings: Settings) -> KeyLimitValues:
    """The limits in force for ``key``: its own, else the API's defaults."""
    return KeyLimitValues(
        requests_per_minute=key.requests_per_minute or settings.api.key_requests_per_minute,
        max_concurrent_jobs=key.max_concurrent_jobs or settings.api.key_max_concurrent_jobs,
    )


async def admin_key(key: KeyDep) -> ApiKey:
    """The caller's key, which must be an admin key (else 403)."""
    if not key.admin:
        raise APIError(
            403,
            "This endpoint needs an admin key (relayq keys create --name NAME --admin).",
            code="admin_key_required",
        )
    return key


AdminKeyDep = Annotated[ApiKey, Depends(admin_key)]
