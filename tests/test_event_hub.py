"""The event hub in-process, on a real Redis: many followers, one firehose, SSE bytes out."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis

from api.sse import sse_message
from relayq.events.hub import EventHub, Feed
from relayq.events.log import EventLog, EventType, JobEvent, event_frame, stored_frame
from relayq.redis.keys import RedisKeys
from tests.services import run, running_valkey

_DB = 14
PREFIX = "relayq-hub-test"


@asynccontextmanager
async def hub_and_log(
    redis_server: str,
) -> AsyncIterator[tuple[EventHub, EventLog, aioredis.Redis]]:
    url = f"{redis_server}/{_DB}"
    redis = aioredis.Redis.from_url(url)
    await redis.flushdb()
    log = EventLog(redis, key_prefix=PREFIX, max_events=100, retention_seconds=60)
    hub = EventHub(url, key_prefix=PREFIX)
    try:
        yield hub, log, redis
    finally:
        await hub.aclose()
        await redis.aclose()


async def emit_deltas(log: EventLog, events: list[JobEvent]) -> None:
    """Queue ``events`` as a worker's delta publisher does, in a step of their own."""
    await log.queue_deltas(events)


def messages(raw: bytes) -> list[dict[str, Any]]:
    """SSE messages as {"id", "event", "payload"}, checking each is the three expected lines."""
    text = raw.decode()
    assert text.endswith("\n\n")
    parsed = []
    for block in text[:-2].split("\n\n"):
        id_line, event_line, data_line = block.split("\n")
        assert id_line.startswith("id: ")
        assert event_line.startswith("event: ")
        assert data_line.startswith("data: ")
        payload = json.loads(data_line[len("data: ") :])
        assert list(payload) == ["id", "type", "job_id", "timestamp", "data"]
        assert payload["id"] == id_line[len("id: ") :]
        assert payload["type"] == event_line[len("event: ") :]
        parsed.append({"id": payload["id"], "event": payload["type"], "payload": payload})
    return parsed


async def read_to_the_end(feed: Feed) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while not feed.ended:
        raw = await feed.next(quiet=10)
        assert raw is not None, "no event for 10 s"
        seen += messages(raw)
    return seen


def test_each_follower_gets_its_jobs_events_live_with_its_streams_ids(
    redis_server: str,
) -> None:
    """Twenty jobs followed at once: each follower gets its own job's events, in order,
    each with the id its job's stream gave it (what Last-Event-ID resumes from), and
    replayed events are not given twice."""

    async def scenario() -> None:
        async with hub_and_log(redis_server) as (hub, log, redis):
            jobs = [f"job_{n}" for n in range(20)]
            for job in jobs:  # one stored before anyone follows: replayed, then live
                await log.emit(JobEvent(job_id=job, key_id="k", type=EventType.QUEUED))

            async def follow(job: str) -> list[dict[str, Any]]:
                async with hub.follow(job_id=job) as feed:
                    return await read_to_the_end(feed)

            followers = [asyncio.create_task(follow(job)) for job in jobs]
            await asyncio.sleep(0.2)
            for step in range(3):
                await asyncio.gather(
                    *(
                        emit_deltas(
                            log,
                            [
                                JobEvent(
                                    job_id=job, key_id="k", type=EventType.DELTA, data={"n": step}
                                )
                            ],
                        )
                        for job in jobs
                    )
                )
            for job in jobs:
                await log.emit(JobEvent(job_id=job, key_id="k", type=EventType.SUCCEEDED))
            results = await asyncio.wait_for(asyncio.gather(*followers), timeout=10)
            for job, events in zip(jobs, results, strict=True):
                stored: list[Any] = await redis.xrange(RedisKeys(PREFIX).events(job)) or []
                assert [e["id"] for e in events] == [entry_id.decode() for entry_id, _ in stored]
                assert [e["event"] for e in events] == [
                    "queued",
                    "delta",
                    "delta",
                    "delta",
                    "succeeded",
                ]
                assert [e["payload"]["data"].get("n") for e in events[1:4]] == [0, 1, 2]
                assert {e["payload"]["job_id"] for e in events} == {job}

    run(scenario())


