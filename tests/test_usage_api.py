"""``GET /v1/usage``: the usage ledger read back through the real stack, equal to
the sums over the jobs it booked; a key sees its own, an admin every key's."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from relayq.store import Database
from relayq.store.keys import create_key
from tests.batches import wait_for_batch
from tests.jobs import body, submit, wait_for_status
from tests.services import run
from tests.stack import Stack


@dataclass
class Tenant:
    client: httpx.Client
    key_id: str


def _key(database_url: str, *, admin: bool = False) -> tuple[str, str]:
    async def create() -> tuple[str, str]:
        database = Database(database_url)
        try:
            async with database.session() as session:
                made = await create_key(session, name="usage", admin=admin)
                return made.secret, made.id
        finally:
            await database.aclose()

    return run(create())


def _tenant(stack: Stack, database_url: str, *, admin: bool = False) -> Iterator[Tenant]:
    secret, key_id = _key(database_url, admin=admin)
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=10) as client:
        yield Tenant(client, key_id)


@pytest.fixture
def tenant(stack: Stack, database_url: str) -> Iterator[Tenant]:
    yield from _tenant(stack, database_url)


@pytest.fixture
def stranger(stack: Stack, database_url: str) -> Iterator[Tenant]:
    yield from _tenant(stack, database_url)


@pytest.fixture
def admin(stack: Stack, database_url: str) -> Iterator[Tenant]:
    yield from _tenant(stack, database_url, admin=True)


def _ended(client: httpx.Client, payload: dict[str, Any]) -> dict[str, Any]:
    job = submit(client, payload)
    return wait_for_status(client, job["id"], {"succeeded", "failed"})


def _day(job: dict[str, Any]) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(job["finished_at"]))


def _sums(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the ledger should say of ``jobs``: those with usage, added up."""
    used = [job for job in jobs if job["usage"]]
    prompt = sum(job["usage"]["prompt_tokens"] for job in used)
    completion = sum(job["usage"]["completion_tokens"] for job in used)
    return {
        "requests": len(used),
        "input_tokens": prompt,
        "output_tokens": completion,
        "cached_tokens": 0,
        "total_tokens": prompt + completion,
        "cost_usd": pytest.approx(sum(job["cost_usd"] or 0.0 for job in used)),
    }


