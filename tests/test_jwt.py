"""JWT bearer tokens beside API keys: the real API app in this process, on the session's
database (SQLite and PostgreSQL) and a real Redis, with an identity provider's key set
served by a fake on 127.0.0.1.

Each attack is a token forged here and sent as a caller would; each gets a 401.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis as sync_redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError
from sqlalchemy import select

from api.app import create_app
from relayq.auth.jwt import TokenVerifier
from relayq.config.settings import AuthSettings, Settings
from relayq.keys import hash_key
from relayq.store import Database
from relayq.store.keys import revoke_key, tenant_key
from relayq.store.models import ApiKey, Job
from tests.conftest import KeyFactory
from tests.fakes.jwks_server import FakeJwks
from tests.fakes.server import closed_port
from tests.jobs import body
from tests.services import run

_REDIS_DB = 8
AUDIENCE = "relayq"
HS_ISSUER = "https://hs.idp.test"
OTHER_ISSUER = "https://other.idp.test"
RS_ISSUER = "https://rs.idp.test"
ES_ISSUER = "https://es.idp.test"
HS_SECRET = secrets.token_urlsafe(32)
OTHER_SECRET = secrets.token_urlsafe(32)
LEEWAY = 30
BATCH = {
    "input_file_id": "file-none",
    "endpoint": "/v1/chat/completions",
    "completion_window": "24h",
}


@dataclass(frozen=True)
class Signing:
    """The identity providers' private keys, and what they publish."""

    rsa_key: rsa.RSAPrivateKey
    rsa_public_pem: str
    ec_key: ec.EllipticCurvePrivateKey
    ec_rotated: ec.EllipticCurvePrivateKey

    @staticmethod
    def jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
        published: dict[str, Any] = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        return {**published, "kid": kid, "alg": "ES256", "use": "sig"}


@pytest.fixture(scope="module")
def signing() -> Signing:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Signing(
        rsa_key=rsa_key,
        rsa_public_pem=pem.decode(),
        ec_key=ec.generate_private_key(ec.SECP256R1()),
        ec_rotated=ec.generate_private_key(ec.SECP256R1()),
    )


@pytest.fixture
def jwks(signing: Signing) -> Iterator[FakeJwks]:
    with FakeJwks() as server:
        server.publish(Signing.jwk(signing.ec_key, "es-1"))
        yield server


def _issuers(signing: Signing, jwks_url: str) -> list[dict[str, Any]]:
    return [
        {
            "issuer": HS_ISSUER,
            "audience": AUDIENCE,
            "algorithm": "HS256",
            "secret": HS_SECRET,
            "models_claim": "models",
            "leeway_seconds": LEEWAY,
        },
        {
            "issuer": OTHER_ISSUER,
            "audience": AUDIENCE,
            "algorithm": "HS256",
            "secret": OTHER_SECRET,
        },
        {
            "issuer": RS_ISSUER,
            "audience": [AUDIENCE, "relayq-eu"],
            "algorithm": "RS256",
            "public_key": signing.rsa_public_pem,
            "tenant_claim": "org",
            "scopes_claim": "scp",
        },
        {"issuer": ES_ISSUER, "audience": AUDIENCE, "algorithm": "ES256", "jwks_url": jwks_url},
    ]


@pytest.fixture
def settings(
    database_url: str, redis_server: str, signing: Signing, jwks: FakeJwks, tmp_path: Path
) -> Iterator[Settings]:
    """The API's settings: the session's database, a Redis database of this module's own,
    and the four issuers."""
    built = Settings(
        database_url=database_url,
        redis_url=f"{redis_server}/{_REDIS_DB}",
        key_prefix=f"relayq-jwt-{uuid.uuid4().hex[:8]}",
        files={"storage_dir": tmp_path / "files"},
        auth={"jwt_issuers": _issuers(signing, jwks.url)},
    )
    broker = sync_redis.Redis.from_url(built.redis_url)
    broker.flushdb()
    try:
        yield built
    finally:
        broker.flushdb()
        broker.close()


