"""Logs are JSON lines that keep a record's extra fields."""

from __future__ import annotations

import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from relayq.config.settings import Settings
from relayq.observability.logs import JsonFormatter, configure_logging
from relayq.queueing.broker import (
    REQUEST_ID_HEADER,
    REQUEST_IDS_HEADER,
    RUN_JOB_TASK,
    RUN_MANY_TASK,
    Enqueuer,
    JobDetails,
)
from tests.conftest import key_factory
from tests.jobs import body, submit, wait_for_status
from tests.services import free_port, running_valkey
from tests.stack import Stack, wait_until


def test_a_record_is_one_json_object_with_its_extras() -> None:
    record = logging.makeLogRecord(
        {
            "name": "relayq.test",
            "levelname": "WARNING",
            "msg": "job %s late",
            "args": ("job_1",),
            "job_id": "job_1",
        }
    )

    line = JsonFormatter().format(record)

    entry = json.loads(line)
    assert "\n" not in line
    assert entry["message"] == "job job_1 late"
    assert entry["level"] == "warning"
    assert entry["logger"] == "relayq.test"
    assert entry["job_id"] == "job_1"
    assert entry["ts"].endswith("Z")


def _lines(path: Path) -> list[dict[str, Any]]:
    """The log's JSON lines; a last line still being written (no newline yet) is left out."""
    entries = []
    for line in path.read_text().splitlines(keepends=True):
        if line.startswith("{") and line.endswith("\n"):
            entries.append(json.loads(line))
    return entries


def test_a_job_that_ends_is_one_line_that_tells_its_outcome(
    stack: Stack, client: httpx.Client
) -> None:
    """One relayq.jobs line per job, a failed one shown as failed with its error code;
    Celery's per-message lines (which traced a failed job's task as a success) are off."""
    failed = submit(client, body(model="mock-faulty", mock={"fault": "invalid_request"}))
    done = submit(client, body())
    wait_for_status(client, failed["id"], {"failed"}, timeout=20)
    wait_for_status(client, done["id"], {"succeeded"}, timeout=20)
    log = stack.logs / "worker-0.log"

    def ended(job_id: str) -> list[dict[str, Any]]:
        return [e for e in _lines(log) if e["logger"] == "relayq.jobs" and e["job_id"] == job_id]

    wait_until(lambda: ended(failed["id"]) and ended(done["id"]), timeout=10)
    [fail_line] = ended(failed["id"])
    [done_line] = ended(done["id"])
    assert fail_line["status"] == "failed"
    assert fail_line["error_code"] == "invalid_request"
    assert done_line["status"] == "succeeded"
    assert done_line["completion_tokens"] > 0
    assert done_line["attempts"] == 1
    traced = [
        e for e in _lines(log) if e["logger"] in ("celery.app.trace", "celery.worker.strategy")
    ]
    assert traced == []


