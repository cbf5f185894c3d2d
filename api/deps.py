"""Request dependencies: services, database sessions and the caller's key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import APIError
from api.services import Services
from relayq.store.keys import find_active_key
from relayq.store.models import ApiKey

__all__ = ["KeyDep", "ServicesDep", "SessionDep"]


def get_services(request: Request) -> Services:
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
    services: ServicesDep,
    authorization: Annotated[str | None, Header()] = None,
) -> ApiKey:
    """The caller's active key, from ``Authorization: Bearer <key>``."""
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
    async with services.database.session() as session:
        key = await find_active_key(session, secret=secret.strip())
    if key is None:
        hint = secret.strip()[-4:]
        raise APIError(
            401,
            f"Incorrect API key provided: ...{hint}. It is unknown or revoked.",
            code="invalid_api_key",
            headers=_CHALLENGE,
        )
    return key


KeyDep = Annotated[ApiKey, Depends(get_key)]