def test_what_came_meanwhile_is_taken_as_one_write_up_to_the_terminal_event(
    redis_server: str,
) -> None:
    """A follower busy elsewhere takes everything that came meanwhile in one piece; the
    terminal event ends it, and nothing after it is given."""

    async def scenario() -> None:
        async with (
            hub_and_log(redis_server) as (hub, log, _),
            hub.follow(job_id="busy") as feed,
            hub.follow(job_id="busy") as watcher,
        ):
            assert await feed.next(quiet=0.05) is None  # nothing yet: time for a heartbeat
            for n in range(5):
                await log.emit(
                    JobEvent(job_id="busy", key_id="k", type=EventType.DELTA, data={"n": n})
                )
            await log.emit(JobEvent(job_id="busy", key_id="k", type=EventType.FAILED))
            await log.emit(JobEvent(job_id="busy", key_id="k", type=EventType.DELTA))
            # Every follower of a job is handed each event at once: once the watcher
            # has the terminal event, the busy follower has everything up to it waiting.
            await asyncio.wait_for(read_to_the_end(watcher), timeout=10)

            taken = messages(await feed.next(quiet=1) or b"")

            assert [e["event"] for e in taken] == ["delta"] * 5 + ["failed"]
            assert [e["payload"]["data"].get("n") for e in taken[:5]] == list(range(5))
            assert feed.ended

    run(scenario())


def test_resuming_after_an_id_gives_only_what_follows_it(redis_server: str) -> None:
    async def scenario() -> None:
        async with hub_and_log(redis_server) as (hub, log, _):
            stored = [
                await log.emit(JobEvent(job_id="j", key_id="k", type=kind))
                for kind in (EventType.QUEUED, EventType.STARTED, EventType.SUCCEEDED)
            ]
            first = stored[0].id
            assert first is not None
            async with hub.follow(job_id="j", position=first) as feed:
                events = await read_to_the_end(feed)

            assert [e["id"] for e in events] == [stored[1].id, stored[2].id]

    run(scenario())


def test_a_follower_resuming_mid_job_gets_the_rest_of_the_replay_then_live_events(
    redis_server: str,
) -> None:
    async def scenario() -> None:
        async with hub_and_log(redis_server) as (hub, log, _):
            queued = await log.emit(JobEvent(job_id="j", key_id="k", type=EventType.QUEUED))
            started = await log.emit(JobEvent(job_id="j", key_id="k", type=EventType.STARTED))
            assert queued.id is not None
            async with hub.follow(job_id="j", position=queued.id) as feed:
                replayed = messages(await feed.next(quiet=5) or b"")
                assert [e["id"] for e in replayed] == [started.id]
                assert not feed.ended
                live = [
                    await log.emit(JobEvent(job_id="j", key_id="k", type=kind, data={"n": 1}))
                    for kind in (EventType.DELTA, EventType.SUCCEEDED)
                ]
                rest = await asyncio.wait_for(read_to_the_end(feed), timeout=10)
            assert [e["id"] for e in rest] == [e.id for e in live]
            assert [e["event"] for e in rest] == ["delta", "succeeded"]

    run(scenario())


def test_a_follower_that_starts_after_the_job_ended_gets_it_all_and_ends(
    redis_server: str,
) -> None:
    async def scenario() -> None:
        async with hub_and_log(redis_server) as (hub, log, _):
            stored = [
                await log.emit(JobEvent(job_id="done", key_id="k", type=kind))
                for kind in (EventType.QUEUED, EventType.STARTED, EventType.FAILED)
            ]
            async with hub.follow(job_id="done") as feed:
                everything = messages(await feed.next(quiet=5) or b"")
                assert feed.ended
            assert [e["id"] for e in everything] == [e.id for e in stored]
            assert [e["event"] for e in everything] == ["queued", "started", "failed"]

    run(scenario())


DATA: list[dict[str, Any]] = [
    {},
    {"text": "line one\nline two\r\n", "chunks": [{"choices": [{"delta": {"content": "é"}}]}]},
    {"text": '中文 ✓ 🎉 \u2028 \x00 "quoted" \\ back'},
    {"usage": {"prompt_tokens": 3}, "cost": 0.1 + 0.2, "big": 2**70, "neg": -0.0, "tiny": 1e-300},
    {"error": None, "cached": True, "nested": [[[]], {"a": [1, 2.5, "x"]}]},
]


