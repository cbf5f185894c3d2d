"""The response cache through the real stack: hit, miss, expiry, opt-in, opt-out, scope."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from tests.conftest import CACHE_TTL, KeyFactory
from tests.jobs import body, submit, wait_for_status
from tests.stack import Stack, wait_until


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex}"


def run_to_end(client: httpx.Client, payload: dict[str, Any]) -> dict[str, Any]:
    job = submit(client, payload)
    return wait_for_status(client, job["id"], {"succeeded", "failed"})


def run_to_end_of(client: httpx.Client, job_id: str) -> dict[str, Any]:
    return wait_for_status(client, job_id, {"succeeded", "failed"})


def repeat_until_cached(
    client: httpx.Client, payload: dict[str, Any], within: float = 10.0
) -> dict[str, Any]:
    """A repeat of ``payload``, answered from the cache if it is within ``within`` seconds.

    The worker stores an answer in the cache just after the job's row says it
    succeeded (docs/architecture.md, "One job end, two pipelines"), so a repeat
    sent the moment a poll sees ``succeeded`` can come a moment early; it is sent
    again then (an early one is an ordinary job of its own, whose answer goes to
    the cache too when it ends). The repeats sent early are listed under
    ``"early"`` in the returned job.
    """
    deadline = time.monotonic() + within
    early: list[str] = []
    while True:
        job = submit(client, payload)
        if job["cached"] or time.monotonic() > deadline:
            return {**job, "early": early}
        early.append(job["id"])
        time.sleep(0.1)


def test_a_repeated_request_is_answered_from_the_cache_at_once(client: httpx.Client) -> None:
    payload = body(unique("cache me"), model="mock-cached")
    first = run_to_end(client, payload)

    again = repeat_until_cached(client, payload)

    assert first["cached"] is False
    assert len(first["attempts"]) == 1
    assert again["id"] != first["id"]
    assert again["status"] == "succeeded"
    assert again["cached"] is True
    # The answer of a job that ran: the first, or a repeat sent before the first's
    # answer reached the cache that ended after it (the cache keeps the latest).
    ran = [first] + [run_to_end_of(client, job_id) for job_id in again["early"]]
    assert again["response"] in [job["response"] for job in ran]
    assert again["usage"] == first["usage"]
    assert client.get(f"/v1/jobs/{again['id']}").json()["attempts"] == []


def test_aliases_share_the_route_cache_and_other_fields_miss(client: httpx.Client) -> None:
    text = unique("alias")
    run_to_end(client, body(text, model="mock-cached"))

    via_alias = repeat_until_cached(client, body(text, model="mock-cached-alias"))
    other_params = submit(client, body(text, model="mock-cached", temperature=0.5))

    assert via_alias["cached"] is True
    assert other_params["cached"] is False


def test_entries_expire(client: httpx.Client) -> None:
    payload = body(unique("expire"), model="mock-cached")
    run_to_end(client, payload)
    assert repeat_until_cached(client, payload)["cached"] is True

    # A hit leaves the entry's expiry as it was: repeats hit until the TTL has passed.
    wait_until(
        lambda: submit(client, payload)["cached"] is False, timeout=CACHE_TTL + 30, interval=0.5
    )


def test_a_request_can_opt_in_on_an_uncached_route_and_out_on_a_cached_one(
    client: httpx.Client,
) -> None:
    opt_in = body(unique("opt in"), cache=True)
    run_to_end(client, opt_in)
    plain = body(unique("plain"))
    run_to_end(client, plain)
    opt_out = body(unique("opt out"), model="mock-cached", cache=False)
    run_to_end(client, opt_out)

    assert repeat_until_cached(client, opt_in)["cached"] is True
    assert submit(client, plain)["cached"] is False
    assert submit(client, opt_out)["cached"] is False


def test_the_cache_is_scoped_to_the_api_key(
    client: httpx.Client, stack: Stack, make_key: KeyFactory
) -> None:
    payload = body(unique("mine"), model="mock-cached")
    run_to_end(client, payload)

    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {make_key()}"}
    ) as other:
        assert submit(other, payload)["cached"] is False


def test_failures_are_not_cached(client: httpx.Client) -> None:
    payload = body(unique("fail"), model="mock-cached", mock={"fault": "invalid_request"})
    assert run_to_end(client, payload)["status"] == "failed"

    assert submit(client, payload)["cached"] is False