@contextlib.asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API app in this process, started as uvicorn starts it (its lifespan)."""
    app = create_app(settings, configure_logs=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://relayq.test", timeout=10
        ) as client:
            yield client


def _tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:12]}"


def claims(iss: str, tenant: str, /, **changes: Any) -> dict[str, Any]:
    """A valid token's claims for ``tenant``; a change to None leaves the claim out."""
    now = int(time.time())
    found: dict[str, Any] = {
        "iss": iss,
        "aud": AUDIENCE,
        "sub": tenant,
        "iat": now,
        "exp": now + 300,
        "scope": "jobs read",
    }
    found.update(changes)
    return {name: value for name, value in found.items() if value is not None}


def hs_token(tenant: str, *, secret: str = HS_SECRET, **changes: Any) -> str:
    return jwt.encode(claims(HS_ISSUER, tenant, **changes), secret, algorithm="HS256")


def rs_token(signing: Signing, org: str, **changes: Any) -> str:
    payload = claims(RS_ISSUER, "user-1", org=org, scope=None, scp=["jobs", "read"], **changes)
    return jwt.encode(payload, signing.rsa_key, algorithm="RS256")


def es_token(key: ec.EllipticCurvePrivateKey, tenant: str, *, kid: str, **changes: Any) -> str:
    return jwt.encode(
        claims(ES_ISSUER, tenant, **changes), key, algorithm="ES256", headers={"kid": kid}
    )


