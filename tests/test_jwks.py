"""An issuer's key set as the API keeps it: fetched over real HTTP from a fake identity
provider on 127.0.0.1, with a clock the test moves."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from relayq.auth.jwks import JwksUnavailable, KeySet, UnknownKey
from relayq.config.auth import JwtAlgorithm
from tests.clock import FakeClock
from tests.fakes.jwks_server import FakeJwks
from tests.fakes.server import closed_port
from tests.services import run

CACHE = 300.0
REFETCH = 10.0


def _jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    published: dict[str, Any] = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**published, "kid": kid, "alg": "ES256"}


def _key_set(http: httpx.AsyncClient, url: str, clock: FakeClock) -> KeySet:
    return KeySet(
        url=url,
        algorithm=JwtAlgorithm.ES256,
        http=http,
        cache_seconds=CACHE,
        refetch_seconds=REFETCH,
        clock=clock,
    )


def test_the_set_is_fetched_again_once_it_is_stale() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    clock = FakeClock()

    async def main(jwks: FakeJwks) -> None:
        async with httpx.AsyncClient() as http:
            keys = _key_set(http, jwks.url, clock)
            found = await keys.key("es-1")
            assert found.public_numbers() == key.public_key().public_numbers()
            clock.advance(CACHE - 1)
            await keys.key("es-1")
            assert jwks.hits == 1
            clock.advance(1)
            await keys.key("es-1")
            assert jwks.hits == 2

    with FakeJwks() as jwks:
        jwks.publish(_jwk(key, "es-1"))
        run(main(jwks))


def test_concurrent_lookups_share_one_fetch() -> None:
    key = ec.generate_private_key(ec.SECP256R1())

    async def main(jwks: FakeJwks) -> None:
        async with httpx.AsyncClient() as http:
            keys = _key_set(http, jwks.url, FakeClock())
            found = await asyncio.gather(*(keys.key("es-1") for _ in range(20)))
        assert len(found) == 20
        assert jwks.hits == 1

    with FakeJwks() as jwks:
        jwks.publish(_jwk(key, "es-1"))
        run(main(jwks))


def test_unknown_key_ids_fetch_again_once_per_interval() -> None:
    """A rotation is picked up at once; a flood of unknown ids costs one fetch per interval."""
    old, new = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    clock = FakeClock()

    async def main(jwks: FakeJwks) -> None:
        async with httpx.AsyncClient() as http:
            keys = _key_set(http, jwks.url, clock)
            await keys.key("old")
            jwks.publish(_jwk(old, "old"), _jwk(new, "new"))
            await keys.key("new")
            assert jwks.hits == 2
            for n in range(5):
                with pytest.raises(UnknownKey, match="unknown key id"):
                    await keys.key(f"made-up-{n}")
            assert jwks.hits == 2
            clock.advance(REFETCH)
            with pytest.raises(UnknownKey):
                await keys.key("made-up-again")
            assert jwks.hits == 3

    with FakeJwks() as jwks:
        jwks.publish(_jwk(old, "old"))
        run(main(jwks))


def test_a_token_without_a_key_id_needs_a_set_of_one() -> None:
    one, two = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    clock = FakeClock()

    async def main(jwks: FakeJwks) -> None:
        async with httpx.AsyncClient() as http:
            keys = _key_set(http, jwks.url, clock)
            found = await keys.key(None)
            assert found.public_numbers() == one.public_key().public_numbers()
            jwks.publish(_jwk(one, "one"), _jwk(two, "two"))
            clock.advance(CACHE)
            with pytest.raises(UnknownKey, match="names none"):
                await keys.key(None)

    with FakeJwks() as jwks:
        jwks.publish(_jwk(one, "one"))
        run(main(jwks))


def test_a_set_that_cannot_be_fetched_again_keeps_its_keys() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    clock = FakeClock()

    async def main() -> None:
        async with httpx.AsyncClient() as http:
            with FakeJwks() as jwks:
                jwks.publish(_jwk(key, "es-1"))
                keys = _key_set(http, jwks.url, clock)
                await keys.key("es-1")
            clock.advance(CACHE)
            found = await keys.key("es-1")  # the server is gone: the held key serves
            assert found.public_numbers() == key.public_key().public_numbers()

    run(main())


def test_a_set_never_fetched_is_unavailable() -> None:
    async def main() -> None:
        async with httpx.AsyncClient() as http:
            keys = _key_set(http, f"http://127.0.0.1:{closed_port()}/jwks.json", FakeClock())
            with pytest.raises(JwksUnavailable, match="could not be fetched"):
                await keys.key("es-1")

    run(main())


@pytest.mark.parametrize(
    ("document", "why"),
    [
        (b"not json", "not JSON"),
        (b'{"no": "keys"}', "no 'keys' list"),
    ],
)
def test_an_answer_that_is_no_key_set_is_unavailable(document: bytes, why: str) -> None:
    """What the set's URL answered is named (with no set held, nothing can be checked)."""

    class NotAKeySet(FakeJwks):
        async def _serve_keys(self, request: web.Request) -> web.Response:
            return web.Response(body=document, content_type="application/json")

    async def main(server: FakeJwks) -> None:
        async with httpx.AsyncClient() as http:
            keys = _key_set(http, server.url, FakeClock())
            with pytest.raises(JwksUnavailable, match=why):
                await keys.key("es-1")

    with NotAKeySet() as server:
        run(main(server))
