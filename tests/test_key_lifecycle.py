"""A key's life as callers see it: scopes, model allow-lists, expiry, rotation, revocation
and ``last_used_at``, against the API in-process on a real database and Redis."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from relayq.keys import hash_key
from relayq.store import Database
from relayq.store.keys import KeyState, create_key, key_state, touch_keys
from relayq.store.models import ApiKey
from tests.api_in_process import ApiEnv, ApiRunner, api_runner
from tests.services import run


@pytest.fixture
def api(database_url: str, redis_server: str, tmp_path: Path) -> ApiRunner:
    return api_runner(database_url=database_url, redis_server=redis_server, tmp_path=tmp_path)


def job(model: str = "mock-idle") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def _assert_openai_error(body: dict[str, Any], *, code: str) -> dict[str, Any]:
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code", "request_id"}
    assert error["code"] == code
    return error


async def _set(env: ApiEnv, key_id: str, **values: Any) -> None:
    """Change a key's row directly, as another process (or time) would."""
    async with env.services.database.session() as session:
        await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(**values))
        await session.commit()


async def _column(env: ApiEnv, key_id: str) -> float | None:
    async with env.services.database.session() as session:
        row = await session.get(ApiKey, key_id, populate_existing=True)
        assert row is not None
        return row.last_used_at


# What each scope opens: a route that needs it, and its answer once the scope is held.
_INLINE = {"requests": [{"custom_id": "a", "params": job()}]}
SCOPE_ROUTES: dict[str, tuple[str, str, dict[str, Any], int]] = {
    "jobs": ("POST", "/v1/jobs", {"json": job()}, 202),
    # With the scope, the call gets as far as routing: no route is named "unrouted".
    "chat": ("POST", "/v1/chat/completions", {"json": job("unrouted")}, 404),
    "batches": ("POST", "/v1/batches", {"json": _INLINE}, 200),
    "files": (
        "POST",
        "/v1/files",
        {
            "data": {"purpose": "batch"},
            "files": {"file": ("in.jsonl", b'{"custom_id": "a"}\n', "application/jsonl")},
        },
        200,
    ),
    "read": ("GET", "/v1/jobs", {}, 200),
    "admin": ("GET", "/v1/admin/keys", {}, 200),
}


@pytest.mark.parametrize("scope", list(SCOPE_ROUTES))
def test_each_scope_is_refused_without_it_and_allowed_with_it(api: ApiRunner, scope: str) -> None:
    method, path, kwargs, allowed_status = SCOPE_ROUTES[scope]
    others = [s for s in SCOPE_ROUTES if s != scope]

    async def scenario(env: ApiEnv) -> None:
        without = await env.key(scopes=others)
        only = await env.key(scopes=[scope])

        refused = await env.call(without.secret, method, path, **kwargs)
        allowed = await env.call(only.secret, method, path, **kwargs)

        assert refused.status_code == 403
        error = _assert_openai_error(refused.json(), code="insufficient_scope")
        assert error["type"] == "permission_error"
        assert f"lacks the '{scope}' scope" in error["message"]
        assert f"{method} {path}" in error["message"]
        assert allowed.status_code == allowed_status, allowed.text

    api(scenario)


def test_a_disallowed_model_is_refused_on_jobs_and_chat_naming_the_allowed_ones(
    api: ApiRunner,
) -> None:
    async def scenario(env: ApiEnv) -> None:
        key = await env.key(models=["mock-idle", "mock-b"])
        for path in ("/v1/jobs", "/v1/chat/completions"):
            refused = await env.call(key.secret, "POST", path, json=job("mock"))
            assert refused.status_code == 403, (path, refused.text)
            error = _assert_openai_error(refused.json(), code="model_not_allowed")
            assert error["param"] == "model"
            assert error["message"] == (
                "This key may not use the model 'mock'. Models it may use: mock-b, mock-idle."
            )
        allowed = await env.call(key.secret, "POST", "/v1/jobs", json=job("mock-idle"))
        # An alias of an allowed route is allowed too.
        aliased = await env.call(key.secret, "POST", "/v1/jobs", json=job("mock-b-alias"))
        assert (allowed.status_code, aliased.status_code) == (202, 202)
        # A key without a list may use every model.
        free = await env.key()
        assert (
            await env.call(free.secret, "POST", "/v1/jobs", json=job("mock"))
        ).status_code == 202

    api(scenario)