def _segment(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token built by hand, as an attacker would: HMAC-SHA256 over ``hmac_key``, or
    no signature at all."""
    signed = f"{_segment(header)}.{_segment(payload)}"
    if hmac_key is None:
        return f"{signed}."
    mac = hmac.new(hmac_key, signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _refused(answer: httpx.Response, token: str, why: str) -> None:
    assert answer.status_code == 401, answer.text
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_token")
    assert why in error["message"], error["message"]
    assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    for part in token.split("."):
        if len(part) > 8:
            assert part not in answer.text


def test_an_hs256_tenant_owns_its_jobs(
    settings: Settings, make_key: KeyFactory, database_url: str
) -> None:
    """Jobs a token makes belong to its tenant: the tenant's next token finds them,
    another tenant's token and an API key get a 404."""
    tenant, other = _tenant(), _tenant()
    api_key = make_key()

    async def main() -> None:
        async with api(settings) as client:
            made = await client.post("/v1/jobs", json=body(), headers=bearer(hs_token(tenant)))
            assert made.status_code == 202, made.text
            job_id = made.json()["id"]
            again = await client.get(f"/v1/jobs/{job_id}", headers=bearer(hs_token(tenant)))
            assert again.status_code == 200, again.text
            listed = await client.get("/v1/jobs", headers=bearer(hs_token(tenant)))
            assert [job["id"] for job in listed.json()["data"]] == [job_id]
            for stranger in (hs_token(other), api_key):
                answer = await client.get(f"/v1/jobs/{job_id}", headers=bearer(stranger))
                assert answer.status_code == 404, answer.text
        database = Database(database_url)
        try:
            async with database.session() as session:
                job = await session.get(Job, job_id)
                assert job is not None
                row = await session.get(ApiKey, job.key_id)
        finally:
            await database.aclose()
        assert row is not None
        subject = f"{HS_ISSUER}|{tenant}"
        assert (row.source, row.subject, row.name, row.hint) == (
            "jwt",
            subject,
            tenant,
            tenant[-4:],
        )
        assert row.key_hash == hash_key(f"jwt:{subject}")
        assert row.scopes == []

    run(main())


def test_a_tenants_name_is_no_api_key(settings: Settings) -> None:
    """A tenant's row hashes ``jwt:<issuer>|<tenant>``, a name anyone may know: sent as an
    API key, it finds nothing."""
    tenant = _tenant()

    async def main() -> None:
        async with api(settings) as client:
            made = await client.get("/v1/jobs", headers=bearer(hs_token(tenant)))
            assert made.status_code == 200, made.text
            answer = await client.get("/v1/jobs", headers=bearer(f"jwt:{HS_ISSUER}|{tenant}"))
            assert answer.status_code == 401
            assert answer.json()["error"]["code"] == "invalid_api_key"

    run(main())


def test_an_rs256_token_is_checked_with_the_pem_key(signing: Signing, settings: Settings) -> None:
    """The RS256 issuer names its tenant in ``org``, its scopes as a list in ``scp``, and
    accepts either of its two audiences."""
    org = _tenant()

    async def main() -> None:
        async with api(settings) as client:
            for audience in (AUDIENCE, "relayq-eu"):
                token = rs_token(signing, org, aud=audience)
                made = await client.post("/v1/jobs", json=body(), headers=bearer(token))
                assert made.status_code == 202, made.text
            listed = await client.get("/v1/jobs", headers=bearer(rs_token(signing, org)))
            assert len(listed.json()["data"]) == 2

    run(main())


def test_an_es256_token_is_checked_with_the_key_set_fetched_once(
    signing: Signing, settings: Settings, jwks: FakeJwks
) -> None:
    tenant = _tenant()

    async def main() -> None:
        async with api(settings) as client:
            for _ in range(3):
                token = es_token(signing.ec_key, tenant, kid="es-1")
                answer = await client.get("/v1/jobs", headers=bearer(token))
                assert answer.status_code == 200, answer.text
        assert jwks.hits == 1

    run(main())


def test_a_rotated_key_is_accepted_after_one_refetch(
    signing: Signing, settings: Settings, jwks: FakeJwks
) -> None:
    tenant = _tenant()

    async def main() -> None:
        async with api(settings) as client:
            first = es_token(signing.ec_key, tenant, kid="es-1")
            assert (await client.get("/v1/jobs", headers=bearer(first))).status_code == 200
            jwks.publish(Signing.jwk(signing.ec_rotated, "es-2"))
            for _ in range(2):
                rotated = es_token(signing.ec_rotated, tenant, kid="es-2")
                answer = await client.get("/v1/jobs", headers=bearer(rotated))
                assert answer.status_code == 200, answer.text
            assert jwks.hits == 2
            # The retired key is gone from the set fetched last.
            retired = await client.get("/v1/jobs", headers=bearer(first))
            _refused(retired, first, "unknown key id")

    run(main())


def test_unknown_key_ids_refetch_the_set_once_per_interval(
    signing: Signing, settings: Settings, jwks: FakeJwks
) -> None:
    """The first unknown ``kid`` fetches the set again; the next, right after, does not."""
    tenant = _tenant()

    async def main() -> None:
        async with api(settings) as client:
            known = es_token(signing.ec_key, tenant, kid="es-1")
            assert (await client.get("/v1/jobs", headers=bearer(known))).status_code == 200
            assert jwks.hits == 1
            for kid, hits in (("made-up-1", 2), ("made-up-2", 2)):
                token = es_token(signing.ec_key, tenant, kid=kid)
                answer = await client.get("/v1/jobs", headers=bearer(token))
                _refused(answer, token, "unknown key id")
                assert kid in answer.json()["error"]["message"]
                assert jwks.hits == hits

    run(main())


def test_a_published_key_of_another_kind_is_not_used(
    signing: Signing, settings: Settings, jwks: FakeJwks
) -> None:
    """The ES256 issuer's set also holds an RSA key and a P-256 key marked for ES384: a
    token naming either is refused, whatever it was signed with."""
    rsa_jwk: dict[str, Any] = RSAAlgorithm.to_jwk(signing.rsa_key.public_key(), as_dict=True)
    es384 = {**Signing.jwk(signing.ec_rotated, "es-384"), "alg": "ES384"}
    jwks.publish(Signing.jwk(signing.ec_key, "es-1"), {**rsa_jwk, "kid": "rs-1"}, es384)
    tenant = _tenant()

    async def main() -> None:
        async with api(settings) as client:
            for kid, key in (("rs-1", signing.ec_key), ("es-384", signing.ec_rotated)):
                token = es_token(key, tenant, kid=kid)
                answer = await client.get("/v1/jobs", headers=bearer(token))
                _refused(answer, token, f"key not allowed: '{kid}'")
            fine = es_token(signing.ec_key, tenant, kid="es-1")
            assert (await client.get("/v1/jobs", headers=bearer(fine))).status_code == 200

    run(main())


def _attacks(signing: Signing) -> dict[str, tuple[str, str]]:
    """Forged tokens, each with what the refusal says."""
    tenant = _tenant()
    now = int(time.time())
    pem = signing.rsa_public_pem.encode()
    valid = hs_token(tenant)
    head, payload, signature = valid.split(".")
    tampered = _segment({**claims(HS_ISSUER, tenant), "sub": "someone-else"})
    return {
        "alg none": (
            forged({"alg": "none", "typ": "JWT"}, claims(HS_ISSUER, tenant), None),
            "algorithm not allowed",
        ),
        "HS256 signed with the RS256 issuer's public key": (
            forged({"alg": "HS256", "typ": "JWT"}, claims(RS_ISSUER, "x", org=tenant), pem),
            "algorithm not allowed",
        ),
        "ES256 aimed at the RS256 issuer": (
            jwt.encode(claims(RS_ISSUER, "x", org=tenant), signing.ec_key, algorithm="ES256"),
            "algorithm not allowed",
        ),
        "expired beyond the leeway": (hs_token(tenant, exp=now - LEEWAY - 60), "has expired"),
        "not valid before a future nbf": (
            hs_token(tenant, nbf=now + LEEWAY + 60),
            "not yet valid (nbf",
        ),
        "issued in the future": (hs_token(tenant, iat=now + LEEWAY + 60), "not yet valid (iat"),
        "another issuer's iss": (hs_token(tenant, iss=OTHER_ISSUER), "bad signature"),
        "unknown iss": (hs_token(tenant, iss="https://evil.test"), "unknown issuer"),
        "no iss": (hs_token(tenant, iss=None), "no issuer"),
        "wrong aud": (hs_token(tenant, aud="another-service"), "wrong audience"),
        "no aud": (hs_token(tenant, aud=None), "required 'aud'"),
        "no exp": (hs_token(tenant, exp=None), "required 'exp'"),
        "tampered payload": (f"{head}.{tampered}.{signature}", "bad signature"),
        "signed with another secret": (
            hs_token(tenant, secret=secrets.token_urlsafe(32)),
            "bad signature",
        ),
        "no tenant claim": (hs_token(tenant, sub=None), "'sub' claim"),
        "empty tenant claim": (hs_token(tenant, sub=" "), "'sub' claim"),
        "scopes neither string nor list": (hs_token(tenant, scope=7), "'scope' claim"),
        "models not a list": (hs_token(tenant, models="mock"), "'models' claim"),
        "not JSON inside": (f"{head}.{payload[:-3]}.{signature}", "not a well-formed JWT"),
    }


def test_each_forged_token_is_refused(signing: Signing, settings: Settings) -> None:
    attacks = _attacks(signing)

    async def main() -> None:
        async with api(settings) as client:
            for name, (token, why) in attacks.items():
                answer = await client.post("/v1/jobs", json=body(), headers=bearer(token))
                try:
                    _refused(answer, token, why)
                except AssertionError as exc:
                    raise AssertionError(f"{name}: {exc}") from exc

    run(main())


def test_an_expiry_within_the_leeway_is_accepted(settings: Settings) -> None:
    token = hs_token(_tenant(), exp=int(time.time()) - LEEWAY // 3)

    async def main() -> None:
        async with api(settings) as client:
            answer = await client.get("/v1/jobs", headers=bearer(token))
            assert answer.status_code == 200, answer.text

    run(main())


def test_the_tokens_scopes_are_what_the_caller_may_do(settings: Settings) -> None:
    """A token without ``batches`` cannot make a batch; one without a scope claim gets
    the issuer's default scopes (none); scopes relayq does not know, and ``admin`` (which
    the issuer may not grant), are ignored."""
    tenant = _tenant()

    async def main() -> None:
        async with api(settings) as client:
            no_batches = bearer(hs_token(tenant, scope="jobs read"))
            refused = await client.post("/v1/batches", json=BATCH, headers=no_batches)
            assert refused.status_code == 403, refused.text
            error = refused.json()["error"]
            assert error["code"] == "insufficient_scope"
            assert "This token lacks the 'batches' scope" in error["message"]
            assert "jobs, read" in error["message"]

            unscoped = bearer(hs_token(tenant, scope=None))
            answer = await client.get("/v1/jobs", headers=unscoped)
            assert answer.status_code == 403
            assert "holds: none" in answer.json()["error"]["message"]

            extra = bearer(hs_token(tenant, scope="openid profile jobs admin"))
            made = await client.post("/v1/jobs", json=body(), headers=extra)
            assert made.status_code == 202, made.text
            admin = await client.get("/v1/admin/breakers", headers=extra)
            assert admin.status_code == 403
            assert "holds: jobs)" in admin.json()["error"]["message"]

    run(main())


def test_a_revoked_tenant_is_refused(settings: Settings, database_url: str) -> None:
    tenant = _tenant()
    # Tenants' rows are kept as keys are: with no cache, a revocation counts at once.
    settings = settings.model_copy(
        update={"api": settings.api.model_copy(update={"key_cache_seconds": 0})}
    )

    async def main() -> None:
        async with api(settings) as client:
            first = await client.get("/v1/jobs", headers=bearer(hs_token(tenant)))
            assert first.status_code == 200
            database = Database(database_url)
            try:
                async with database.session() as session:
                    query = select(ApiKey.id).where(ApiKey.subject == f"{HS_ISSUER}|{tenant}")
                    key_id = (await session.execute(query)).scalar_one()
                    assert await revoke_key(session, key_id=key_id)
            finally:
                await database.aclose()
            token = hs_token(tenant)
            _refused(await client.get("/v1/jobs", headers=bearer(token)), token, "revoked")

    run(main())


def test_a_tenants_first_calls_at_once_make_one_row(database_url: str) -> None:
    """Two API processes meeting a new tenant at once both insert; the loser reads the
    winner's row."""
    subject = f"{HS_ISSUER}|{_tenant()}"

    async def main() -> None:
        database = Database(database_url)
        try:
            async with database.session() as one, database.session() as two:
                rows = await asyncio.gather(
                    tenant_key(one, subject=subject, name="t"),
                    tenant_key(two, subject=subject, name="t"),
                )
            async with database.session() as session:
                query = select(ApiKey.id).where(ApiKey.subject == subject)
                stored = list((await session.execute(query)).scalars())
        finally:
            await database.aclose()
        assert [row.id for row in rows] == stored * 2

    run(main())


def test_a_key_set_that_cannot_be_fetched_is_a_503(signing: Signing, settings: Settings) -> None:
    unreachable = f"http://127.0.0.1:{closed_port()}/jwks.json"
    auth = AuthSettings(jwt_issuers=_issuers(signing, unreachable))
    settings = settings.model_copy(update={"auth": auth})
    token = es_token(signing.ec_key, _tenant(), kid="es-1")

    async def main() -> None:
        async with api(settings) as client:
            answer = await client.get("/v1/jobs", headers=bearer(token))
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "jwks_unavailable"

    run(main())


def test_without_issuers_a_jwt_is_an_unknown_api_key(settings: Settings) -> None:
    settings = settings.model_copy(update={"auth": AuthSettings()})
    token = hs_token(_tenant())

    async def main() -> None:
        async with api(settings) as client:
            answer = await client.get("/v1/jobs", headers=bearer(token))
            assert answer.status_code == 401
            assert answer.json()["error"]["code"] == "invalid_api_key"

    run(main())


def test_the_verifier_reads_models_and_scopes_from_the_claims(
    signing: Signing, jwks: FakeJwks
) -> None:
    """No route checks a caller's models yet: the verifier's principal carries them."""
    tenant = _tenant()

    async def main() -> None:
        verifier = TokenVerifier(AuthSettings(jwt_issuers=_issuers(signing, jwks.url)))
        try:
            listed = await verifier.verify(
                hs_token(tenant, models=["mock", "gpt-4o"], scope=["files", "chat", "nope"])
            )
            unlisted = await verifier.verify(hs_token(tenant))
        finally:
            await verifier.aclose()
        assert (listed.issuer, listed.tenant) == (HS_ISSUER, tenant)
        assert listed.subject == f"{HS_ISSUER}|{tenant}"
        assert listed.models == frozenset({"mock", "gpt-4o"})
        assert listed.scopes == frozenset({"files", "chat"})
        assert unlisted.models is None
        assert unlisted.scopes == frozenset({"jobs", "read"})

    run(main())


def test_issuers_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    issuer = {"issuer": HS_ISSUER, "audience": AUDIENCE, "algorithm": "HS256", "secret": HS_SECRET}
    monkeypatch.setenv("RELAYQ_AUTH__JWT_ISSUERS", json.dumps([issuer]))

    [loaded] = Settings().auth.jwt_issuers

    assert (loaded.issuer, loaded.algorithm, loaded.audiences) == (HS_ISSUER, "HS256", [AUDIENCE])
    assert loaded.secret is not None
    assert loaded.secret.get_secret_value() == HS_SECRET
    assert (loaded.tenant_claim, loaded.scopes_claim, loaded.leeway_seconds) == ("sub", "scope", 30)
    assert loaded.default_scopes == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"secret": None}, "HS256 needs 'secret'"),
        ({"secret": "too short"}, "at least 32 bytes"),
        ({"public_key": "PEM"}, "HS256 takes 'secret' alone"),
        ({"algorithm": "none"}, "Input should be 'HS256', 'RS256' or 'ES256'"),
        ({"algorithm": "HS512"}, "Input should be 'HS256', 'RS256' or 'ES256'"),
        ({"algorithm": "RS256"}, "verifies with a public key, not 'secret'"),
        ({"algorithm": "RS256", "secret": None}, "needs one of 'public_key' or 'jwks_url'"),
        (
            {"algorithm": "ES256", "secret": None, "public_key": "x", "jwks_url": "https://a/k"},
            "needs one of 'public_key' or 'jwks_url'",
        ),
        ({"algorithm": "RS256", "secret": None, "public_key": "x"}, "is not a PEM public key"),
        (
            {"algorithm": "ES256", "secret": None, "jwks_url": "http://idp.example/keys"},
            "https URL (http only on a loopback address)",
        ),
        ({"audience": []}, "at least one audience"),
        ({"issuer": "a|b"}, "must not contain '|'"),
    ],
)
def test_an_issuer_that_cannot_verify_safely_is_refused_at_load(
    changes: dict[str, Any], message: str
) -> None:
    issuer = {"issuer": HS_ISSUER, "audience": AUDIENCE, "algorithm": "HS256", "secret": HS_SECRET}
    with pytest.raises(ValidationError) as raised:
        AuthSettings(jwt_issuers=[{**issuer, **changes}])
    assert message in str(raised.value)


