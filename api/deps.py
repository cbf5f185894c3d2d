"""Request dependencies: services, database sessions, and the caller with its scopes.

Every route that acts for a key asks for one scope through its caller
dependency (``ReadCaller``, ``JobsCaller``...); a caller without it gets a 403.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import APIError
from api.services import Services
from relayq.auth.caller import Caller
from relayq.config.settings import Settings
from relayq.intake.intake import KeyLimitValues
from relayq.schemas.scopes import Scope
from relayq.store.keys import find_active_key
from relayq.store.models import ApiKey

__all__ = [
    "AdminCaller",
    "BatchesCaller",
    "CallerDep",
    "ChatCaller",
    "FilesCaller",
    "JobsCaller",
    "MessageBatchesCaller",
    "MessagesCaller",
    "MessagesReadCaller",
    "ReadCaller",
    "ServicesDep",
    "SessionDep",
    "admin_caller",
    "key_limits",
]


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
_NO_MESSAGES_KEY = (
    "You didn't provide an API key. Send it in the x-api-key header as "
    "'x-api-key: YOUR_KEY' (or as 'Authorization: Bearer YOUR_KEY'). Create one with "
    "'relayq keys create --name NAME'."
)
_NO_KEY = (
    "You didn't provide an API key. Send it in the Authorization header as "
    "'Authorization: Bearer YOUR_KEY'. Create one with 'relayq keys create --name NAME'."
)


async def get_caller(
    request: Request,
    services: ServicesDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Caller:
    """The caller, from ``Authorization: Bearer <key>``; its key id goes in the
    request's access log line."""
    return await _caller_of(request, services, _bearer_secret(authorization))


async def get_messages_caller(
    request: Request,
    services: ServicesDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Caller:
    """The caller of Anthropic's Messages API: ``x-api-key: <key>``, as Anthropic's
    SDK sends it, or ``Authorization: Bearer <key>``."""
    if x_api_key is not None and x_api_key.strip():
        return await _caller_of(request, services, x_api_key.strip())
    if not authorization:
        raise APIError(401, _NO_MESSAGES_KEY, code="missing_api_key", headers=_CHALLENGE)
    return await _caller_of(request, services, _bearer_secret(authorization))


def _bearer_secret(authorization: str | None) -> str:
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
    return secret.strip()


async def _caller_of(request: Request, services: Services, secret: str) -> Caller:
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
    return Caller.of_key(key)


CallerDep = Annotated[Caller, Depends(get_caller)]


def key_limits(caller: Caller, settings: Settings) -> KeyLimitValues:
    """The limits in force for ``caller``'s key: its own, else the API's defaults."""
    key = caller.key
    return KeyLimitValues(
        requests_per_minute=key.requests_per_minute or settings.api.key_requests_per_minute,
        max_concurrent_jobs=key.max_concurrent_jobs or settings.api.key_max_concurrent_jobs,
    )


def _requiring(
    scope: Scope, source: Callable[..., Awaitable[Caller]] = get_caller
) -> Callable[[Request, Caller], Awaitable[Caller]]:
    # A default, not an annotation: a closure's variable cannot be resolved from
    # a string annotation.
    async def scoped(request: Request, caller: Caller = Depends(source)) -> Caller:  # noqa: B008
        if scope.value not in caller.scopes:
            held = ", ".join(sorted(caller.scopes)) or "none"
            raise APIError(
                403,
                f"This key lacks the '{scope.value}' scope, which "
                f"{request.method} {request.url.path} needs (it holds: {held}).",
                code="insufficient_scope",
            )
        return caller

    scoped.__name__ = f"{scope.value}_caller"
    return scoped


ReadCaller = Annotated[Caller, Depends(_requiring(Scope.READ))]
JobsCaller = Annotated[Caller, Depends(_requiring(Scope.JOBS))]
ChatCaller = Annotated[Caller, Depends(_requiring(Scope.CHAT))]
MessagesCaller = Annotated[Caller, Depends(_requiring(Scope.CHAT, get_messages_caller))]
"""The chat scope, for a key sent as ``x-api-key`` (Anthropic's way) or a bearer token."""
MessageBatchesCaller = Annotated[Caller, Depends(_requiring(Scope.BATCHES, get_messages_caller))]
MessagesReadCaller = Annotated[Caller, Depends(_requiring(Scope.READ, get_messages_caller))]
BatchesCaller = Annotated[Caller, Depends(_requiring(Scope.BATCHES))]
FilesCaller = Annotated[Caller, Depends(_requiring(Scope.FILES))]
admin_caller = _requiring(Scope.ADMIN)
AdminCaller = Annotated[Caller, Depends(admin_caller)]
