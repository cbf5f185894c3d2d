"""One key never reaches another key's objects: each is a 404, never a 403 or a 200.

Every route that names an object by id is asked by a stranger (a plain key, and
an admin key: the admin scope opens the admin API, not other keys' objects), and
the lists and the usage it reads hold nothing of the owner's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from relayq.store import Database
from relayq.store.keys import create_key
from tests.conftest import KeyFactory, key_factory
from tests.jobs import body, submit, wait_for_status
from tests.services import run
from tests.stack import Stack, wait_until


def _admin_key(database_url: str) -> str:
    async def create() -> str:
        database = Database(database_url)
        try:
            async with database.session() as session:
                return (await create_key(session, name="tenancy-admin", admin=True)).secret
        finally:
            await database.aclose()

    return run(create())


@pytest.fixture(scope="module")
def owned(stack: Stack, database_url: str) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    """A tenant's client and the ids of its objects: a finished job, a batch, a file and a
    message batch."""
    secret = key_factory(database_url)()
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=10) as owner:
        job = submit(owner, body("mine", model="mock-priced"))
        wait_for_status(owner, job["id"], {"succeeded"})
        upload = owner.post(
            "/v1/files",
            data={"purpose": "batch"},
            files={"file": ("in.jsonl", b'{"custom_id": "a"}\n', "application/jsonl")},
        )
        assert upload.status_code == 200, upload.text
        batch = owner.post(
            "/v1/batches",
            json={
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "requests": [{"custom_id": "r1", "params": body("in a batch")}],
            },
        )
        assert batch.status_code == 200, batch.text
        messages = owner.post(
            "/v1/messages/batches",
            headers={"x-api-key": secret, "anthropic-version": "2023-06-01"},
            json={
                "requests": [
                    {
                        "custom_id": "m1",
                        "params": {
                            "model": "mock",
                            "max_tokens": 16,
                            "messages": [{"role": "user", "content": "hi"}],
                        },
                    }
                ]
            },
        )
        assert messages.status_code == 200, messages.text
        ids = {
            "job": job["id"],
            "file": upload.json()["id"],
            "batch": batch.json()["id"],
            "message_batch": messages.json()["id"],
        }
        # The batch's request has run, so its usage is booked before strangers look.
        wait_until(
            lambda: owner.get(f"/v1/batches/{ids['batch']}").json()["status"] == "completed",
            timeout=30,
        )
        yield owner, ids


OBJECT_ROUTES = [
    ("GET", "/v1/jobs/{job}"),
    ("POST", "/v1/jobs/{job}/cancel"),
    ("GET", "/v1/jobs/{job}/events"),
    ("GET", "/v1/jobs/{job}/webhook-deliveries"),
    ("GET", "/v1/files/{file}"),
    ("GET", "/v1/files/{file}/content"),
    ("DELETE", "/v1/files/{file}"),
    ("GET", "/v1/batches/{batch}"),
    ("POST", "/v1/batches/{batch}/cancel"),
    ("GET", "/v1/batches/{batch}/events"),
    ("GET", "/v1/messages/batches/{message_batch}"),
    ("GET", "/v1/messages/batches/{message_batch}/results"),
    ("POST", "/v1/messages/batches/{message_batch}/cancel"),
]


@pytest.mark.parametrize("admin", [False, True], ids=["plain", "admin"])
def test_another_keys_objects_are_not_found(
    stack: Stack,
    database_url: str,
    make_key: KeyFactory,
    owned: tuple[httpx.Client, dict[str, str]],
    admin: bool,
) -> None:
    owner, ids = owned
    secret = _admin_key(database_url) if admin else make_key()
    headers = {
        "Authorization": f"Bearer {secret}",
        "x-api-key": secret,
        "anthropic-version": "2023-06-01",
    }
    answers: dict[str, int] = {}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=10) as stranger:
        for method, template in OBJECT_ROUTES:
            url = template.format(**ids)
            answer = stranger.request(method, url)
            answers[f"{method} {template}"] = answer.status_code
            if answer.status_code == 404:
                _not_found_shape(answer, url)

        lists = {
            "/v1/jobs": stranger.get("/v1/jobs").json()["data"],
            "/v1/files": stranger.get("/v1/files").json()["data"],
            "/v1/batches": stranger.get("/v1/batches").json()["data"],
            "/v1/messages/batches": stranger.get("/v1/messages/batches").json()["data"],
        }
        usage = stranger.get("/v1/usage").json()
        budget = stranger.get("/v1/budget")

    assert answers == {f"{method} {template}": 404 for method, template in OBJECT_ROUTES}
    assert lists == {name: [] for name in lists}, "a stranger's lists hold none of the owner's"
    if admin:  # an admin reads every key's usage: the owner's is there, by key
        assert usage["total"]["requests"] >= 2
    else:
        assert usage["data"] == []
        assert usage["total"]["requests"] == 0
    assert budget.status_code == 200
    # The owner still has everything: nothing the stranger asked changed it.
    assert owner.get(f"/v1/jobs/{ids['job']}").json()["status"] == "succeeded"
    assert owner.get(f"/v1/files/{ids['file']}").status_code == 200


def _not_found_shape(answer: httpx.Response, url: str) -> None:
    found: dict[str, Any] = answer.json()
    if url.startswith("/v1/messages/"):
        assert found["type"] == "error", found
        assert found["error"]["type"] == "not_found_error", found
    else:
        assert found["error"]["type"] == "not_found_error", found
        assert found["error"]["request_id"] == answer.headers["x-request-id"], found


def test_a_plain_key_cannot_name_another_key_in_usage(
    stack: Stack, make_key: KeyFactory, owned: tuple[httpx.Client, dict[str, str]]
) -> None:
    owner, _ = owned
    theirs = owner.get("/v1/usage", params={"group_by": "key_id"}).json()["data"]
    [owner_key] = {bucket["key_id"] for bucket in theirs}
    headers = {"Authorization": f"Bearer {make_key()}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=10) as stranger:
        answer = stranger.get("/v1/usage", params={"key_id": owner_key})
    assert answer.status_code == 403
    assert answer.json()["error"]["param"] == "key_id"
