"""A job's events over SSE with a real client: live, replayed, resumed, expired."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import redis
from httpx_sse import ServerSentEvent, connect_sse

from relayq.redis.keys import RedisKeys
from tests.jobs import body, submit, wait_for_status
from tests.stack import Stack

SLOW = {"latency_ms": 300, "tokens": 24, "stream_interval_ms": 15}


def read_events(client: httpx.Client, job_id: str, **headers: str) -> list[ServerSentEvent]:
    with connect_sse(client, "GET", f"/v1/jobs/{job_id}/events", headers=headers) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return list(source.iter_sse())


def payloads(events: list[ServerSentEvent]) -> list[dict[str, Any]]:
    return [json.loads(event.data) for event in events]


def test_live_follow_sees_every_event_in_order_then_ends(client: httpx.Client) -> None:
    job = submit(client, body("follow me", mock=SLOW, stream=True))

    events = read_events(client, job["id"])

    kinds = [event.event for event in events]
    assert kinds[0] == "queued"
    assert kinds[1] == "started"
    assert kinds[-1] == "succeeded"
    assert set(kinds[2:-1]) == {"delta"}
    ids = [tuple(map(int, event.id.split("-"))) for event in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    text = "".join(p["data"]["text"] for p in payloads(events) if p["type"] == "delta")
    final = client.get(f"/v1/jobs/{job['id']}").json()
    assert text == final["response"]["choices"][0]["message"]["content"]
    assert payloads(events)[-1]["data"]["usage"] == final["usage"]


def test_a_job_not_created_streaming_sends_no_deltas_its_answer_comes_whole(
    client: httpx.Client,
) -> None:
    """Without ``stream: true`` a job's text is not sent as it comes: its followers see
    queued, started and the outcome, whose response holds the whole answer."""
    job = submit(client, body("no stream", mock=SLOW))

    # (httpx_sse reports each heartbeat comment after the first id as an empty message.)
    events = [event for event in read_events(client, job["id"]) if event.data]

    assert [event.event for event in events] == ["queued", "started", "succeeded"]
    final = client.get(f"/v1/jobs/{job['id']}").json()
    outcome = payloads(events)[-1]["data"]
    assert outcome["response"] == final["response"]
    assert final["response"]["choices"][0]["message"]["content"]


def test_a_finished_job_replays_the_same_events_and_closes(client: httpx.Client) -> None:
    job = submit(client, body("replay", mock=SLOW, stream=True))
    live = read_events(client, job["id"])

    replayed = read_events(client, job["id"])

    assert [(e.id, e.event, e.data) for e in replayed] == [(e.id, e.event, e.data) for e in live]


def test_each_message_is_its_id_its_type_and_one_line_of_json(client: httpx.Client) -> None:
    """The wire format byte for byte (docs/api.md): a retry field first, then per event
    ``id:``, ``event:`` and one ``data:`` line whose JSON repeats the id and the type."""
    job = submit(client, body("wire", mock={"tokens": 3}, stream=True))
    wait_for_status(client, job["id"], {"succeeded"})

    raw = client.get(f"/v1/jobs/{job['id']}/events").text

    assert raw.startswith("retry: 3000\nid: ")
    assert raw.endswith("\n\n")
    blocks = raw.removeprefix("retry: 3000\n")[:-2].split("\n\n")
    for block in blocks:
        id_line, event_line, data_line = block.split("\n")
        payload = json.loads(data_line.removeprefix("data: "))
        assert id_line == f"id: {payload['id']}"
        assert event_line == f"event: {payload['type']}"
        assert data_line == "data: " + json.dumps(payload, separators=(",", ":"))
        assert list(payload) == ["id", "type", "job_id", "timestamp", "data"]
        assert payload["job_id"] == job["id"]
    assert [json.loads(b.split("\n")[2][6:])["type"] for b in blocks][-1] == "succeeded"


def test_resume_from_last_event_id_without_loss_or_duplicates(client: httpx.Client) -> None:
    job = submit(client, body("resume", mock=SLOW, stream=True))
    wait_for_status(client, job["id"], {"succeeded"})
    everything = read_events(client, job["id"])
    middle = len(everything) // 2

    resumed = read_events(client, job["id"], **{"Last-Event-ID": everything[middle].id})
    by_query = client.get(f"/v1/jobs/{job['id']}/events", params={"after": everything[2].id})

    assert [e.id for e in resumed] == [e.id for e in everything[middle + 1 :]]
    assert by_query.text.count("\nevent: ") + by_query.text.startswith("event: ") >= 1
    assert f"id: {everything[2].id}\n" not in by_query.text
    assert f"id: {everything[3].id}\n" in by_query.text


def test_resuming_mid_stream_while_the_job_runs(client: httpx.Client) -> None:
    job = submit(
        client, body("mid", mock={**SLOW, "stream_interval_ms": 40, "tokens": 30}, stream=True)
    )
    first: list[ServerSentEvent] = []
    with connect_sse(client, "GET", f"/v1/jobs/{job['id']}/events") as source:
        for event in source.iter_sse():
            first.append(event)
            if sum(e.event == "delta" for e in first) == 2:
                break

    rest = read_events(client, job["id"], **{"Last-Event-ID": first[-1].id})

    joined = first + rest
    assert joined[-1].event == "succeeded"
    assert [e.id for e in joined] == [e.id for e in read_events(client, job["id"])]


def test_quiet_streams_carry_heartbeat_comments(client: httpx.Client) -> None:
    job = submit(client, body("slow", mock={"latency_ms": 1600}))

    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        lines = list(response.iter_lines())

    assert ": keep-alive" in lines
    assert lines[0] == "retry: 3000"


def test_expired_events_replay_the_outcome_from_sql(client: httpx.Client, stack: Stack) -> None:
    job = submit(client, body("expire"))
    done = wait_for_status(client, job["id"], {"succeeded"})
    store = redis.Redis.from_url(stack.env["RELAYQ_REDIS_URL"])
    store.delete(RedisKeys("relayq").events(job["id"]))
    store.close()

    events = read_events(client, job["id"])

    [only] = events
    assert only.event == "succeeded"
    assert json.loads(only.data)["data"]["response"] == done["response"]


def test_only_the_owner_may_read_events(stack: Stack, client: httpx.Client, make_key: Any) -> None:
    job = submit(client, body("mine"))
    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {make_key()}"}
    ) as other:
        response = other.get(f"/v1/jobs/{job['id']}/events")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "job_not_found"


@pytest.mark.parametrize("bad", ["abc", "12-x", "-1"])
def test_a_malformed_event_id_is_a_400(client: httpx.Client, bad: str) -> None:
    job = submit(client, body("x"))

    response = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": bad})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "Last-Event-ID"


def test_two_hundred_followers_of_one_job_all_see_every_event(
    client: httpx.Client, stack: Stack
) -> None:
    """Hundreds of SSE clients on one API process, served by one Redis reader."""
    job = submit(
        client,
        body(
            "crowd",
            mock={"latency_ms": 2500, "tokens": 20, "stream_interval_ms": 20},
            stream=True,
        ),
    )
    headers = dict(client.headers)

    async def follow(http: httpx.AsyncClient) -> list[str]:
        async with http.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
            assert response.status_code == 200
            return [line async for line in response.aiter_lines() if line.startswith("id: ")]

    async def crowd() -> list[list[str]]:
        limits = httpx.Limits(max_connections=250)
        async with httpx.AsyncClient(
            base_url=stack.base_url, headers=headers, limits=limits, timeout=30
        ) as http:
            return await asyncio.gather(*(follow(http) for _ in range(200)))

    seen = asyncio.run(crowd())

    everything = [f"id: {e.id}" for e in read_events(client, job["id"])]
    assert len(seen) == 200
    assert all(ids == everything for ids in seen)
    assert len(everything) > 3


def test_a_follower_outlasts_a_long_quiet_spell(client: httpx.Client) -> None:
    # Longer than the Redis client's 5 s read timeout: the hub's blocking read
    # must not take a quiet spell for a lost Redis and drop its followers.
    job = submit(
        client, body("take your time", mock={"latency_ms": 7000, "tokens": 3}, stream=True)
    )

    events = read_events(client, job["id"])

    kinds = [event.event for event in events]
    assert kinds[:2] == ["queued", "started"]
    assert kinds[-1] == "succeeded"
    assert kinds.count("delta") >= 1
