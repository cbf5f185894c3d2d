"""The admin API for keys and its audit log, against the API in-process on a real database:
secrets shown once, every change audited in its own transaction, no admin locked out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from relayq.ids import new_id
from relayq.store.models import ApiKey
from tests.api_in_process import ApiEnv, ApiRunner, api_runner

PRIVATE_FIELDS = {"key_hash", "previous_hash", "secret"}


@pytest.fixture
def api(database_url: str, redis_server: str, tmp_path: Path) -> ApiRunner:
    return api_runner(database_url=database_url, redis_server=redis_server, tmp_path=tmp_path)


async def _audit(env: ApiEnv, secret: str, **params: Any) -> list[dict[str, Any]]:
    response = await env.call(secret, "GET", "/v1/admin/audit", params=params)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def test_a_created_keys_secret_is_shown_once_and_works(api: ApiRunner) -> None:
    async def scenario(env: ApiEnv) -> None:
        admin = await env.key(admin=True)
        created = await env.call(
            admin.secret,
            "POST",
            "/v1/admin/keys",
            json={
                "name": "ci",
                "scopes": ["read", "jobs"],
                "models": ["mock-idle"],
                "requests_per_minute": 60,
                "max_concurrent_jobs": 5,
                "tokens_per_minute": 10_000,
                "budget_period": "month",
                "budget_usd": 12.5,
                "budget_tokens": 1_000_000,
                "expires_in": "30d",
            },
        )
        assert created.status_code == 201, created.text
        key = created.json()
        secret = key["secret"]
        assert key["object"] == "api_key"
        assert key["hint"] == f"...{secret[-4:]}"
        assert key["scopes"] == ["jobs", "read"]
        assert key["models"] == ["mock-idle"]
        assert (key["requests_per_minute"], key["max_concurrent_jobs"]) == (60, 5)
        assert (key["tokens_per_minute"], key["budget_period"]) == (10_000, "month")
        assert (key["budget_usd"], key["budget_tokens"]) == (12.5, 1_000_000)
        assert abs(key["expires_at"] - (time.time() + 30 * 86400)) < 60
        assert "key_hash" not in key

        works = await env.call(secret, "GET", "/v1/jobs")
        fetched = await env.call(admin.secret, "GET", f"/v1/admin/keys/{key['id']}")
        listed = await env.call(admin.secret, "GET", "/v1/admin/keys", params={"limit": 100})

        assert works.status_code == 200
        assert fetched.status_code == 200
        assert PRIVATE_FIELDS.isdisjoint(fetched.json())
        assert secret not in fetched.text
        assert secret not in listed.text
        assert key["id"] in [k["id"] for k in listed.json()["data"]]
        [entry] = await _audit(env, admin.secret, target=key["id"])
        assert (entry["action"], entry["actor_key_id"], entry["before"]) == (
            "key.create",
            admin.id,
            None,
        )
        assert entry["after"]["scopes"] == ["jobs", "read"]
        assert secret not in str(entry)

    api(scenario)


def test_keys_are_listed_newest_first_in_pages_and_filtered_by_revocation(
    api: ApiRunner,
) -> None:
    async def scenario(env: ApiEnv) -> None:
        admin = await env.key(admin=True)
        made = []
        for name in ("one", "two", "three"):
            response = await env.call(admin.secret, "POST", "/v1/admin/keys", json={"name": name})
            made.append(response.json()["id"])
        await env.call(admin.secret, "DELETE", f"/v1/admin/keys/{made[1]}")

        first = (await env.call(admin.secret, "GET", "/v1/admin/keys?limit=2")).json()
        second = (
            await env.call(admin.secret, "GET", f"/v1/admin/keys?limit=2&after={first['last_id']}")
        ).json()
        active = await env.call(admin.secret, "GET", "/v1/admin/keys?revoked=false&limit=100")
        revoked = await env.call(admin.secret, "GET", "/v1/admin/keys?revoked=true&limit=100")

        assert [k["id"] for k in first["data"]] == [made[2], made[1]]
        assert first["has_more"] is True
        assert second["data"][0]["id"] == made[0]
        active_ids = {k["id"] for k in active.json()["data"]}
        revoked_ids = {k["id"] for k in revoked.json()["data"]}
        assert {made[0], made[2], admin.id} <= active_ids
        assert made[1] in revoked_ids
        assert made[1] not in active_ids

    api(scenario)


def test_an_update_changes_the_given_fields_and_holds_at_once(api: ApiRunner) -> None:
    async def scenario(env: ApiEnv) -> None:
        admin = await env.key(admin=True)
        key = await env.key(models=["mock-idle"])
        job = {"model": "mock-idle", "messages": [{"role": "user", "content": "hi"}]}
        assert (await env.call(key.secret, "POST", "/v1/jobs", json=job)).status_code == 202

        changed = await env.call(
            admin.secret,
            "PATCH",
            f"/v1/admin/keys/{key.id}",
            json={"name": "renamed", "scopes": ["read"], "models": None, "budget_period": "day"},
        )
        refused = await env.call(key.secret, "POST", "/v1/jobs", json=job)

        assert changed.status_code == 200, changed.text
        body = changed.json()
        assert (body["name"], body["scopes"], body["models"]) == ("renamed", ["read"], None)
        assert body["budget_period"] == "day"
        assert body["requests_per_minute"] is None  # not given: unchanged
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "insufficient_scope"
        [entry] = await _audit(env, admin.secret, target=key.id, action="key.update")
        assert entry["before"]["scopes"] == ["jobs", "chat", "batches", "files", "read"]
        assert entry["before"]["models"] == ["mock-idle"]
        assert entry["after"]["scopes"] == ["read"]
        assert entry["after"]["name"] == "renamed"
        assert entry["request_id"] == changed.headers["x-request-id"]

    api(scenario)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"scopes": ["jobs", "root"]}, "scopes"),
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"budget_usd": 5}, "budget_period"),
        ({"budget_period": "week"}, "budget_period"),
        ({"expires_in": "30x"}, "expires_in"),
        ({"expires_in": "1d", "expires_at": 2_000_000_000}, "expires_in"),
        ({"name": None}, "name"),
        ({"scopes": None}, "scopes"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_update_is_a_400_naming_the_field_and_writes_no_audit_entry(
    api: ApiRunner, body: dict[str, Any], param: str
) -> None:
    async def scenario(env: ApiEnv) -> None:
        admin = await env.key(admin=True)
        key = await env.key()

        response = await env.call(admin.secret, "PATCH", f"/v1/admin/keys/{key.id}", json=body)

        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param
        assert error["type"] == "invalid_request_error"
        assert await _audit(env, admin.secret, target=key.id) == []
        fetched = (await env.call(admin.secret, "GET", f"/v1/admin/keys/{key.id}")).json()
        assert fetched["scopes"] == ["jobs", "chat", "batches", "files", "read"]

    api(scenario)


def test_a_bad_create_is_a_400_naming_the_field(api: ApiRunner) -> None:
    async def scenario(env: ApiEnv) -> None:
        admin = await env.key(admin=True)
        newest = (await _audit(env, admin.secret, limit=1) or [{"id": None}])[0]["id"]
        cases = [
            ({"scopes": ["read"]}, "name"),
            ({"name": "x", "budget_tokens": 10}, "budget_period"),
            ({"name": "x", "models": [""]}, "models[0]"),
            ({"name": "x", "expires_in": "99999d"}, "expires_in"),
        ]
        for body, param in cases:
            response = await env.call(admin.secret, "POST", "/v1/admin/keys", json=body)
            assert response.status_code == 400, (body, response.text)
            assert response.json()["error"]["param"] == param, body
        assert (await _audit(env, admin.secret, limit=1) or [{"id": None}])[0]["id"] == newest

    api(scenario)


def test_rotate_shows_the_new_secret_once_and_audits_without_secrets(api: ApiRunner) -> None:
    async def scenario(env: ApiEnv) -> None:
        admin = await env.key(admin=True)
        key = await env.key()

        rotated = await env.call(
            admin.secret, "POST", f"/v1/admin/keys/{key.id}/rotate", json={"overlap_seconds": 60}
        )
        fetched = await env.call(admin.secret, "GET", f"/v1/admin/keys/{key.id}")

        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert new != key.secret
        assert rotated.json()["hint"] == f"...{new[-4:]}"
        assert abs(rotated.json()["previous_secret_expires_at"] - (time.time() + 60)) < 10
        assert new not in fetched.text
        assert PRIVATE_FIELDS.isdisjoint(fetched.json())
        [entry] = await _audit(env, admin.secret, target=key.id, action="key.rotate")
        assert entry["before"]["hint"] == f"...{key.secret[-4:]}"
        assert entry["after"]["hint"] == f"...{new[-4:]}"
        assert new not in str(entry)
        assert key.secret not in str(entry)

    api(scenario)


def test_a_jwt_tenant_cannot_be_rotated(api: ApiRunner) -> None:
    async def scenario(env: ApiEnv) -> None:
        admin = await env.key(admin=True)
        tenant = ApiKey(
            id=new_id("key"),
            name="tenant",
            key_hash=f"jwt-{new_id('t')}",
            hint="",
            created_at=time.time(),
            scopes=["read"],
            source="jwt",
            subject=f"https://issuer.example|{new_id('t')}",
        )
        async with env.services.database.session() as session:
            session.add(tenant)
            await session.commit()

        response = await env.call(
            admin.secret, "POST", f"/v1/admin/keys/{tenant.id}/rotate", json={}
        )
        shown = await env.call(admin.secret, "GET", f"/v1/admin/keys/{tenant.id}")

        assert response.status_code == 400
        assert response.json()["error"]["code"] == "key_not_rotatable"
        assert "JWT" in response.json()["error"]["message"]
        assert (shown.json()["source"], shown.json()["hint"]) == ("jwt", None)
        assert await _audit(env, admin.secret, target=tenant.id) == []

    api(scenario)


def test_revoking_is_idempotent_and_audited_once(api: ApiRunner) -> None:
    async def scenario(env: ApiEnv) -> None:
        admin = await env.key(admin=True)
        key = await env.key()

        first = await env.call(admin.secret, "DELETE", f"/v1/admin/keys/{key.id}")
        again = await env.call(admin.secret, "DELETE", f"/v1/admin/keys/{key.id}")
        changed = await env.call(
            admin.secret, "PATCH", f"/v1/admin/keys/{key.id}", json={"name": "back"}
        )
        missing = await env.call(admin.secret, "DELETE", "/v1/admin/keys/key_nope")

        assert (first.status_code, again.status_code) == (200, 200)
        assert first.json()["revoked_at"] is not None
        assert again.json()["revoked_at"] == first.json()["revoked_at"]
        assert changed.status_code == 409
        assert changed.json()["error"]["code"] == "key_revoked"
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "key_not_found"
        [entry] = await _audit(env, admin.secret, target=key.id)
        assert entry["action"] == "key.revoke"
        assert (entry["before"]["revoked_at"], entry["after"]["revoked_at"]) == (
            None,
            first.json()["revoked_at"],
        )

    api(scenario)


def test_an_admin_cannot_lock_itself_out(api: ApiRunner) -> None:
    async def scenario(env: ApiEnv) -> None:
        admin = await env.key(admin=True)
        path = f"/v1/admin/keys/{admin.id}"

        revoke = await env.call(admin.secret, "DELETE", path)
        demote = await env.call(admin.secret, "PATCH", path, json={"scopes": ["read", "jobs"]})
        expire = await env.call(admin.secret, "PATCH", path, json={"expires_at": time.time() - 1})
        widen = await env.call(admin.secret, "PATCH", path, json={"scopes": ["admin", "read"]})
        still = await env.call(admin.secret, "GET", "/v1/admin/keys")

        for refused, param in ((revoke, "key_id"), (demote, "scopes"), (expire, "expires_at")):
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert (error["code"], error["param"]) == ("self_lockout", param)
            assert "your own key" in error["message"]
        assert widen.status_code == 200
        assert still.status_code == 200
        entries = await _audit(env, admin.secret, target=admin.id)
        assert [e["action"] for e in entries] == ["key.update"]

    api(scenario)


def test_another_admins_actions_are_in_the_audit_log_newest_first(api: ApiRunner) -> None:
    async def scenario(env: ApiEnv) -> None:
        alice = await env.key(admin=True, name="alice")
        bob = await env.key(admin=True, name="bob")
        made = await env.call(alice.secret, "POST", "/v1/admin/keys", json={"name": "svc"})
        key_id = made.json()["id"]
        await env.call(bob.secret, "PATCH", f"/v1/admin/keys/{key_id}", json={"models": ["mock"]})
        await env.call(bob.secret, "POST", f"/v1/admin/keys/{key_id}/rotate", json={})
        await env.call(bob.secret, "DELETE", f"/v1/admin/keys/{key_id}")

        entries = await _audit(env, alice.secret, target=key_id)
        page = (
            await env.call(alice.secret, "GET", f"/v1/admin/audit?target={key_id}&limit=2")
        ).json()
        rest = await _audit(env, alice.secret, target=key_id, after=page["last_id"])
        revokes = await _audit(env, alice.secret, target=key_id, action="key.revoke")

        assert [(e["action"], e["actor_key_id"]) for e in entries] == [
            ("key.revoke", bob.id),
            ("key.rotate", bob.id),
            ("key.update", bob.id),
            ("key.create", alice.id),
        ]
        update = entries[2]
        assert update["object"] == "audit_entry"
        assert (update["before"]["models"], update["after"]["models"]) == (None, ["mock"])
        assert update["at"] <= entries[1]["at"] <= entries[0]["at"]
        assert [e["id"] for e in page["data"]] == [entries[0]["id"], entries[1]["id"]]
        assert page["has_more"] is True
        assert [e["id"] for e in rest] == [entries[2]["id"], entries[3]["id"]]
        assert [e["id"] for e in revokes] == [entries[0]["id"]]
        # A cursor past any id is refused with the parameter named (PostgreSQL's
        # integer ids would fail the comparison itself: the fuzzer found it).
        for cursor in (2**31, 2**63, -1):
            past = await env.call(alice.secret, "GET", f"/v1/admin/audit?after={cursor}")
            assert past.status_code == 400, past.text
            assert past.json()["error"]["param"] == "after"

    api(scenario)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/admin/keys"),
        ("POST", "/v1/admin/keys"),
        ("GET", "/v1/admin/keys/key_x"),
        ("PATCH", "/v1/admin/keys/key_x"),
        ("POST", "/v1/admin/keys/key_x/rotate"),
        ("DELETE", "/v1/admin/keys/key_x"),
        ("GET", "/v1/admin/audit"),
    ],
)
def test_a_key_without_the_admin_scope_gets_a_403(api: ApiRunner, method: str, path: str) -> None:
    async def scenario(env: ApiEnv) -> None:
        plain = await env.key()

        response = await env.call(plain.secret, method, path, json={"name": "x"})

        assert response.status_code == 403
        error = response.json()["error"]
        assert error["code"] == "insufficient_scope"
        assert "lacks the 'admin' scope" in error["message"]

    api(scenario)