def test_models_lists_only_the_allowed_models(api: ApiRunner) -> None:
    async def scenario(env: ApiEnv) -> None:
        narrow = await env.key(models=["mock-b"])
        wide = await env.key()

        listed = await env.call(narrow.secret, "GET", "/v1/models")
        everything = await env.call(wide.secret, "GET", "/v1/models")
        allowed = await env.call(narrow.secret, "GET", "/v1/models/mock-b-alias")
        hidden = await env.call(narrow.secret, "GET", "/v1/models/mock")

        assert [m["id"] for m in listed.json()["data"]] == ["mock-b", "mock-b-alias"]
        assert {"mock", "mock-idle", "mock-b"} <= {m["id"] for m in everything.json()["data"]}
        assert allowed.status_code == 200
        assert hidden.status_code == 404
        _assert_openai_error(hidden.json(), code="model_not_found")

    api(scenario)


def test_batch_lines_with_a_disallowed_model_are_line_errors(api: ApiRunner) -> None:
    """Inline requests and an uploaded file's lines alike: the batch fails validation, each
    such line named, as a line with an unknown model is."""
    lines = [
        {"custom_id": "ok", "params": job("mock-idle")},
        {"custom_id": "no", "params": job("mock")},
        {"custom_id": "unknown", "params": job("nowhere")},
    ]

    async def scenario(env: ApiEnv) -> None:
        key = await env.key(models=["mock-idle"])
        inline = await env.call(key.secret, "POST", "/v1/batches", json={"requests": lines})
        jsonl = "".join(
            json.dumps(
                {
                    "custom_id": line["custom_id"],
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": line["params"],
                }
            )
            + "\n"
            for line in lines
        )
        uploaded = await env.call(
            key.secret,
            "POST",
            "/v1/files",
            data={"purpose": "batch"},
            files={"file": ("in.jsonl", jsonl.encode(), "application/jsonl")},
        )
        from_file = await env.call(
            key.secret, "POST", "/v1/batches", json={"input_file_id": uploaded.json()["id"]}
        )
        for created in (inline, from_file):
            assert created.status_code == 200, created.text
            batch_id = created.json()["id"]
            await env.prepare_batch(batch_id)
            batch = (await env.call(key.secret, "GET", f"/v1/batches/{batch_id}")).json()
            assert batch["status"] == "failed"
            errors = [(e["line"], e["code"], e["param"]) for e in batch["errors"]["data"]]
            assert errors == [
                (2, "model_not_allowed", "body.model"),
                (3, "model_not_found", "body.model"),
            ]
            assert "may not use the model 'mock'" in batch["errors"]["data"][0]["message"]

    api(scenario)


def test_an_expired_key_is_refused_saying_when_it_expired(api: ApiRunner) -> None:
    async def scenario(env: ApiEnv) -> None:
        past = time.time() - 60
        expired = await env.key(expires_at=past)

        response = await env.call(expired.secret, "GET", "/v1/jobs")

        assert response.status_code == 401
        error = _assert_openai_error(response.json(), code="invalid_api_key")
        iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(past))
        assert error["message"] == f"This API key expired at {iso}."

    api(scenario)


def test_a_cached_key_is_refused_once_its_expiry_passes(api: ApiRunner) -> None:
    """The key cache keeps the row for seconds; its expiry is checked at every use."""

    async def scenario(env: ApiEnv) -> None:
        expires_at = time.time() + 1.0
        soon = await env.key(expires_at=expires_at)

        before = await env.call(soon.secret, "GET", "/v1/jobs")
        assert env.services.keys.get(hash_key(soon.secret)) is not None  # served from cache
        await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.01)
        assert time.time() > expires_at
        after = await env.call(soon.secret, "GET", "/v1/jobs")

        assert before.status_code == 200
        assert after.status_code == 401
        assert after.json()["error"]["message"].startswith("This API key expired at ")

    api(scenario)


def test_unknown_revoked_and_expired_keys_get_distinct_messages(api: ApiRunner) -> None:
    async def scenario(env: ApiEnv) -> None:
        revoked = await env.key()
        expired = await env.key(expires_at=time.time() - 1)
        await _set(env, revoked.id, revoked_at=time.time() - 5)

        messages = []
        for secret in ("rq-nobody-has-this-1234", revoked.secret, expired.secret):
            response = await env.call(secret, "GET", "/v1/jobs")
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            messages.append(
                _assert_openai_error(response.json(), code="invalid_api_key")["message"]
            )

        assert "...1234" in messages[0]
        assert "No key has this secret" in messages[0]
        assert "was revoked at " in messages[1]
        assert messages[2].startswith("This API key expired at ")

    api(scenario)


