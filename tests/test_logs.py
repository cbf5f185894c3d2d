"""Logs are JSON lines that keep a record's extra fields."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx

from relayq.logs import JsonFormatter, configure_logging
from tests.jobs import body, submit, wait_for_status
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
    entries = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
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
