"""Bearer JWTs beside API keys: a token from a configured issuer, verified, becomes a
tenant with the scopes and models its claims give.

The checks, in order, each refusing the token with a message that says what
failed (and never repeats the token):

1. its ``iss`` (read before anything is trusted) names a configured issuer;
2. its header's ``alg`` is the one that issuer is pinned to, so ``none``, and an
   HS256 token aimed at an RS256 issuer (its public key used as an HMAC secret),
   are refused before any key is looked at;
3. the key: the issuer's secret, its PEM key, or the key of its key set that the
   header's ``kid`` names (relayq/auth/jwks.py);
4. the signature, by pyjwt with only the pinned algorithm allowed, and the claims:
   ``exp`` required and not past, ``nbf`` and ``iat`` not in the future (each
   with the issuer's leeway), ``iss`` exact, ``aud`` present and one configured;
5. the tenant claim a non-empty string.

Scopes a token names that relayq does not know, or that the issuer may not grant
(``allowed_scopes``), are ignored rather than refused: an identity provider's
tokens carry scopes for other services too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from relayq.auth.jwks import JwksUnavailable, KeySet, UnknownKey
from relayq.config.auth import AuthSettings, JwtIssuerSettings, PublicKey
from relayq.schemas.scopes import DEFAULT_SCOPES, parse_scopes

__all__ = ["JwksUnavailable", "Principal", "TokenRejected", "TokenVerifier"]

_MAX_TENANT_CHARS = 200
_JWKS_TIMEOUT = httpx.Timeout(5.0)


class TokenRejected(Exception):
    """A bearer token the API does not accept; the message says why."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    issuer: str
    tenant: str
    scopes: frozenset[str]
    models: frozenset[str] | None
    """The models it may ask for; None: every model."""

    @property
    def subject(self) -> str:
        """The tenant across issuers: ``issuer|tenant`` (an issuer holds no ``|``)."""
        return f"{self.issuer}|{self.tenant}"


class _Issuer:
    """One configured issuer, with its key source built."""

    def __init__(
        self,
        settings: JwtIssuerSettings,
        *,
        http: httpx.AsyncClient,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        where = f"auth.jwt_issuers {settings.issuer!r}"
        try:
            self.default_scopes = frozenset(parse_scopes(settings.default_scopes))
            allowed = settings.allowed_scopes
            self.allowed_scopes = frozenset(
                parse_scopes(allowed) if allowed is not None else DEFAULT_SCOPES
            )
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
        self.keys: KeySet | None = None
        self.key: bytes | PublicKey | None = None
        if settings.secret is not None:
            self.key = settings.secret.get_secret_value().encode()
        elif settings.public_key is not None:
            self.key = settings.pem_key()
        elif settings.jwks_url is not None:
            self.keys = KeySet(
                url=settings.jwks_url,
                algorithm=settings.algorithm,
                http=http,
                cache_seconds=settings.jwks_cache_seconds,
                refetch_seconds=settings.jwks_refetch_seconds,
                clock=clock,
            )

    async def key_for(self, header: dict[str, Any]) -> bytes | PublicKey:
        if self.keys is None:
            assert self.key is not None
            return self.key
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("the token's key id (kid) is not a string")
        try:
            return await self.keys.key(kid)
        except UnknownKey as exc:
            raise TokenRejected(str(exc)) from exc


class TokenVerifier:
    """Verifies bearer JWTs against the configured issuers; built at the API's start-up,
    closed at its shutdown (it owns the client that fetches key sets)."""

    def __init__(
        self, settings: AuthSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._http = httpx.AsyncClient(timeout=_JWKS_TIMEOUT, follow_redirects=False)
        self._issuers = {
            issuer.issuer: _Issuer(issuer, http=self._http, clock=clock)
            for issuer in settings.jwt_issuers
        }

    async def verify(self, token: str) -> Principal:
        """The principal ``token`` speaks for; raises :class:`TokenRejected` saying why
        not, or :class:`JwksUnavailable` when its issuer's keys cannot be had."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError as exc:
            raise TokenRejected("the token is not a well-formed JWT") from exc
        named = unverified.get("iss")
        if not isinstance(named, str):
            raise TokenRejected("the token has no issuer (iss)")
        issuer = self._issuers.get(named)
        if issuer is None:
            raise TokenRejected(f"unknown issuer: {named[:100]!r} is not configured")
        pinned = issuer.settings.algorithm
        alg = header.get("alg")
        if alg != pinned:
            shown = repr(alg[:20]) if isinstance(alg, str) else "none given"
            raise TokenRejected(
                f"algorithm not allowed: the token is signed with {shown}; "
                f"its issuer signs with {pinned}"
            )
        key = await issuer.key_for(header)
        claims = _decode(token, key=key, settings=issuer.settings)
        return _principal(claims, issuer)

    async def aclose(self) -> None:
        await self._http.aclose()


def _decode(token: str, *, key: bytes | PublicKey, settings: JwtIssuerSettings) -> dict[str, Any]:
    """The token's claims once pyjwt has checked its signature and times."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=[str(settings.algorithm)],
            audience=settings.audiences,
            issuer=settings.issuer,
            leeway=settings.leeway_seconds,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenRejected("the token has expired (exp)") from exc
    except jwt.ImmatureSignatureError as exc:
        which = "iat" if "(iat)" in str(exc) else "nbf"
        raise TokenRejected(f"the token is not yet valid ({which} is in the future)") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRejected(f"the token lacks the required '{exc.claim}' claim") from exc
    except jwt.InvalidAudienceError as exc:
        wanted = ", ".join(settings.audiences)
        raise TokenRejected(f"wrong audience: the token's aud is not {wanted}") from exc
    except jwt.InvalidIssuerError as exc:
        raise TokenRejected("wrong issuer (iss)") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenRejected("bad signature: the token was not signed by its issuer") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenRejected(f"the token is invalid ({type(exc).__name__})") from exc
    return claims


def _principal(claims: dict[str, Any], issuer: _Issuer) -> Principal:
    settings = issuer.settings
    tenant = claims.get(settings.tenant_claim)
    if not isinstance(tenant, str) or not tenant.strip():
        raise TokenRejected(
            f"the token's '{settings.tenant_claim}' claim, which names its tenant, "
            "is missing or not a non-empty string"
        )
    if len(tenant) > _MAX_TENANT_CHARS:
        raise TokenRejected(
            f"the token's '{settings.tenant_claim}' claim is longer than "
            f"{_MAX_TENANT_CHARS} characters"
        )
    return Principal(
        issuer=settings.issuer,
        tenant=tenant,
        scopes=_scopes(claims, issuer),
        models=_models(claims, settings),
    )


def _scopes(claims: dict[str, Any], issuer: _Issuer) -> frozenset[str]:
    name = issuer.settings.scopes_claim
    if name not in claims:
        return issuer.default_scopes
    value = claims[name]
    if isinstance(value, str):
        named = value.split()
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        named = value
    else:
        raise TokenRejected(f"the token's '{name}' claim is neither a string nor a list of them")
    return frozenset(named) & issuer.allowed_scopes


def _models(claims: dict[str, Any], settings: JwtIssuerSettings) -> frozenset[str] | None:
    name = settings.models_claim
    if name is None or name not in claims:
        return None
    value = claims[name]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TokenRejected(f"the token's '{name}' claim is not a list of model names")
    return frozenset(value)