def test_per_request_lines_are_kept_only_at_debug() -> None:
    """httpx's line per upstream request and Celery's per message are off at INFO (the
    job's own line tells more), on at DEBUG."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    chatty = [logging.getLogger(name) for name in ("httpx", "celery.app.trace")]
    levels = [logger.level for logger in chatty]
    try:
        configure_logging("INFO")
        assert not any(logger.isEnabledFor(logging.INFO) for logger in chatty)
        assert logging.getLogger("relayq.jobs").isEnabledFor(logging.INFO)
        for logger in chatty:
            logger.setLevel(logging.NOTSET)
        configure_logging("DEBUG")
        assert all(logger.isEnabledFor(logging.DEBUG) for logger in chatty)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        for logger, level in zip(chatty, levels, strict=True):
            logger.setLevel(level)


def _records(path: Path, logger: str) -> list[dict[str, Any]]:
    return [e for e in _lines(path) if e.get("logger") == logger]


def test_a_request_id_is_answered_and_follows_its_job_to_the_worker(
    stack: Stack, client: httpx.Client
) -> None:
    """The caller's X-Request-Id comes back in x-request-id, is on the request's access
    line and on the worker's line for the job that request made."""
    given = f"trace-{uuid.uuid4().hex}"
    response = client.post("/v1/jobs", json=body(), headers={"X-Request-Id": given})
    assert response.status_code == 202, response.text
    assert response.headers["x-request-id"] == given
    job = wait_for_status(client, response.json()["id"], {"succeeded"}, timeout=20)

    def logged() -> bool:
        return any(
            e["job_id"] == job["id"] for e in _records(stack.logs / "worker-0.log", "relayq.jobs")
        )

    wait_until(logged, timeout=10)
    [line] = [
        e for e in _records(stack.logs / "worker-0.log", "relayq.jobs") if e["job_id"] == job["id"]
    ]
    assert line["request_id"] == given
    assert (line["model"], line["provider"], line["deployment"]) == ("mock", "mock", "mock|mock")
    assert line["queue_wait_ms"] >= 0
    assert line["age_ms"] >= line["call_ms"] > 0
    [access] = [
        e for e in _records(stack.logs / "api.log", "relayq.access") if e.get("request_id") == given
    ]
    assert (access["method"], access["route"], access["status"]) == ("POST", "/v1/jobs", 202)
    assert access["key_id"].startswith("key_")
    assert access["duration_ms"] >= access["first_byte_ms"] > 0


def test_an_unusable_request_id_is_replaced_by_a_new_one(client: httpx.Client) -> None:
    response = client.get("/v1/jobs", headers={"X-Request-Id": "no spaces; or semicolons"})
    assert response.status_code == 200
    assert response.headers["x-request-id"].startswith("req_")


def test_a_sync_calls_request_id_reaches_its_workers_line(
    stack: Stack, client: httpx.Client
) -> None:
    """A sync call's job goes to its worker on the sync lane, in its message: the id with it."""
    raw = client.post("/v1/chat/completions", json=body())
    assert raw.status_code == 200, raw.text
    request_id, job_id = raw.headers["x-request-id"], raw.headers["x-relayq-job-id"]
    assert request_id.startswith("req_")

    def line() -> list[dict[str, Any]]:
        return [
            e for e in _records(stack.logs / "worker-0.log", "relayq.jobs") if e["job_id"] == job_id
        ]

    wait_until(line, timeout=10)
    assert line()[0]["request_id"] == request_id