def test_a_pem_key_of_the_wrong_kind_is_refused_at_load(signing: Signing) -> None:
    issuer = {
        "issuer": ES_ISSUER,
        "audience": AUDIENCE,
        "algorithm": "ES256",
        "public_key": signing.rsa_public_pem,
    }
    with pytest.raises(ValidationError) as raised:
        AuthSettings(jwt_issuers=[issuer])
    assert "is not a P-256 EC key, which ES256 needs" in str(raised.value)


def test_an_issuer_configured_twice_is_refused(signing: Signing) -> None:
    issuer = {"issuer": HS_ISSUER, "audience": AUDIENCE, "algorithm": "HS256", "secret": HS_SECRET}
    with pytest.raises(ValidationError) as raised:
        AuthSettings(jwt_issuers=[issuer, issuer])
    assert "configured twice" in str(raised.value)


def test_an_unknown_scope_in_the_settings_stops_the_start() -> None:
    issuer = {
        "issuer": HS_ISSUER,
        "audience": AUDIENCE,
        "algorithm": "HS256",
        "secret": HS_SECRET,
        "default_scopes": ["jobs", "everything"],
    }
    with pytest.raises(ValueError, match="unknown scope 'everything'"):
        TokenVerifier(AuthSettings(jwt_issuers=[issuer]))
