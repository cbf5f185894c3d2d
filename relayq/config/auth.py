"""Who may call besides API keys: the JWT issuers the API trusts, each pinned to one
algorithm and one source of keys.

Set in the environment as JSON (``RELAYQ_AUTH__JWT_ISSUERS='[{"issuer": ...}]'``);
every combination that cannot verify a token safely stops the process at start-up
with a message naming the issuer and the field, instead of refusing every token
later. What the API checks with these is in docs/security.md.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = ["AuthSettings", "JwtAlgorithm", "JwtIssuerSettings", "PublicKey"]

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_MIN_SECRET_BYTES = 32
"""RFC 7518 (3.2): an HS256 key of at least the hash's size, 256 bits."""
_MAX_ISSUER_CHARS = 190
"""A tenant's row names ``issuer|tenant`` in a column of 400 characters, tenant up to 200."""
_LOOPBACK_HOSTS = {"localhost"}


class JwtAlgorithm(StrEnum):
    """The algorithms an issuer may be pinned to; ``none`` and every other one are refused."""

    HS256 = "HS256"
    """HMAC with SHA-256 over a secret the issuer and relayq share."""
    RS256 = "RS256"
    """RSA PKCS#1 v1.5 with SHA-256, checked with the issuer's public key."""
    ES256 = "ES256"
    """ECDSA on P-256 with SHA-256, checked with the issuer's public key."""


class JwtIssuerSettings(BaseModel):
    """One issuer whose tokens the API accepts, and how its claims become a caller."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1, max_length=_MAX_ISSUER_CHARS)
    """The exact ``iss`` its tokens carry."""
    audience: str | list[str]
    """The ``aud`` (one of these) a token must name: tokens minted for another service
    are refused."""
    algorithm: JwtAlgorithm
    """The one algorithm its tokens may use; a token whose header names another is refused
    before any key is used."""
    secret: SecretStr | None = None
    """HS256: the shared secret (at least 32 bytes)."""
    public_key: str | None = None
    """RS256 or ES256: the issuer's public key, PEM (``-----BEGIN PUBLIC KEY-----``)."""
    jwks_url: str | None = None
    """RS256 or ES256: where the issuer publishes its keys (JSON Web Key Set); https, or
    http on a loopback address."""
    tenant_claim: str = Field(default="sub", min_length=1)
    """The claim naming the tenant: the owner of every job, batch and file its tokens make."""
    scopes_claim: str = Field(default="scope", min_length=1)
    """The claim holding the token's scopes: a space-separated string or a list."""
    default_scopes: list[str] = Field(default_factory=list)
    """Scopes for a token without ``scopes_claim``; none by default (it may call nothing)."""
    allowed_scopes: list[str] | None = None
    """The most a token of this issuer may hold: other scopes it names are ignored. Unset:
    every scope but ``admin``; list ``admin`` to let tokens open the admin API. (Scope
    names are checked when the API starts, by relayq/auth/jwt.py.)"""
    models_claim: str | None = None
    """A list claim that becomes the caller's model allow-list; unset, or absent from a
    token: every model."""
    leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    """Clock skew allowed when checking ``exp``, ``nbf`` and ``iat``."""
    jwks_cache_seconds: float = Field(default=300.0, gt=0)
    """How long fetched keys are used before the set is fetched again."""
    jwks_refetch_seconds: float = Field(default=10.0, ge=0)
    """At most one fetch per this long for tokens naming a key id the set lacks, so a
    flood of unknown key ids cannot hammer the issuer."""

    @field_validator("issuer")
    @classmethod
    def _issuer_separable(cls, value: str) -> str:
        if "|" in value:
            raise ValueError("must not contain '|' (a tenant is stored as 'issuer|tenant')")
        return value

    @field_validator("audience")
    @classmethod
    def _audience_named(cls, value: str | list[str]) -> str | list[str]:
        names = [value] if isinstance(value, str) else value
        if not names or not all(names):
            raise ValueError("must name at least one audience, none of them empty")
        return value

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url_safe(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = urlsplit(value)
        if url.scheme == "https" and url.hostname:
            return value
        if url.scheme == "http" and url.hostname and _loopback(url.hostname):
            return value
        raise ValueError("must be an https URL (http only on a loopback address)")

    @model_validator(mode="after")
    def _keys_match_algorithm(self) -> JwtIssuerSettings:
        where = f"issuer {self.issuer!r}"
        if self.algorithm is JwtAlgorithm.HS256:
            if self.secret is None:
                raise ValueError(f"{where}: HS256 needs 'secret'")
            if self.public_key is not None or self.jwks_url is not None:
                raise ValueError(f"{where}: HS256 takes 'secret' alone, not a public key")
            if len(self.secret.get_secret_value().encode()) < _MIN_SECRET_BYTES:
                raise ValueError(f"{where}: 'secret' must be at least {_MIN_SECRET_BYTES} bytes")
            return self
        if self.secret is not None:
            raise ValueError(f"{where}: {self.algorithm} verifies with a public key, not 'secret'")
        if (self.public_key is None) == (self.jwks_url is None):
            raise ValueError(f"{where}: {self.algorithm} needs one of 'public_key' or 'jwks_url'")
        if self.public_key is not None:
            self.pem_key()
        return self

    @property
    def audiences(self) -> list[str]:
        return [self.audience] if isinstance(self.audience, str) else list(self.audience)

    def pem_key(self) -> PublicKey:
        """``public_key`` loaded; raises ``ValueError`` unless it suits the algorithm."""
        where = f"issuer {self.issuer!r}: 'public_key'"
        try:
            key: Any = load_pem_public_key((self.public_key or "").encode())
        except ValueError as exc:
            raise ValueError(f"{where} is not a PEM public key ({exc})") from exc
        if self.algorithm is JwtAlgorithm.RS256 and isinstance(key, rsa.RSAPublicKey):
            if key.key_size < 2048:
                raise ValueError(f"{where} is RSA of {key.key_size} bits; 2048 at least")
            return key
        if (
            self.algorithm is JwtAlgorithm.ES256
            and isinstance(key, ec.EllipticCurvePublicKey)
            and isinstance(key.curve, ec.SECP256R1)
        ):
            return key
        wanted = "an RSA key" if self.algorithm is JwtAlgorithm.RS256 else "a P-256 EC key"
        raise ValueError(f"{where} is not {wanted}, which {self.algorithm} needs")


def _loopback(host: str) -> bool:
    if host in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AuthSettings(BaseModel):
    """Ways to call the API besides API keys."""

    model_config = ConfigDict(extra="forbid")

    jwt_issuers: list[JwtIssuerSettings] = Field(default_factory=list)
    """Issuers whose bearer JWTs the API accepts; none by default (API keys only)."""

    @field_validator("jwt_issuers")
    @classmethod
    def _issuers_unique(cls, value: list[JwtIssuerSettings]) -> list[JwtIssuerSettings]:
        seen: set[str] = set()
        for issuer in value:
            if issuer.issuer in seen:
                raise ValueError(f"issuer {issuer.issuer!r} is configured twice")
            seen.add(issuer.issuer)
        return value
