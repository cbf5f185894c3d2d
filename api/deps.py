"""Request dependencies: services, database sessions, and the caller with its scopes.

Every route that acts for a key asks for one scope through its caller
dependency (``ReadCaller``, ``JobsCaller``...); a caller without it gets a 403.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import APIError
from api.services import Services
from relayq.auth.caller import Caller
from relayq.auth.jwt import JwksUnavailable, TokenRejected, TokenVerifier
from relayq.budgets.reservations import BudgetLimits
from relayq.config.settings import Settings
from relayq.intake.intake import KeyLimitValues
from relayq.keys import hash_key
from relayq.routing.router import Router
from relayq.schemas.scopes import Scope
from relayq.store.keys import JWT_SOURCE, KeyState, find_key, key_state, tenant_key
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
    "key_budget",
    "key_limits",
    "require_model",
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
_TOKEN_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
"""Three base64url segments: a JWT (an unsigned one's last is empty). API keys hold no dot."""
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
    """The caller, from ``Authorization: Bearer <key or JWT>``; its key id goes in the
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
    """The caller whose API key, or JWT, ``secret`` is."""
    verifier = services.verifier
    if verifier is not None and "." in secret and _JWT_SHAPE.fullmatch(secret):
        caller = await _token_caller(services, verifier, secret)
        request.state.key_id = caller.id
        return caller
    digest = hash_key(secret)

    async def load() -> ApiKey | None:
        async with services.database.session() as session:
            return await find_key(session, digest=digest)

    key = await services.keys.find(digest, load)
    state = key_state(key, digest=digest, now=time.time())
    if key is None or state is not KeyState.ACTIVE:
        raise APIError(
            401, _refusal(state, key, secret), code="invalid_api_key", headers=_CHALLENGE
        )
    request.state.key_id = key.id
    services.key_usage.note(key.id)
    return Caller.of_key(key)


async def _token_caller(services: Services, verifier: TokenVerifier, token: str) -> Caller:
    """A verified JWT's caller: its tenant's row (made on the tenant's first call) with
    the token's scopes and models."""
    try:
        principal = await verifier.verify(token)
    except TokenRejected as exc:
        raise APIError(
            401, f"Invalid bearer token: {exc}.", code="invalid_token", headers=_TOKEN_CHALLENGE
        ) from None
    except JwksUnavailable as exc:
        raise APIError(
            503, f"The token cannot be checked now: {exc}.", code="jwks_unavailable"
        ) from None
    subject = principal.subject

    async def load() -> ApiKey | None:
        async with services.database.session() as session:
            return await tenant_key(session, subject=subject, name=principal.tenant)

    key = await services.tenants.find(subject, load)
    if key is None or key.revoked_at is not None:
        raise APIError(
            401,
            "Invalid bearer token: its tenant's access is revoked.",
            code="invalid_token",
            headers=_TOKEN_CHALLENGE,
        )
    return Caller(key=key, scopes=principal.scopes, models=principal.models)


def _iso(moment: float | None) -> str:
    when = datetime.fromtimestamp(moment or 0.0, UTC)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def _refusal(state: KeyState, key: ApiKey | None, secret: str) -> str:
    """Why a secret may not call: each state in words of its own."""
    if key is None or state is KeyState.UNKNOWN:
        return f"Incorrect API key provided: ...{secret[-4:]}. No key has this secret."
    if state is KeyState.REVOKED:
        return f"This API key (...{secret[-4:]}) was revoked at {_iso(key.revoked_at)}."
    if state is KeyState.EXPIRED:
        return f"This API key expired at {_iso(key.expires_at)}."
    stopped = "" if key.previous_expires_at is None else f" at {_iso(key.previous_expires_at)}"
    return (
        f"This API key's secret was replaced by a rotation; the old secret stopped "
        f"working{stopped}. Use the new secret."
    )


CallerDep = Annotated[Caller, Depends(get_caller)]


def key_limits(caller: Caller, settings: Settings) -> KeyLimitValues:
    """The limits in force for ``caller``'s key: its own, else the API's defaults."""
    key = caller.key
    return KeyLimitValues(
        requests_per_minute=key.requests_per_minute or settings.api.key_requests_per_minute,
        max_concurrent_jobs=key.max_concurrent_jobs or settings.api.key_max_concurrent_jobs,
        tokens_per_minute=key.tokens_per_minute or settings.api.key_tokens_per_minute,
    )


def require_model(caller: Caller, model: str, router: Router) -> None:
    """Refuse (403 ``model_not_allowed``) a model the caller's allow-list leaves out."""
    if caller.models is None:
        return
    found = router.route(model)
    if caller.allows(model, None if found is None else found[0]):
        return
    allowed = ", ".join(sorted(caller.models)) or "none"
    raise APIError(
        403,
        f"This key may not use the model '{model}'. Models it may use: {allowed}.",
        code="model_not_allowed",
        param="model",
    )


def key_budget(caller: Caller) -> BudgetLimits | None:
    """``caller``'s key's budget; None when it has none (nothing is reserved)."""
    key = caller.key
    return BudgetLimits.of(key.budget_period, key.budget_usd, key.budget_tokens)


def _check_scope(scope: Scope, caller: Caller, request: Request) -> Caller:
    """``caller`` if it holds ``scope``, else a 403 naming what it holds."""
    if scope.value not in caller.scopes:
        held = ", ".join(sorted(caller.scopes)) or "none"
        who = "token" if caller.key.source == JWT_SOURCE else "key"
        raise APIError(
            403,
            f"This {who} lacks the '{scope.value}' scope, which "
            f"{request.method} {request.url.path} needs (it holds: {held}).",
            code="insufficient_scope",
        )
    return caller


def _requiring(scope: Scope, *, messages: bool = False) -> Callable[..., Awaitable[Caller]]:
    """The dependency of a route that needs ``scope``: the caller (found as
    :func:`get_caller` finds it, or with ``messages`` as :func:`get_messages_caller`
    does) if it holds the scope.

    One dependency that finds the caller and checks it, not a check that depends on
    :func:`get_caller`: FastAPI solves each level of dependencies anew on every
    request, and the level more cost every request some microseconds.
    """
    if messages:

        async def scoped_messages(
            request: Request,
            services: ServicesDep,
            authorization: Annotated[str | None, Header()] = None,
            x_api_key: Annotated[str | None, Header()] = None,
        ) -> Caller:
            caller = await get_messages_caller(request, services, authorization, x_api_key)
            return _check_scope(scope, caller, request)

        dependency: Callable[..., Awaitable[Caller]] = scoped_messages
    else:

        async def scoped(
            request: Request,
            services: ServicesDep,
            authorization: Annotated[str | None, Header()] = None,
        ) -> Caller:
            caller = await _caller_of(request, services, _bearer_secret(authorization))
            return _check_scope(scope, caller, request)

        dependency = scoped
    dependency.__name__ = f"{scope.value}_caller"
    return dependency


ReadCaller = Annotated[Caller, Depends(_requiring(Scope.READ))]
JobsCaller = Annotated[Caller, Depends(_requiring(Scope.JOBS))]
ChatCaller = Annotated[Caller, Depends(_requiring(Scope.CHAT))]
MessagesCaller = Annotated[Caller, Depends(_requiring(Scope.CHAT, messages=True))]
"""The chat scope, for a key sent as ``x-api-key`` (Anthropic's way) or a bearer token."""
MessageBatchesCaller = Annotated[Caller, Depends(_requiring(Scope.BATCHES, messages=True))]
MessagesReadCaller = Annotated[Caller, Depends(_requiring(Scope.READ, messages=True))]
BatchesCaller = Annotated[Caller, Depends(_requiring(Scope.BATCHES))]
FilesCaller = Annotated[Caller, Depends(_requiring(Scope.FILES))]
admin_caller = _requiring(Scope.ADMIN)
AdminCaller = Annotated[Caller, Depends(admin_caller)]