def test_rotation_with_an_overlap_lets_both_secrets_work_then_only_the_new(
    api: ApiRunner,
) -> None:
    async def scenario(env: ApiEnv) -> None:
        admin = await env.key(admin=True)
        key = await env.key()
        assert (await env.call(key.secret, "GET", "/v1/jobs")).status_code == 200

        rotated = await env.call(
            admin.secret, "POST", f"/v1/admin/keys/{key.id}/rotate", json={"overlap_seconds": 3600}
        )
        new = rotated.json()["secret"]
        old_works = await env.call(key.secret, "GET", "/v1/jobs")
        new_works = await env.call(new, "GET", "/v1/jobs")
        assert (rotated.status_code, old_works.status_code, new_works.status_code) == (
            200,
            200,
            200,
        )

        # The overlap ends (set in the row, not waited for); once the cache's seconds
        # are up, as forget() stands for here, the old secret is refused.
        await _set(env, key.id, previous_expires_at=time.time() - 1)
        env.services.keys.forget(key.id)
        old_refused = await env.call(key.secret, "GET", "/v1/jobs")
        new_still = await env.call(new, "GET", "/v1/jobs")

        assert old_refused.status_code == 401
        message = old_refused.json()["error"]["message"]
        assert message.startswith("This API key's secret was replaced by a rotation")
        assert new_still.status_code == 200

    api(scenario)


def test_rotation_without_overlap_stops_the_old_secret_at_once(api: ApiRunner) -> None:
    async def scenario(env: ApiEnv) -> None:
        admin = await env.key(admin=True)
        key = await env.key()
        assert (await env.call(key.secret, "GET", "/v1/jobs")).status_code == 200  # cached

        rotated = await env.call(
            admin.secret, "POST", f"/v1/admin/keys/{key.id}/rotate", json={"overlap_seconds": 0}
        )
        old = await env.call(key.secret, "GET", "/v1/jobs")
        new = await env.call(rotated.json()["secret"], "GET", "/v1/jobs")

        assert rotated.status_code == 200
        assert rotated.json()["previous_secret_expires_at"] is None
        assert old.status_code == 401
        assert "No key has this secret" in old.json()["error"]["message"]
        assert new.status_code == 200

    api(scenario)


def test_a_revocation_through_the_admin_api_holds_at_once_in_its_process(api: ApiRunner) -> None:
    async def scenario(env: ApiEnv) -> None:
        admin = await env.key(admin=True)
        key = await env.key()
        assert (await env.call(key.secret, "GET", "/v1/jobs")).status_code == 200
        assert env.services.keys.get(hash_key(key.secret)) is not None

        revoked = await env.call(admin.secret, "DELETE", f"/v1/admin/keys/{key.id}")
        after = await env.call(key.secret, "GET", "/v1/jobs")

        assert revoked.status_code == 200
        assert after.status_code == 401
        assert "was revoked at" in after.json()["error"]["message"]

    api(scenario)


def test_last_used_at_is_written_once_a_minute_per_process(api: ApiRunner) -> None:
    async def scenario(env: ApiEnv) -> None:
        key = await env.key()
        assert await _column(env, key.id) is None

        assert (await env.call(key.secret, "GET", "/v1/jobs")).status_code == 200
        await env.services.key_usage.idle()
        first = await _column(env, key.id)
        assert first is not None

        # Were the column written again, the row's own guard (older than a minute) would
        # let it through now: the process's memory is what holds it back.
        await _set(env, key.id, last_used_at=first - 600)
        assert (await env.call(key.secret, "GET", "/v1/jobs")).status_code == 200
        await env.services.key_usage.idle()

        assert await _column(env, key.id) == first - 600

    api(scenario)


def test_touching_keys_skips_those_written_within_the_minute(database_url: str) -> None:
    """The guard that keeps several API processes from writing a key more than once a
    minute between them."""
    now = time.time()

    async def scenario() -> list[float | None]:
        database = Database(database_url)
        try:
            async with database.session() as session:
                recent = (await create_key(session, name="recent")).row
                stale = (await create_key(session, name="stale")).row
                recent.last_used_at, stale.last_used_at = now - 10, now - 70
                await session.commit()
                await touch_keys(session, key_ids=[recent.id, stale.id], now=now)
                for row in (recent, stale):
                    await session.refresh(row)
                return [recent.last_used_at, stale.last_used_at]
        finally:
            await database.aclose()

    assert run(scenario()) == [now - 10, now]


def test_key_state_reads_revocation_expiry_and_the_overlap() -> None:
    key = ApiKey(
        id="key_1",
        name="k",
        key_hash="new",
        hint="abcd",
        created_at=0.0,
        scopes=[],
        previous_hash="old",
        previous_expires_at=200.0,
        expires_at=300.0,
    )

    assert key_state(None, digest="new", now=100.0) is KeyState.UNKNOWN
    assert key_state(key, digest="new", now=100.0) is KeyState.ACTIVE
    assert key_state(key, digest="old", now=199.0) is KeyState.ACTIVE
    assert key_state(key, digest="old", now=200.0) is KeyState.ROTATED
    assert key_state(key, digest="other", now=100.0) is KeyState.ROTATED
    assert key_state(key, digest="new", now=300.0) is KeyState.EXPIRED
    key.revoked_at = 50.0
    assert key_state(key, digest="new", now=100.0) is KeyState.REVOKED