def _usage(client: httpx.Client, **params: str) -> dict[str, Any]:
    response = client.get("/v1/usage", params=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _counts(bucket: dict[str, Any]) -> dict[str, Any]:
    fields = ("requests", "input_tokens", "output_tokens", "cached_tokens", "total_tokens")
    return {name: bucket[name] for name in (*fields, "cost_usd")}


@pytest.fixture
def worked(tenant: Tenant) -> list[dict[str, Any]]:
    """The tenant's jobs: priced and unpriced, with metadata, one failed without usage."""
    client = tenant.client
    jobs = [
        _ended(client, body(f"priced {i}", model="mock-priced", metadata={"team": "a"}))
        for i in range(3)
    ]
    jobs.append(_ended(client, body("unpriced", metadata={"team": "b"}, mock={"tokens": 7})))
    failed = _ended(client, body("no", model="mock-priced", mock={"fault": "invalid_request"}))
    assert failed["usage"] is None
    jobs.append(failed)
    return jobs


def test_buckets_by_day_and_model_add_up_the_jobs_usage_and_cost(
    tenant: Tenant, worked: list[dict[str, Any]]
) -> None:
    answer = _usage(tenant.client)  # the last 30 days, by day and model
    assert answer["object"] == "list"
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for job in worked:
        groups[(_day(job), job["model"])].append(job)
    expected = [
        {"object": "usage.bucket", "day": day, "model": model, **_sums(jobs)}
        for (day, model), jobs in sorted(groups.items())
        if _sums(jobs)["requests"]
    ]
    assert answer["data"] == expected
    assert answer["total"] == {"object": "usage.bucket", **_sums(worked)}
    assert answer["total"]["cost_usd"] > 0


def test_group_by_takes_any_of_the_fields_or_none(
    tenant: Tenant, worked: list[dict[str, Any]]
) -> None:
    whole = _sums(worked)
    by_key = _usage(tenant.client, group_by="key_id")["data"]
    assert by_key == [{"object": "usage.bucket", "key_id": tenant.key_id, **whole}]
    by_batch = _usage(tenant.client, group_by="batch_id")["data"]
    assert by_batch == [{"object": "usage.bucket", "batch_id": None, **whole}]
    assert _usage(tenant.client, group_by="")["data"] == [{"object": "usage.bucket", **whole}]
    by_model = _usage(tenant.client, group_by="model", model="mock")["data"]
    assert by_model == [
        {
            "object": "usage.bucket",
            "model": "mock",
            **_sums([j for j in worked if j["model"] == "mock"]),
        }
    ]
    # Days outside the range: nothing.
    past = _usage(tenant.client, start_day="2020-01-01", end_day="2020-01-31")
    assert past["data"] == []
    assert past["total"]["requests"] == 0


def test_metadata_filters_add_up_the_matching_jobs(
    tenant: Tenant, worked: list[dict[str, Any]]
) -> None:
    team_a = [job for job in worked if job["metadata"] == {"team": "a"}]
    answer = _usage(tenant.client, group_by="model", **{"metadata[team]": "a"})
    assert answer["data"] == [{"object": "usage.bucket", "model": "mock-priced", **_sums(team_a)}]
    none = _usage(tenant.client, **{"metadata[team]": "a", "metadata[other]": "x"})
    assert none["data"] == []


def test_a_batch_filter_shows_the_batch_as_its_object_does(tenant: Tenant) -> None:
    lines = [
        {
            "custom_id": f"r{i}",
            "params": {
                "model": "mock-priced",
                "messages": [{"role": "user", "content": f"hi {i}"}],
            },
        }
        for i in range(2)
    ]
    created = tenant.client.post("/v1/batches", json={"requests": lines})
    assert created.status_code == 200, created.text
    batch = wait_for_batch(tenant.client, created.json()["id"])
    assert batch["status"] == "completed", batch
    answer = _usage(tenant.client, batch_id=batch["id"], group_by="batch_id,model")
    usage = batch["usage"]
    assert answer["data"] == [
        {
            "object": "usage.bucket",
            "model": "mock-priced",
            "batch_id": batch["id"],
            "requests": 2,
            "input_tokens": usage["input_tokens"],
            "output_tokens": usage["output_tokens"],
            "cached_tokens": 0,
            "total_tokens": usage["total_tokens"],
            "cost_usd": pytest.approx(batch["cost_usd"]),
        }
    ]


def test_another_key_sees_none_of_it_and_an_admin_sees_every_key(
    tenant: Tenant, worked: list[dict[str, Any]], stranger: Tenant, admin: Tenant
) -> None:
    assert _usage(stranger.client)["data"] == []
    refused = stranger.client.get("/v1/usage", params={"key_id": tenant.key_id})
    assert refused.status_code == 403
    assert refused.json()["error"]["param"] == "key_id"
    # Its own key id is its own usage.
    assert _usage(tenant.client, key_id=tenant.key_id)["total"] == _usage(tenant.client)["total"]

    theirs = [_ended(stranger.client, body("mine", model="mock-priced"))]
    assert _usage(stranger.client)["total"] == {"object": "usage.bucket", **_sums(theirs)}
    everyone = {b["key_id"]: b for b in _usage(admin.client, group_by="key_id")["data"]}
    assert _counts(everyone[tenant.key_id]) == _counts(_sums(worked))
    assert _counts(everyone[stranger.key_id]) == _counts(_sums(theirs))
    filtered = _usage(admin.client, key_id=tenant.key_id)
    assert filtered == _usage(tenant.client)


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"start_day": "2026-13-01"}, "start_day"),
        ({"end_day": "yesterday"}, "end_day"),
        ({"start_day": "2026-02-02", "end_day": "2026-02-01"}, "end_day"),
        ({"group_by": "day,colour"}, "group_by"),
        ({"group_by": "day,day"}, "group_by"),
        ({"metadata[]": "x"}, "metadata[]"),
        ({"metadata": "x"}, "metadata"),
    ],
)
def test_bad_parameters_are_refused_naming_the_parameter(
    tenant: Tenant, params: dict[str, str], param: str
) -> None:
    response = tenant.client.get("/v1/usage", params=params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
