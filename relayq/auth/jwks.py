"""An issuer's published signing keys (a JSON Web Key Set), fetched and kept.

The set is fetched when first needed and again once it is ``cache_seconds``
old. A token naming a key id the set lacks (the issuer rotated its keys) makes
one more fetch, but at most one per ``refetch_seconds`` whatever the tokens
name, so a flood of made-up key ids costs the issuer one request per interval,
not one per token. Concurrent requests share one fetch.

A key is used only for the algorithm the issuer is pinned to: an ``RS256``
issuer's key must be an RSA key (2048 bits at least), an ``ES256`` one's a
P-256 EC key, and a key that names an ``alg`` must name that one. A set that
cannot be fetched keeps the keys held before it (logged); with none held the
token cannot be checked (:class:`JwksUnavailable`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWK, PyJWKError

from relayq.config.auth import JwtAlgorithm, PublicKey

__all__ = ["JwksUnavailable", "KeySet", "UnknownKey"]

log = logging.getLogger(__name__)

_MAX_BYTES = 256 * 1024
"""A key set is a few kilobytes; a larger answer is not one."""
_KEY_TYPES = {JwtAlgorithm.RS256: "RSA", JwtAlgorithm.ES256: "EC"}


class JwksUnavailable(Exception):
    """The issuer's key set could not be fetched and none was held before."""


class UnknownKey(Exception):
    """The token names a key the set lacks, or one that does not suit the algorithm;
    the message says which."""


@dataclass(frozen=True, slots=True)
class _Published:
    kty: str
    alg: str | None
    key: Any


class KeySet:
    """The keys one issuer publishes at ``url``, for tokens signed with ``algorithm``."""

    def __init__(
        self,
        *,
        url: str,
        algorithm: JwtAlgorithm,
        http: httpx.AsyncClient,
        cache_seconds: float,
        refetch_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._algorithm = algorithm
        self._http = http
        self._cache_seconds = cache_seconds
        self._refetch_seconds = refetch_seconds
        self._clock = clock
        self._keys: dict[str | None, _Published] | None = None
        self._fresh_until = -math.inf
        self._last_unknown_fetch = -math.inf
        self._fetching: asyncio.Future[None] | None = None

    async def key(self, kid: str | None) -> PublicKey:
        """The public key ``kid`` names (with no ``kid``: the set's only key)."""
        fetched = False
        if self._keys is None or self._clock() >= self._fresh_until:
            await self._refresh()
            fetched = True
        found = self._find(kid)
        if found is None and not fetched:
            now = self._clock()
            if now - self._last_unknown_fetch >= self._refetch_seconds:
                self._last_unknown_fetch = now
                await self._refresh()
                found = self._find(kid)
        if found is None:
            if kid is None:
                raise UnknownKey(
                    "unknown key id: the token names none (kid) and its issuer has several keys"
                )
            raise UnknownKey(f"unknown key id: its issuer publishes no key {kid[:64]!r}")
        return self._checked(kid, found)

    def _find(self, kid: str | None) -> _Published | None:
        keys = self._keys or {}
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        return keys.get(kid)

    def _checked(self, kid: str | None, found: _Published) -> PublicKey:
        pinned = self._algorithm
        if found.kty != _KEY_TYPES[pinned] or (found.alg is not None and found.alg != pinned):
            raise UnknownKey(
                f"key not allowed: {kid!r} is a {found.kty} key for "
                f"{found.alg or 'any algorithm'}; its issuer signs with {pinned}"
            )
        key = found.key
        if pinned is JwtAlgorithm.RS256 and isinstance(key, rsa.RSAPublicKey):
            if key.key_size >= 2048:
                return key
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            return key
        raise UnknownKey(f"key not allowed: {kid!r} does not suit {pinned}")

    async def _refresh(self) -> None:
        """Fetch the set; callers that come meanwhile share the fetch, and one that is
        cancelled does not cancel it for the others."""
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(self._fetch())
            self._fetching.add_done_callback(self._fetched)
        await asyncio.shield(self._fetching)

    def _fetched(self, fetching: asyncio.Future[None]) -> None:
        self._fetching = None
        if not fetching.cancelled():
            fetching.exception()  # its waiters, if any are left, have it

    async def _fetch(self) -> None:
        try:
            keys = _parse(await self._download())
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("keys of %s not fetched: %s", self._url, exc)
            if self._keys is None:
                raise JwksUnavailable(f"the issuer's keys could not be fetched ({exc})") from exc
            # Keep the keys held; try again after the refetch interval, not at once.
            self._fresh_until = self._clock() + self._refetch_seconds
            return
        self._keys = keys
        self._fresh_until = self._clock() + self._cache_seconds

    async def _download(self) -> bytes:
        async with self._http.stream("GET", self._url) as response:
            if response.status_code != 200:
                raise ValueError(f"{self._url} answered {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _MAX_BYTES:
                    raise ValueError(f"{self._url} sent more than {_MAX_BYTES} bytes")
            return bytes(body)


def _parse(body: bytes) -> dict[str | None, _Published]:
    """The set's signing keys by key id; keys pyjwt cannot load, or meant for
    encryption, are left out."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError("the key set is not JSON") from exc
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("the key set has no 'keys' list")
    keys: dict[str | None, _Published] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        try:
            loaded = PyJWK(entry)
        except PyJWKError as exc:
            log.warning("key %r of a key set left out: %s", kid, exc)
            continue
        alg = entry.get("alg")
        keys[kid] = _Published(
            kty=str(entry.get("kty")), alg=alg if isinstance(alg, str) else None, key=loaded.key
        )
    return keys