def test_jobs_submitted_together_keep_each_its_own_request_id(
    stack: Stack, client: httpx.Client
) -> None:
    """Jobs of one intake tick travel in one envelope: each keeps its request's id."""
    given = [f"many-{i}-{uuid.uuid4().hex[:8]}" for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        jobs = list(
            pool.map(
                lambda rid: submit(client, body(f"together {rid}"), **{"X-Request-Id": rid}),
                given,
            )
        )
    ids = {job["id"]: rid for job, rid in zip(jobs, given, strict=True)}

    def lines() -> dict[str, str | None]:
        found = _records(stack.logs / "worker-0.log", "relayq.jobs")
        return {e["job_id"]: e.get("request_id") for e in found if e["job_id"] in ids}

    wait_until(lambda: len(lines()) == len(ids), timeout=30)
    assert lines() == ids


def test_an_envelopes_headers_carry_its_jobs_request_ids(redis_server: str) -> None:
    """On the wire (the broker's list): one job's message names its request id; an
    envelope maps each job it carries to its own, leaving out those without one. What
    monitors show of the arguments names each job, its model and key, never a prompt."""
    settings = Settings(redis_url=f"{redis_server}/13")
    broker = redis.Redis.from_url(settings.redis_url)
    broker.flushdb()
    enqueuer = Enqueuer(settings=settings)
    try:
        enqueuer.send_many(
            [("job_a", "mock", 5)],
            details={"job_a": JobDetails(request_id="req_a", model="mock", key_id="key_a")},
        )
        direct = {
            "job": {"id": "job_e", "model": "mock", "key_id": "key_e", "request": {"secret": 1}}
        }
        enqueuer.send_many(
            [("job_b", "mock", 5, None), ("job_c", "mock", 5, None), ("job_e", "mock", 5, direct)],
            details={"job_b": JobDetails(request_id="req_b"), "job_c": JobDetails(model="m")},
        )
        queue = settings.queue_for("mock")
        raw = [json.loads(m) for key in broker.keys(f"{queue}*") for m in broker.lrange(key, 0, -1)]
    finally:
        enqueuer.close()
        broker.flushdb()
        broker.close()
    headers = {m["headers"]["task"]: m["headers"] for m in raw}
    assert headers[RUN_JOB_TASK][REQUEST_ID_HEADER] == "req_a"
    assert headers[RUN_JOB_TASK]["argsrepr"] == "job_a model=mock key=key_a"
    assert headers[RUN_MANY_TASK][REQUEST_IDS_HEADER] == {"job_b": "req_b"}
    assert headers[RUN_MANY_TASK]["argsrepr"] == (
        "3 jobs: job_b, job_c model=m, job_e model=mock key=key_e"
    )


_CELERY_PRINTS = frozenset(["worker: Warm shutdown (MainProcess)"])
"""What Celery's signal handler prints to stdout itself, past any logging."""


@pytest.mark.slow(seconds=16)  # a stack and Flower of their own
@pytest.mark.usefixtures("sqlite_only")
def test_every_process_logs_json_and_never_a_secret_or_a_prompt(
    private_database_url: str, logs: Path
) -> None:
    """The API (uvicorn's own lines included), the worker (Celery's) and Flower write
    JSON lines only, from start to stop; no line holds a key or a prompt."""
    secret_prompt = f"my private words {uuid.uuid4().hex}"
    key = key_factory(private_database_url)()
    flower_port = free_port()
    with (
        running_valkey() as redis_url,
        Stack(database_url=private_database_url, redis_url=redis_url, logs=logs) as stack,
    ):
        stack.start_api()
        stack.start_worker()
        flower = stack.spawn(
            "flower",
            [
                "-m",
                "celery",
                "-A",
                "relayq.celery_app",
                "flower",
                f"--port={flower_port}",
                "--address=127.0.0.1",
            ],
        )
        try:
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=stack.base_url, headers=headers, timeout=10) as client:
                job = submit(client, body(secret_prompt))
                failed = submit(client, body(secret_prompt, mock={"fault": "invalid_request"}))
                wait_for_status(client, job["id"], {"succeeded"}, timeout=20)
                wait_for_status(client, failed["id"], {"failed"}, timeout=20)
                sync = client.post("/v1/chat/completions", json=body(secret_prompt))
                assert sync.status_code == 200, sync.text
                assert client.get("/v1/nope").status_code == 404

            def flower_answers() -> bool:
                try:
                    return (
                        httpx.get(f"http://127.0.0.1:{flower_port}/healthcheck").status_code == 200
                    )
                except httpx.HTTPError:
                    return False

            wait_until(flower_answers, timeout=30)
        finally:
            flower.terminate()
            flower.wait(timeout=15)
    files = sorted(logs.glob("*.log"))
    assert {f.name for f in files} >= {"api.log", "worker-0.log", "flower.log"}
    plain = []
    for path in files:
        text = path.read_text()
        assert text.strip(), f"{path.name} is empty"
        for number, line in enumerate(text.splitlines(), 1):
            if line.startswith("{"):
                assert isinstance(json.loads(line), dict), f"{path.name}:{number}: {line}"
            elif line.strip() and line not in _CELERY_PRINTS:
                plain.append(f"{path.name}:{number}: {line}")
        assert secret_prompt not in text, path.name
        assert key not in text, path.name
    assert plain == []
    loggers = {e["logger"] for path in files for e in _lines(path)}
    assert {"uvicorn.error", "relayq.access", "relayq.jobs"} <= loggers
    assert any(name.startswith("celery") for name in loggers), loggers
    assert any(name.startswith(("flower", "tornado")) for name in loggers), loggers