@pytest.mark.parametrize("data", DATA)
def test_a_stored_events_message_is_what_decoding_and_encoding_it_gave(
    redis_server: str, data: dict[str, Any]
) -> None:
    """The hub splices stored bytes instead of decoding and encoding JSON; the message
    must be the same bytes the old way gave (SSE id, event, one data line of JSON)."""

    async def scenario() -> None:
        async with hub_and_log(redis_server) as (_, log, redis):
            event = await log.emit(
                JobEvent(job_id="job_ü", key_id="k", type=EventType.SUCCEEDED, data=data)
            )
            entries: list[Any] = await redis.xrange(RedisKeys(PREFIX).events("job_ü")) or []
            [(entry_id, fields)] = entries

            frame = stored_frame(entry_id, fields, job_json=json.dumps("job_ü").encode())

            old_way = sse_message(
                id=event.id,
                event="succeeded",
                data={
                    "id": event.id,
                    "type": "succeeded",
                    "job_id": "job_ü",
                    "timestamp": float(fields[b"ts"]),
                    "data": json.loads(fields[b"data"]),
                },
            ).encode()
            assert frame.message == old_way
            assert frame.terminal
            assert event_frame(event) == old_way

    run(scenario())


def test_a_rebuilt_event_without_an_id_has_no_id_line() -> None:
    event = JobEvent(job_id="j", key_id="k", type=EventType.EXPIRED, timestamp=math.pi)

    assert (
        event_frame(event)
        == sse_message(
            event="expired",
            data={"id": None, "type": "expired", "job_id": "j", "timestamp": math.pi, "data": {}},
        ).encode()
    )


def _delta(job_id: str, text: str) -> JobEvent:
    return JobEvent(job_id=job_id, key_id="k", type=EventType.DELTA, data={"text": text})


def test_the_deltas_of_many_jobs_in_one_tick_go_in_one_script_call() -> None:
    """Each job's stream and the firehose get every delta, with the same entry id, from
    one command for the tick's deltas, not one command each.

    On a server of its own: the count is the server's, and the shared stack's
    processes run scripts of their own on the session's server meanwhile.
    """

    async def scenario(own_server: str) -> None:
        async with hub_and_log(own_server) as (_, log, redis):
            monitor_before = int(
                (await redis.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
            )
            jobs = [f"job_{n}" for n in range(50)]
            await asyncio.gather(*(emit_deltas(log, [_delta(job, job)]) for job in jobs))
            stats = await redis.info("commandstats")
            calls = int(stats.get("cmdstat_evalsha", {}).get("calls", 0)) - monitor_before

            firehose: list[Any] = await redis.xrange(f"{PREFIX}:event-firehose") or []
            by_job = {fields[b"job"].decode(): fields for _, fields in firehose}
            for job in jobs:
                stored: list[Any] = await redis.xrange(RedisKeys(PREFIX).events(job)) or []
                [(entry_id, fields)] = stored
                assert json.loads(fields[b"data"]) == {"text": job}
                assert by_job[job][b"id"] == entry_id
            assert len(firehose) == 50
            # One script call (its first run may also load it: EVALSHA, then EVAL).
            assert calls == 1

    with running_valkey() as own_server:
        run(scenario(own_server))


def test_a_lifecycle_event_between_deltas_keeps_its_place(redis_server: str) -> None:
    """Deltas gather for the next pipeline, but an event emitted meanwhile closes the
    round: a job's ``started`` comes before its first delta in its stream, even when
    another job's delta opened the round before it."""

    async def scenario() -> list[str]:
        async with hub_and_log(redis_server) as (_, log, redis):
            busy = asyncio.ensure_future(log.emit(_delta("warm", "x")))  # a pipeline in flight
            await asyncio.sleep(0)
            steps = [
                asyncio.ensure_future(emit_deltas(log, [_delta("job_a", "a")])),
                asyncio.ensure_future(
                    log.emit(JobEvent(job_id="job_b", key_id="k", type=EventType.STARTED))
                ),
                asyncio.ensure_future(emit_deltas(log, [_delta("job_b", "b")])),
            ]
            await asyncio.gather(busy, *steps)
            entries: list[Any] = await redis.xrange(RedisKeys(PREFIX).events("job_b")) or []
            return [fields[b"type"].decode() for _, fields in entries]

    assert run(scenario()) == ["started", "delta"]
